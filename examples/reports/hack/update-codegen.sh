#!/usr/bin/env bash
# Regenerates the deepcopy functions and the typed clientset, listers and
# informers of the example PolicyReport API with kube_codegen.sh, the way a
# CRD user's project does.
set -euo pipefail

reports=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=$(cd "$reports/../.." && pwd)
cd "$root"
module=$(go list -m)
boilerplate="$root/hack/boilerplate.go.txt"

# The same generators and cache as hack/update-codegen.sh.
# shellcheck source=hack/lib/codegen.sh
source "$root/hack/lib/codegen.sh"

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
