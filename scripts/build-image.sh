#!/usr/bin/env bash
# Builds the kvip container image with podman, without a
# registry: a static kvip (release, x86_64-unknown-linux-musl) alone in a
# FROM scratch image (deploy/Containerfile).
#
#   scripts/build-image.sh [TAG]        TAG defaults to localhost/kvip:VERSION
#
# KVIP_IMAGE_BINARY   use this static kvip instead of building one
# PODMAN              the build command and its global options
#                     (default: podman)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
tag=${1:-localhost/kvip:$version}
read -r -a podman <<<"${PODMAN:-podman}"
command -v "${podman[0]}" >/dev/null 2>&1 || {
  echo "${podman[0]} is missing: run scripts/install-deps.sh" >&2
  exit 1
}

binary=${KVIP_IMAGE_BINARY:-}
if [ -z "$binary" ]; then
  # The target directory daemon/tests/static_binary.rs builds in, so the
  # test and this script share one release build.
  target_dir=${CARGO_TARGET_DIR:-$root/target}/static-image
  rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
  CARGO_TARGET_DIR=$target_dir cargo build --manifest-path "$root/Cargo.toml" \
    --release --locked --target x86_64-unknown-linux-musl -p kvip
  binary=$target_dir/x86_64-unknown-linux-musl/release/kvip
fi
[ -x "$binary" ] || { echo "$binary is not an executable" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/kvip"
# No network and no pulls: FROM scratch needs neither.
"${podman[@]}" build --network=none --pull=never \
  --build-arg "VERSION=$version" -f "$root/deploy/Containerfile" -t "$tag" "$context"
echo "built $tag"
