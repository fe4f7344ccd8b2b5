#!/usr/bin/env bash
# Fails when the manifests under config/ are not what charts/annex renders.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/hack/update-manifests.sh" "$tmp"
status=0
for f in "$tmp"/*.yaml; do
  if ! diff -u "$root/config/$(basename "$f")" "$f"; then
    status=1
  fi
done
if [[ $status -ne 0 ]]; then
  echo "config/ is stale: run 'make manifests'" >&2
fi
exit $status
