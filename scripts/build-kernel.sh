#!/usr/bin/env bash
# Builds the netboot kernel from Debian's linux-source: `make tinyconfig` + the fragment
# kernel-config/netboot.config. Cached by the hash of the fragment and the source version:
# prints the path of the cached bzImage (target/kernel/<hash>/vmlinuz-netboot). Takes more
# than 10 minutes on 2 cores, so CI and the default tests use Debian's linux-image-cloud-amd64
# with modules instead; set NETBOOT_KERNEL to this kernel to use it in the QEMU tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export DEBIAN_FRONTEND=noninteractive
need=(linux-source build-essential flex bison bc libelf-dev libssl-dev xz-utils)
missing=()
for p in "${need[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; fi
tarball=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -1)
hash=$(cat "$root/kernel-config/netboot.config" <(basename "$tarball") | sha256sum | cut -c1-16)
out=$root/target/kernel/$hash
if [ -f "$out/vmlinuz-netboot" ]; then echo "$out/vmlinuz-netboot"; exit 0; fi
src=$root/target/kernel/src
rm -rf "$src"; mkdir -p "$src" "$out"
tar -xf "$tarball" -C "$src" --strip-components=1
cd "$src"
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$root/kernel-config/netboot.config" >/dev/null
make -s olddefconfig
# Every option of the fragment must have survived (a missing dependency drops it silently).
grep -E '^CONFIG_[A-Z0-9_]+=' "$root/kernel-config/netboot.config" | cut -d' ' -f1 | while read -r opt; do
  grep -qx "$opt" .config || echo "build-kernel.sh: warning: $opt did not make it into .config" >&2
done
make -s -j"$(nproc)" bzImage
cp arch/x86/boot/bzImage "$out/vmlinuz-netboot"
cp .config "$out/config"
echo "$out/vmlinuz-netboot"
