#!/usr/bin/env bash
# Runs CI (.ci/run) as a new machine would: in a fresh clone of the committed
# HEAD, with a throwaway HOME, Go module cache, Go build cache and tools
# cache, so that nothing can come from a warm cache. Only what the system
# itself provides is shared (Go, and the PostgreSQL server binaries that
# hack/install-postgres.sh installs from Debian's packages).
#
# Usage: hack/fresh-check.sh          (about 35 minutes on 2 cores)
#        KEEP=1 hack/fresh-check.sh   keep the throwaway directory afterwards
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d -t annex-fresh-check-XXXXXX)
cleanup() {
  if [[ -n "${KEEP:-}" ]]; then
    echo "fresh-check: kept $work" >&2
  else
    # The module cache is written read-only unless -modcacherw; remove it anyway.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

if [[ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]]; then
  echo "fresh-check: uncommitted changes are not checked: it clones HEAD ($(git -C "$root" rev-parse --short HEAD))" >&2
fi

git clone --quiet --no-local --no-hardlinks "$root" "$work/annex"
mkdir -p "$work/home"

log="$work/fresh-check.log"
echo "fresh-check: CI on a fresh clone of $(git -C "$work/annex" rev-parse --short HEAD) in $work/annex" >&2
echo "fresh-check: empty HOME, GOPATH, GOMODCACHE, GOCACHE and tools cache; log in $log" >&2
start=$SECONDS
status=0
(
  cd "$work/annex"
  env -i \
    PATH="$PATH" \
    HOME="$work/home" \
    USER="${USER:-$(id -un)}" \
    LANG=C.UTF-8 \
    TERM="${TERM:-dumb}" \
    GOPATH="$work/home/go" \
    GOMODCACHE="$work/home/go/pkg/mod" \
    GOCACHE="$work/home/.cache/go-build" \
    GOFLAGS=-modcacherw \
    GOTOOLCHAIN=local \
    bash .ci/run
) 2>&1 | tee "$log" || status=$?
elapsed=$((SECONDS - start))
printf 'fresh-check: %s after %dm%02ds\n' "$([[ $status -eq 0 ]] && echo PASSED || echo FAILED)" $((elapsed / 60)) $((elapsed % 60)) >&2
if [[ $status -ne 0 && -z "${KEEP:-}" ]]; then
  cp "$log" "$root/fresh-check.log" 2>/dev/null && echo "fresh-check: log copied to fresh-check.log" >&2
fi
exit "$status"
