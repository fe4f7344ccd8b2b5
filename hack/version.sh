#!/usr/bin/env bash
# Prints annex's version information for builds.
#
#   hack/version.sh            the release version
#   hack/version.sh --ldflags  the -X linker flags that stamp pkg/version
#   hack/version.sh --epoch    SOURCE_DATE_EPOCH: the commit's time unless set
#
# The version is what `git describe --tags --match 'v*'` says: the tag on the
# commit (v0.1.0), or the last tag, the commits since and the commit
# (v0.1.0-3-g0123abcd). A clone without tags (CI often clones without them)
# gets the chart's appVersion marked as a development build of the commit
# (v0.1.0-dev-g0123abcd). Each is a valid semantic version and a valid image
# tag. A tree with uncommitted changes adds -dirty. VERSION in the environment
# wins over all of it, and REVISION over the commit (the Dockerfile builds
# without the repository's .git and passes both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

app_version() {
  sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/annex/Chart.yaml
}

in_git() { git rev-parse --git-dir >/dev/null 2>&1; }

commit="${REVISION:-}"
tree_state=""
if [[ -n "$commit" ]]; then
  :
elif in_git; then
  commit=$(git rev-parse HEAD)
  if [[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    tree_state=clean
  else
    tree_state=dirty
  fi
fi

version() {
  if [[ -n "${VERSION:-}" ]]; then
    echo "$VERSION"
    return
  fi
  if in_git && git describe --tags --match 'v*' --dirty >/dev/null 2>&1; then
    git describe --tags --match 'v*' --dirty
    return
  fi
  local v
  v="$(app_version)-dev"
  [[ -n "$commit" ]] && v+="-g${commit:0:12}"
  [[ "$tree_state" == dirty ]] && v+="-dirty"
  echo "$v"
}

epoch() {
  if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
    echo "$SOURCE_DATE_EPOCH"
  elif in_git; then
    git log -1 --format=%ct
  else
    echo 0
  fi
}

rfc3339() {
  date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ
}

case "${1:-}" in
  "") version ;;
  --epoch) epoch ;;
  --ldflags)
    pkg=annex.dev/annex/pkg/version
    echo "-X $pkg.gitVersion=$(version) -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=$tree_state -X $pkg.buildDate=$(rfc3339 "$(epoch)")"
    ;;
  *) echo "usage: $0 [--ldflags|--epoch]" >&2; exit 2 ;;
esac
