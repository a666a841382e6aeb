#!/usr/bin/env bash
# Builds a master disk image file for tests, the demo and benchmarks.
#
#   scripts/make-fixture.sh gpt OUT.img   # ESP (vfat) | ext4 root | swap | ext4 data (last)
#   scripts/make-fixture.sh mbr OUT.img   # primary ext4 | extended { logical ext4, logical ext4 }
#
# Environment:
#   SIZE_MB     disk size (default 256)
#   ROOT_MB     size of the GPT root partition (default 112)
#   TREE_MB     approximate MiB of real OS files copied into the root fs (default 24)
#   GARBAGE_MB  random bytes written to a file that is then deleted, per ext4 fs (default 24)
#   TREE_SRC    directories to copy files from (default: /usr/share/doc /etc /usr/lib/python3)
#   KEEP_RANDOM_MB  random (incompressible) bytes kept in a file of the root fs (default 0;
#               the distribution benchmark uses it for a large compressed image)
#   BLOCK_SIZE  ext4 block size (default: mke2fs's choice, 1 KiB below 512 MiB; the
#               distribution benchmark uses 4096, what a real root file system has)
#
# The root file system holds a real file tree plus every kind of inode a restore must keep:
# symlinks, hard links, xattrs, odd owners and modes, a FIFO, a device node, sparse and empty
# files. Its free blocks hold garbage (a deleted random file) that a capture must not store.
# Needs root (loop devices, mount). Leaves no loop device, partition or mount behind.
set -euo pipefail
export MTOOLS_SKIP_CHECK=1
kind=${1:?usage: make-fixture.sh gpt|mbr OUT.img}
out=${2:?usage: make-fixture.sh gpt|mbr OUT.img}
SIZE_MB=${SIZE_MB:-256}
ROOT_MB=${ROOT_MB:-112}
TREE_MB=${TREE_MB:-24}
GARBAGE_MB=${GARBAGE_MB:-24}
KEEP_RANDOM_MB=${KEEP_RANDOM_MB:-0}
TREE_SRC=${TREE_SRC:-"/usr/share/doc /etc /usr/lib/python3"}

loop="" mnt=$(mktemp -d)
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  if [ -n "$loop" ]; then partx -d "$loop" 2>/dev/null || true; losetup -d "$loop" 2>/dev/null || true; fi
  rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
rm -f "$out.tmp"
truncate -s "${SIZE_MB}M" "$out.tmp"

part() { echo "${loop}p$1"; }
wait_part() { for _ in $(seq 50); do [ -b "$(part "$1")" ] && return 0; sleep 0.1; done; echo "no $(part "$1")" >&2; exit 1; }

populate_root() {
  local dir=$1
  mkdir -p "$dir/usr" "$dir/home/alice" "$dir/srv/shared" "$dir/var/tmp"
  # Real OS files, up to TREE_MB, in a stable order.
  local list
  list=$(mktemp)
  # shellcheck disable=SC2086
  find $TREE_SRC -xdev \( -type f -o -type l \) -printf '%s\t%p\n' 2>/dev/null | sort -t$'\t' -k2 \
    | awk -F'\t' -v budget=$((TREE_MB * 1048576)) '{ used += $1; if (used <= budget) print $2 }' > "$list"
  mkdir -p "$dir/usr/tree"
  tar -cf - --no-recursion -T "$list" 2>/dev/null | tar -xf - -C "$dir/usr/tree"
  rm -f "$list"
  echo "hello from the master" > "$dir/home/alice/note.txt"
  chown -R 1234:5678 "$dir/home/alice"
  chmod 0700 "$dir/home/alice"
  ln -s ../home/alice/note.txt "$dir/srv/note-link"
  ln -s /does/not/exist "$dir/srv/dangling"
  ln "$dir/home/alice/note.txt" "$dir/srv/note-hardlink"
  chmod 1777 "$dir/var/tmp"
  printf '#!/bin/sh\necho hi\n' > "$dir/srv/setuid-tool"; chmod 4755 "$dir/srv/setuid-tool"
  setfattr -n user.role -v master "$dir/srv/shared"
  setfattr -n user.checksum -v 0xdeadbeef "$dir/home/alice/note.txt"
  setfattr -n trusted.fixture -v yes "$dir/srv/setuid-tool"
  mkfifo "$dir/srv/fifo"
  mknod "$dir/srv/null" c 1 3
  truncate -s 50M "$dir/srv/sparse"; printf 'tail' >> "$dir/srv/sparse"
  : > "$dir/srv/empty"
  # A large file whose blocks are in use (not garbage), compressible.
  { yes "netboot fixture line" || true; } | head -c 6M > "$dir/srv/big.log"
}

