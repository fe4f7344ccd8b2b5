#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager,
# kubectl, etcd and helm) from the Go module proxy, because prebuilt binaries
# cannot be downloaded here. Each tool is built once into a cache directory
# outside the clone, keyed by its version and its module's go.sum, so a fresh
# clone on the same machine reuses it and a changed pin rebuilds only that tool.
#
# Usage: hack/tools/install.sh              build what is missing, print the bin directory
#        hack/tools/install.sh kubectl ...  build only the named tools (kube-apiserver,
#                                           kube-controller-manager, kubectl, etcd, helm)
#        hack/tools/install.sh --print      print the bin directory without building
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${ANNEX_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/annex/tools}

# version MODULE_DIR MODULE prints the version of MODULE required by MODULE_DIR/go.mod.
version() {
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}

key() { # key NAME MODULE_DIR MODULE
  local v sum
  v=$(version "$2" "$3")
  sum=$(cat "$here/$2/go.mod" "$here/$2/go.sum" | sha256sum | cut -c1-10)
  echo "$1-$v-$sum"
}

kube_key=$(key kube kube k8s.io/kubernetes)
etcd_key=$(key etcd etcd go.etcd.io/etcd/server/v3)
helm_key=$(key helm helm helm.sh/helm/v3)
bin="$cache/bin-$(echo "$kube_key $etcd_key $helm_key" | sha256sum | cut -c1-12)"

if [[ "${1:-}" == "--print" ]]; then
  echo "$bin"
  exit 0
fi

log() { echo "hack/tools: $*" >&2; }

# build KEY MODULE_DIR OUT PKG [LDFLAGS] builds PKG of MODULE_DIR into $cache/KEY/OUT
# unless it is there already. It writes to a temporary name first so that an
# interrupted build never leaves a truncated binary behind.
build() {
  local dir="$cache/$1" out="$cache/$1/$3"
  if [[ -x "$out" ]]; then
    return 0
  fi
  mkdir -p "$dir"
  log "building $3 ($1), this takes a few minutes the first time"
  local start=$SECONDS
  (cd "$here/$2" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w ${5:-}" -o "$out.tmp" "$4")
  mv "$out.tmp" "$out"
  log "built $3 in $((SECONDS - start))s"
}

kube_version=$(version kube k8s.io/kubernetes)
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "${kube_version#v}" | cut -d. -f1)"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "${kube_version#v}" | cut -d. -f2)"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"

all=(etcd kube-apiserver kubectl kube-controller-manager helm)
wanted=("$@")
if [[ ${#wanted[@]} -eq 0 ]]; then
  wanted=("${all[@]}")
fi

mkdir -p "$bin"
for tool in "${wanted[@]}"; do
  case "$tool" in
  etcd)
    build "$etcd_key" etcd etcd . "-X go.etcd.io/etcd/api/v3/version.GitSHA=annex-tools"
    path="$etcd_key/etcd"
    ;;
  kube-apiserver | kubectl | kube-controller-manager)
    build "$kube_key" kube "$tool" "k8s.io/kubernetes/cmd/$tool" "$kube_ldflags"
    path="$kube_key/$tool"
    ;;
  helm)
    build "$helm_key" helm helm helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=$(version helm helm.sh/helm/v3)"
    path="$helm_key/helm"
    ;;
  *)
    echo "hack/tools/install.sh: unknown tool $tool (one of: ${all[*]})" >&2
    exit 1
    ;;
  esac
  ln -sfn "$cache/$path" "$bin/$tool"
done
echo "$bin"
