#!/usr/bin/env bash
# Fails when the generated code in the tree differs from what
# hack/update-codegen.sh produces. It generates into a copy of the tree, so
# the working tree is left as it was.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Copy the tracked and untracked (not ignored) files: what a commit would hold.
cd "$root"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$tmp/" 2>/dev/null || true
# The generated files are removed first so that a generator that no longer
# produces a file is noticed too.
find "$tmp/pkg" "$tmp/examples/reports/api" -name 'zz_generated.*.go' -delete
# The client generator looks for its old files in its output directories
# first: they must exist, empty.
rm -rf "$tmp/pkg/generated" "$tmp/examples/reports/generated"
mkdir -p "$tmp/pkg/generated" "$tmp/examples/reports/generated"

(cd "$tmp" && hack/update-codegen.sh >/dev/null)

status=0
for dir in pkg/apis pkg/generated hack/api-rules examples/reports/api examples/reports/generated; do
  if ! diff -Naupr "$root/$dir" "$tmp/$dir"; then
    status=1
  fi
done
if [[ $status -ne 0 ]]; then
  echo "Generated code is stale: run 'make generate' and commit the result." >&2
  exit 1
fi
echo "Generated code is up to date."
