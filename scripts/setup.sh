#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian machine.
# Idempotent: packages already present are skipped quickly by apt.
set -euo pipefail
need=(e2fsprogs dosfstools mtools gdisk fdisk util-linux attr zstd coreutils)
if [ "${WITH_BENCH:-0}" = 1 ]; then need+=(partclone bmap-tools jq); fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; installing Rust with rustup" >&2
  apt-get install -y -qq --no-install-recommends curl ca-certificates
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
