#!/usr/bin/env bash
# Regenerates the deepcopy functions and the typed clientset, listers and
# informers of the example PolicyReport API with kube_codegen.sh, the way a
# CRD user's project does.
set -euo pipefail

reports=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=$(cd "$reports/../.." && pwd)
cd "$root"
module=$(go list -m)
codegen=$(go list -m -f '{{.Dir}}' k8s.io/code-generator)
boilerplate="$root/hack/boilerplate.go.txt"

# The same generator cache as hack/update-codegen.sh: kube_codegen.sh
# installs into GOBIN, so a run after the repository's codegen builds nothing.
export GOBIN="${ANNEX_CODEGEN_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/annex/codegen-$(go list -m -f '{{.Version}}' k8s.io/code-generator)}"
mkdir -p "$GOBIN"

# shellcheck source=/dev/null
source "$codegen/kube_codegen.sh"

kube::codegen::gen_helpers \
  --boilerplate "$boilerplate" \
  "$reports/api"

# gen_client takes the directory above the group directories: the versions
# are found as <input>/<group dir>/<version>, here api/v1 and api/v1alpha1;
# the group's name comes from +groupName in doc.go, not from the directory.
kube::codegen::gen_client \
  --boilerplate "$boilerplate" \
  --with-watch \
  --output-dir "$reports/generated" \
  --output-pkg "$module/examples/reports/generated" \
  --one-input-api api \
  "$reports"
