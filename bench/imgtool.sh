#!/usr/bin/env bash
# imgtool capture/restore against the reference tools, on one fixture, in one run.
#
#   bench/imgtool.sh            # prints a markdown table; BENCH_DIR (default bench/work) keeps files
#
# Fixture: a 4 GiB GPT disk whose 3 GiB ext4 root holds ~1.8 GB of real OS files (/usr) and
# 512 MiB of garbage in its free blocks (a deleted random file). Every tool works on that
# root partition; caches are dropped before every timed step, and every write step ends
# with its data on the device (sync), so times compare like with like.
# Not a test: it asserts nothing. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_BENCH=1 scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p imgtool
imgtool=$PWD/target/release/imgtool
work=$(realpath -m "${BENCH_DIR:-bench/work}")
mkdir -p "$work"
master=$work/master.img
if [ ! -f "$master" ]; then
  echo "building the fixture (once) ..." >&2
  SIZE_MB=4096 ROOT_MB=3072 TREE_MB=1800 GARBAGE_MB=512 TREE_SRC="/usr" scripts/make-fixture.sh gpt "$master" >/dev/null
fi

. bench/lib.sh
trap detach_all EXIT
fresh_target() { # a blank 4 GiB disk with the master's table (so partition tools have a p2)
  rm -f "$work/target.img"; truncate -s 4G "$work/target.img"
  sgdisk -b "$work/table.bak" "$master" >/dev/null; sgdisk -l "$work/table.bak" "$work/target.img" >/dev/null
}

M=$(attach -r "$master"); P2=${M}p2
used=$(dumpe2fs -h "$P2" 2>/dev/null | awk -F: '/^Block count/{b=$2} /^Free blocks/{f=$2} /^Block size/{s=$2} END{print (b-f)*s}')
rm -rf "$work/img" "$work"/*.zst "$work/p2.raw" "$work/p2.bmap"

# --- capture ---
drop; t0=$(now); partclone.ext4 -c -s "$P2" -o - -L /dev/null 2>/dev/null | zstd -T0 -3 -q -o "$work/pc.zst"; t1=$(now)
pc_cap=$(secs "$t0" "$t1"); pc_size=$(size "$work/pc.zst")
drop; t0=$(now); dd if="$P2" bs=4M status=none | zstd -T0 -3 -q -o "$work/dd.zst"; t1=$(now)
dd_cap=$(secs "$t0" "$t1"); dd_size=$(size "$work/dd.zst")
drop; t0=$(now); "$imgtool" capture -q --partitions 2 "$M" "$work/img" >/dev/null; t1=$(now)
our_cap=$(secs "$t0" "$t1"); our_size=$(size "$work/img/p2.zst")
e2image -ra -p "$P2" "$work/p2.raw" 2>/dev/null; bmaptool -q create -o "$work/p2.bmap" "$work/p2.raw"

# --- restore (each onto a fresh blank disk) ---
fresh_target; T=$(attach "$work/target.img")
drop; t0=$(now); zstd -dc "$work/pc.zst" | partclone.ext4 -r -s - -o "${T}p2" -L /dev/null >/dev/null 2>&1; sync; t1=$(now)
pc_res=$(secs "$t0" "$t1")
fresh_target; T=$(attach "$work/target.img")
drop; t0=$(now); bmaptool -q copy --bmap "$work/p2.bmap" "$work/p2.raw" "${T}p2"; sync; t1=$(now)
bmap_res=$(secs "$t0" "$t1")
rm -f "$work/target.img"; truncate -s 4G "$work/target.img"; T=$(attach "$work/target.img")
drop; t0=$(now); "$imgtool" restore -q "$work/img" "$T" >/dev/null; sync; t1=$(now)
our_res=$(secs "$t0" "$t1")
fsck_ok=$(e2fsck -fn "${T}p2" >/dev/null 2>&1 && echo clean || echo ERRORS)

# --- the machine's limits on the same bytes ---
raw=$(jq -r '.regions[] | select(.name=="p2") | .used_bytes' "$work/img/manifest" 2>/dev/null || python3 -c "import json;print([r for r in json.load(open('$work/img/manifest'))['regions'] if r['name']=='p2'][0]['used_bytes'])")
"$imgtool" verify -q "$work/img" >/dev/null   # warm the cache
t0=$(now); "$imgtool" verify -q "$work/img" >/dev/null; t1=$(now); lim=$(secs "$t0" "$t1")
t0=$(now); zstd -dc "$work/img/p2.zst" >/dev/null; t1=$(now); zd1=$(secs "$t0" "$t1")
sha=$(python3 -c "
import hashlib,time
b=bytes(range(256))*(1<<20); t=time.time(); n=0
while time.time()-t<2: hashlib.sha256(b).digest(); n+=len(b)
print('%.2f' % (n/(time.time()-t)/1e9))")
wr=$(dd if=/dev/zero of="$T" bs=8M count=128 oflag=direct 2>&1 | awk '/copied/{print $(NF-1), $NF}')

gb() { awk -v n="$1" 'BEGIN { printf "%.2f GB", n / 1e9 }'; }
mbs() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f MB/s", n / t / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
cat <<TABLE
### imgtool vs reference tools — $(date -u +%Y-%m-%d), $(nproc) cores, $(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo | sed 's/^ //'), kernel $(uname -r)

Fixture: ext4 root of $(gb "$(( $(blockdev --getsize64 "$P2") ))"), $(gb "$used") used (real files from /usr), 512 MiB garbage in free blocks.

| step | tool | time (s) | output | vs ours |
|---|---|---:|---:|---:|
| capture | partclone.ext4 -c \\| zstd -T0 -3 | $pc_cap | $(gb "$pc_size") | $(ratio "$pc_cap" "$our_cap") time |
| capture | dd \\| zstd -T0 -3 | $dd_cap | $(gb "$dd_size") | $(ratio "$dd_cap" "$our_cap") time |
| capture | **imgtool capture** | **$our_cap** | **$(gb "$our_size")** | ours/partclone: $(ratio "$our_cap" "$pc_cap") time, $(ratio "$our_size" "$pc_size") size |
| restore | zstd -dc \\| partclone.ext4 -r | $pc_res | | $(ratio "$pc_res" "$our_res") time |
| restore | bmaptool copy (e2image -ra sparse image) | $bmap_res | | $(ratio "$bmap_res" "$our_res") time |
| restore | **imgtool restore** (e2fsck -fn: $fsck_ok) | **$our_res** | $(mbs "$raw" "$our_res") | ours/partclone: $(ratio "$our_res" "$pc_res"), ours/bmaptool: $(ratio "$our_res" "$bmap_res") |
| limit | decompress + sha256 every chunk, all cores (imgtool verify, warm) | $lim | $(mbs "$raw" "$lim") | restore reaches $(awk -v a="$lim" -v b="$our_res" 'BEGIN { printf "%.0f%%", 100 * a / b }') of it |
| limit | zstd -dc, one core (warm) | $zd1 | $(mbs "$raw" "$zd1") | |
| limit | sha256 one core (OpenSSL via Python) | | $sha GB/s | |
| limit | raw write to the target (dd oflag=direct, 1 GiB) | | $wr | |
TABLE

# XFS: imgtool vs partclone.xfs | zstd on an XFS master, in the same run (bench/xfs.sh).
echo
bench/xfs.sh
