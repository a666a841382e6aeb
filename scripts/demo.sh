#!/usr/bin/env bash
# End-to-end demo on built-in demo data, from a fresh Debian machine:
# installs what it needs, builds, makes a demo master disk (GPT: ESP, ext4 root with a real
# file tree, swap, ext4 data), captures it into a logical-group image, verifies and inspects
# it, clones it onto a blank disk 1.5x larger through a loop device (the last partition and
# its ext4 grow), checks the clone, and exports a sparse VM disk.
#
# Network boot of a QEMU node that clones itself (pxe-builder + initrd-agent) is not built
# yet; see the open issues. Needs root (loop devices).
#
#   scripts/demo.sh [WORKDIR]      (default: /tmp/netboot-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/netboot-demo}
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet -p imgtool
imgtool=$PWD/target/release/imgtool
mkdir -p "$work"
rm -rf "$work/image" "$work/node-disk.img" "$work/vm.raw"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -f "$work/master.img" ]; then
  step "making the demo master disk $work/master.img"
  scripts/make-fixture.sh gpt "$work/master.img"
fi
sgdisk -p "$work/master.img" | tail -5

step "imgtool capture master.img image/"
"$imgtool" capture "$work/master.img" "$work/image"

step "imgtool verify image/"
"$imgtool" verify "$work/image"

step "imgtool inspect image/"
"$imgtool" inspect "$work/image"

step "a blank node disk, 1.5x the master, on a loop device"
truncate -s 384M "$work/node-disk.img"
loop=$(losetup -f --show "$work/node-disk.img")
trap 'partx -d "$loop" 2>/dev/null || true; losetup -d "$loop" 2>/dev/null || true' EXIT
"$imgtool" restore --dry-run "$work/image" "$loop"

step "imgtool restore image/ $loop"
"$imgtool" restore "$work/image" "$loop"
e2fsck -fn "${loop}p2" | tail -1
e2fsck -fn "${loop}p4" | tail -1
partx -d "$loop" 2>/dev/null || true; losetup -d "$loop"; trap - EXIT
sgdisk -v "$work/node-disk.img" | grep -m1 "No problems found\|Problem"

step "restore again: the table now matches and is kept"
"$imgtool" restore --dry-run "$work/image" "$work/node-disk.img" | head -1

step "imgtool export image/ vm.raw --size 1G (sparse, bootable by a VM)"
"$imgtool" export -q "$work/image" "$work/vm.raw" --size 1G | tail -1
ls -ls "$work/vm.raw"

step "done"
echo "master disk:  $work/master.img"
echo "image:        $work/image   (layout, manifest, *.zst)"
echo "cloned disk:  $work/node-disk.img"
echo "VM disk:      $work/vm.raw"
