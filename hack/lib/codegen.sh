#!/usr/bin/env bash
# Shared by hack/update-codegen.sh and examples/reports/hack/update-codegen.sh:
# locates k8s.io/code-generator at the version go.mod pins and points GOBIN at
# a cache of its generators. Source it from the module root.

# `go list -m -f '{{.Dir}}'` prints nothing for a module that is not in the
# module cache yet, and nothing else downloads code-generator (it is a tool,
# never imported): download it first, so that a fresh machine works.
go mod download k8s.io/code-generator
codegen=$(go list -m -f '{{.Dir}}' k8s.io/code-generator)
if [[ -z "$codegen" || ! -f "$codegen/kube_codegen.sh" ]]; then
  echo "hack/lib/codegen.sh: k8s.io/code-generator is not in the module cache after 'go mod download'" >&2
  exit 1
fi

# kube_codegen.sh installs the generators into GOBIN; keep them out of the
# user's GOPATH/bin and reuse them between runs.
export GOBIN="${ANNEX_CODEGEN_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/annex/codegen-$(go list -m -f '{{.Version}}' k8s.io/code-generator)}"
mkdir -p "$GOBIN"

# shellcheck source=/dev/null
source "$codegen/kube_codegen.sh"