add_garbage() {
  local dir=$1
  [ "$GARBAGE_MB" -gt 0 ] || return 0
  dd if=/dev/urandom of="$dir/garbage" bs=1M count="$GARBAGE_MB" status=none
  sync
  rm "$dir/garbage"
  sync
}

mkext4() { # dev label uuid
  mkfs.ext4 -q -F -L "$2" -U "$3" -E lazy_itable_init=1 ${BLOCK_SIZE:+-b "$BLOCK_SIZE"} "$1"
}

case "$kind" in
gpt)
  sgdisk -o \
    -n 1:2048:+32M -t 1:ef00 -c 1:ESP \
    -n 2:0:+${ROOT_MB}M -t 2:8300 -c 2:root \
    -n 3:0:+16M -t 3:8200 -c 3:swap \
    -n 4:0:0 -t 4:8300 -c 4:data \
    -U 6A1F6D1E-0A0B-4C5D-8E9F-112233445566 "$out.tmp" >/dev/null
  loop=$(losetup -f --show "$out.tmp")
  partx -a "$loop"
  for n in 1 2 3 4; do wait_part $n; done
  mkfs.vfat -F 16 -n ESP -i 1234ABCD "$(part 1)" >/dev/null
  tmpd=$(mktemp -d)
  mkdir -p "$tmpd/EFI/BOOT" "$tmpd/EFI/netboot"
  head -c 300000 /dev/urandom > "$tmpd/EFI/BOOT/BOOTX64.EFI"
  printf 'set timeout=3\nmenuentry netboot { linux /vmlinuz root=LABEL=root }\n' > "$tmpd/EFI/netboot/grub.cfg"
  cp /etc/os-release "$tmpd/EFI/netboot/os-release"
  mcopy -s -i "$(part 1)" "$tmpd/EFI" ::/
  rm -rf "$tmpd"
  mkext4 "$(part 2)" root 0c7e4f00-1111-4222-8333-444455556666
  mount "$(part 2)" "$mnt"; populate_root "$mnt"; add_garbage "$mnt"
  if [ "$KEEP_RANDOM_MB" -gt 0 ]; then
    dd if=/dev/urandom of="$mnt/srv/random.bin" bs=1M count="$KEEP_RANDOM_MB" status=none
  fi
  umount "$mnt"
  mkswap -L swap0 -U 5a5a5a5a-1234-4321-abcd-0123456789ab "$(part 3)" >/dev/null
  mkext4 "$(part 4)" data d47a0000-aaaa-4bbb-8ccc-dddddddddddd
  mount "$(part 4)" "$mnt"
  mkdir -p "$mnt/projects"; cp -a /etc/os-release /etc/hostname "$mnt/projects/" 2>/dev/null || true
  { yes "data partition" || true; } | head -c 2M > "$mnt/projects/results.csv"
  add_garbage "$mnt"; umount "$mnt"
  ;;
mbr)
  sfdisk -q "$out.tmp" <<SF
label: dos
label-id: 0x5eed1234
start=2048, size=96MiB, type=83, bootable
type=5
size=64MiB, type=83
type=83
SF
  loop=$(losetup -f --show "$out.tmp")
  partx -a "$loop"
  for n in 1 5 6; do wait_part $n; done
  mkext4 "$(part 1)" mbrroot 11111111-2222-4333-8444-555555555555
  mount "$(part 1)" "$mnt"; populate_root "$mnt"; add_garbage "$mnt"; umount "$mnt"
  mkext4 "$(part 5)" logical5 55555555-2222-4333-8444-555555555555
  mount "$(part 5)" "$mnt"; mkdir "$mnt/five"; { yes five || true; } | head -c 1M > "$mnt/five/f"; umount "$mnt"
  mkext4 "$(part 6)" logical6 66666666-2222-4333-8444-555555555555
  mount "$(part 6)" "$mnt"; mkdir "$mnt/six"; { yes six || true; } | head -c 1M > "$mnt/six/f"; ln -s f "$mnt/six/l"; add_garbage "$mnt"; umount "$mnt"
  ;;
*) echo "make-fixture.sh: unknown kind '$kind' (gpt or mbr)" >&2; exit 2 ;;
esac
cleanup; loop=""
trap - EXIT
mv "$out.tmp" "$out"
echo "$out"
