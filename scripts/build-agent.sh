#!/usr/bin/env bash
# Builds the statically linked initrd-agent (gnu target, crt-static) and prints its path.
# With an explicit --target, RUSTFLAGS apply to the agent only, not to build scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" cargo build --release -q -p initrd-agent \
  --target x86_64-unknown-linux-gnu
bin=$PWD/target/x86_64-unknown-linux-gnu/release/initrd-agent
out=$(ldd "$bin" 2>&1 || true)
case "$out" in
  *"not a dynamic executable"*) ;;
  *) echo "build-agent.sh: $bin is not static: $out" >&2; exit 1 ;;
esac
echo "$bin"
