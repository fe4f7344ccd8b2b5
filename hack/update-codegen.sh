#!/usr/bin/env bash
# Regenerates deepcopy, defaulters, conversions, OpenAPI definitions, the
# clientset, listers, informers and apply configurations with kube_codegen.sh
# from the k8s.io/code-generator version pinned in go.mod.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
module=$(go list -m)
boilerplate="$root/hack/boilerplate.go.txt"

# shellcheck source=hack/lib/codegen.sh
source "$root/hack/lib/codegen.sh"

apiextensionsv1=k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1
# Standalone mode serves core/v1 namespaces; server-side apply and kubectl
# explain need their OpenAPI definitions.
corev1=k8s.io/api/core/v1

kube::codegen::gen_helpers \
  --boilerplate "$boilerplate" \
  --extra-peer-dir "$apiextensionsv1" \
  "$root/pkg/apis"

kube::codegen::gen_openapi \
  --boilerplate "$boilerplate" \
  --output-dir "$root/pkg/generated/openapi" \
  --output-pkg "$module/pkg/generated/openapi" \
  --extra-pkgs "$apiextensionsv1" \
  --extra-pkgs "$corev1" \
  --output-model-name-file zz_generated.model_name.go \
  --report-filename "$root/hack/api-rules/violation_exceptions.list" \
  ${UPDATE_API_KNOWN_VIOLATIONS:+--update-report} \
  "$root/pkg/apis"

# Apply configurations need the OpenAPI models to extract managed fields.
schema=$(mktemp)
trap 'rm -f "$schema"' EXIT
go run ./hack/models-schema >"$schema"

externals=""
for t in CustomResourceDefinitionNames CustomResourceDefinitionVersion CustomResourceConversion; do
  externals+="${externals:+,}$apiextensionsv1.$t:k8s.io/apiextensions-apiserver/pkg/client/applyconfiguration/apiextensions/v1"
done

kube::codegen::gen_client \
  --boilerplate "$boilerplate" \
  --with-watch \
  --with-applyconfig \
  --applyconfig-openapi-schema "$schema" \
  --applyconfig-externals "$externals" \
  --output-dir "$root/pkg/generated" \
  --output-pkg "$module/pkg/generated" \
  "$root/pkg/apis"

# The example PolicyReport API generates its own client, as a CRD user would.
"$root/examples/reports/hack/update-codegen.sh"
