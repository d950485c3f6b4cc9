#!/usr/bin/env bash
# Installs what kvip's lab and tests need on a fresh Debian machine: the
# network tools the lab drives and the Rust and Go toolchains' checks.
set -euo pipefail
need=()
for pair in ip:iproute2 nft:nftables arping:iputils-arping tcpdump:tcpdump ndisc6:ndisc6 unshare:util-linux setpriv:util-linux python3:python3; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# Debian's python3 (not a user's pyenv one) carries the parser the tests use.
if ! /usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  need+=(python3-prometheus-client)
fi
# kvip-lab bench writes the labels of its PNG plots with DejaVu Sans.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  need+=(fonts-dejavu-core)
fi
# daemon/tests/static_binary.rs builds kvip for musl as the image does: ring and psm need musl's C compiler.
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
# daemon/tests/image.rs builds the FROM scratch image and runs it with podman,
# under runc (crun refuses this machine's hybrid cgroup layout).
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.89 or newer" >&2; exit 1; }
command -v go >/dev/null || { echo "go is missing: install Go 1.26 or newer (the lab builds Kubernetes with it)" >&2; exit 1; }
# cargo deny (scripts/deny.sh, run by make test), at the version deny.toml is written for.
CARGO_DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "installing cargo-deny $CARGO_DENY_VERSION (a few minutes, once)"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi
