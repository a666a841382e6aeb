#!/usr/bin/env bash
# XFS: imgtool capture/restore against partclone.xfs | zstd (same level, all cores), on one
# XFS master, in one run. bench/imgtool.sh runs it after its ext4 table; alone:
#
#   bench/xfs.sh            # prints a markdown table; BENCH_DIR (default bench/work) keeps files
#
# Fixture: a GPT disk whose 2 GiB XFS (mkfs.xfs defaults) holds real OS files
# (TREE_SRC, default /usr/share) after 512 MiB of random data were written, synced and
# deleted (garbage in free blocks). Caches are dropped before every timed step and every
# write step ends with sync. Not a test: it asserts nothing. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p imgtool
imgtool=$PWD/target/release/imgtool
work=$(realpath -m "${BENCH_DIR:-bench/work}")
mkdir -p "$work"
master=$work/xfs-master.img
tree=${TREE_SRC:-/usr/share}

. bench/lib.sh
mnt=$(mktemp -d)
cleanup() { umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; detach_all; }
trap cleanup EXIT
blank() { rm -f "$1"; truncate -s "$(size "$master")" "$1"; sgdisk -b "$work/xfs-table.bak" "$master" >/dev/null; sgdisk -l "$work/xfs-table.bak" "$1" >/dev/null; }

if [ ! -f "$master" ]; then
  echo "building the XFS fixture (once) ..." >&2
  truncate -s 2050M "$master.tmp"
  sgdisk -o -n 1:2048:+2048M -t 1:8300 -c 1:root "$master.tmp" >/dev/null
  L=$(attach "$master.tmp")
  mkfs.xfs -q -f -L xfsroot "${L}p1"
  mount -t xfs "${L}p1" "$mnt"
  head -c 512M /dev/urandom > "$mnt/deleted"; sync -f "$mnt"; rm "$mnt/deleted"
  cp -a "$tree" "$mnt/tree"; sync -f "$mnt"
  umount "$mnt"
  mv "$master.tmp" "$master"
fi

M=$(attach -r "$master"); P1=${M}p1
used=$(xfs_db -r -c "sb 0" -c "p blocksize dblocks fdblocks" "$P1" | awk '/^blocksize/{s=$3} /^dblocks/{d=$3} /^fdblocks/{f=$3} END{print (d-f)*s}')
fs_size=$(xfs_db -r -c "sb 0" -c "p blocksize dblocks" "$P1" | awk '/^blocksize/{s=$3} /^dblocks/{d=$3} END{print d*s}')
rm -rf "$work/img-xfs" "$work"/pc-xfs.zst

# --- capture --- (both timed until the image is on disk: imgtool fsyncs its payloads, so
# partclone's pipeline gets a `sync` too; without it 0.25 GB of its output is still dirty
# in the page cache when the clock stops)
drop; t0=$(now); partclone.xfs -c -s "$P1" -o - -L /dev/null 2>/dev/null | zstd -T0 -3 -q -o "$work/pc-xfs.zst"; sync; t1=$(now)
pc_cap=$(secs "$t0" "$t1"); pc_size=$(size "$work/pc-xfs.zst")
drop; t0=$(now); "$imgtool" capture -q --partitions 1 "$M" "$work/img-xfs" >/dev/null; sync; t1=$(now)
our_cap=$(secs "$t0" "$t1"); our_size=$(size "$work/img-xfs/p1.zst")
stored=$(python3 -c "import json;print([r for r in json.load(open('$work/img-xfs/manifest'))['regions'] if r['name']=='p1'][0]['used_bytes'])")
kind=$(python3 -c "import json;print([r for r in json.load(open('$work/img-xfs/manifest'))['regions'] if r['name']=='p1'][0]['filesystem'])")

# --- restore (each onto a fresh blank disk with the master's table) ---
blank "$work/xfs-target.img"; T=$(attach "$work/xfs-target.img")
drop; t0=$(now); zstd -dc "$work/pc-xfs.zst" | partclone.xfs -r -s - -o "${T}p1" -L /dev/null >/dev/null 2>&1; sync; t1=$(now)
pc_res=$(secs "$t0" "$t1")
rm -f "$work/xfs-target.img"; truncate -s "$(size "$master")" "$work/xfs-target.img"; T=$(attach "$work/xfs-target.img")
drop; t0=$(now); "$imgtool" restore -q "$work/img-xfs" "$T" >/dev/null; sync; t1=$(now)
our_res=$(secs "$t0" "$t1")
partx -a "$T" 2>/dev/null || true
repair=$(xfs_repair -n "${T}p1" >/dev/null 2>&1 && echo clean || echo ERRORS)

gb() { awk -v n="$1" 'BEGIN { printf "%.2f GB", n / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
cat <<TABLE
### XFS: imgtool vs partclone.xfs — $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r)

Fixture: XFS ($kind) of $(gb "$fs_size"), $(gb "$used") used by XFS's count (with its internal log), files from $tree, 512 MiB of deleted random data in free blocks. imgtool stored $(gb "$stored") raw.

| step | tool | time (s) | output | vs ours |
|---|---|---:|---:|---:|
| capture | partclone.xfs -c \\| zstd -T0 -3 | $pc_cap | $(gb "$pc_size") | $(ratio "$pc_cap" "$our_cap") time |
| capture | **imgtool capture** | **$our_cap** | **$(gb "$our_size")** | ours/partclone: $(ratio "$our_cap" "$pc_cap") time, $(ratio "$our_size" "$pc_size") size |
| restore | zstd -dc \\| partclone.xfs -r | $pc_res | | $(ratio "$pc_res" "$our_res") time |
| restore | **imgtool restore** (xfs_repair -n: $repair) | **$our_res** | | ours/partclone: $(ratio "$our_res" "$pc_res") |
TABLE
