#!/usr/bin/env bash
# Runs helm with the given arguments: helm built from its Go module at the
# version deploy/helm/tool/go.mod pins, once, into a cache the machine keeps
# (KVIP_TOOL_CACHE, default ~/.cache/kvip); a change of go.mod or go.sum
# builds again. `scripts/helm.sh --path` prints the binary's path instead.
set -euo pipefail
tool=$(cd "$(dirname "$0")/../deploy/helm/tool" && pwd)
version=$(awk '$1 == "helm.sh/helm/v4" { print $2 }' "$tool/go.mod")
[ -n "$version" ] || { echo "$tool/go.mod does not require helm.sh/helm/v4" >&2; exit 1; }
fingerprint=$(cat "$tool/go.mod" "$tool/go.sum" | sha256sum | cut -c1-16)
cache=${KVIP_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvip}
out=$cache/helm-$version-$fingerprint
# One build at a time: tests run in parallel and would share the staging folder.
mkdir -p "$cache"
exec 9>"$cache/helm-$version.lock"
flock 9
if [ ! -x "$out/helm" ]; then
  command -v go >/dev/null 2>&1 || { echo "go is missing: helm is built from its Go module (install Go 1.26 or newer)" >&2; exit 1; }
  echo "building helm $version from its Go module (first time only; a few minutes on 2 cores)" >&2
  staging=$out.partial
  rm -rf "$staging"
  mkdir -p "$staging"
  # -mod=readonly: every module's hash comes from the committed go.sum.
  (cd "$tool" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
    -o "$staging/helm" helm.sh/helm/v4/cmd/helm)
  rm -rf "$out"
  mv "$staging" "$out"
fi
flock -u 9
if [ "${1:-}" = "--path" ]; then
  echo "$out/helm"
  exit 0
fi
exec "$out/helm" "$@"
