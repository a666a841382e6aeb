#!/usr/bin/env bash
# Delta re-clone (issue 14), one node, one run, one table: a full clone, an unchanged
# re-clone and a re-clone after a 20 MiB change of the master, each `imgtool restore` on a
# node namespace pulling from `imgtool serve` in a server namespace over a link shaped to
# RATE (tc tbf on the server's egress, as bench/distribution.sh shapes links); plus
# capture time and size of main's imgtool (commit BASE, format 1) against this tree's
# (format 2, stable chunks) on the same master, cold cache, alternated twice.
#
#   bench/delta.sh                      # RATE=100mbit; BENCH_DIR (default bench/work)
#   SIZE_MB=4096 ROOT_MB=3072 TREE_MB=1800 GARBAGE_MB=512 bench/delta.sh   # bench/imgtool.sh's fixture
#
# The fixture is bench/imgtool.sh's recipe (real files from /usr, garbage in free blocks)
# at a default size that fits a shared disk, plus two files of random bytes the change
# needs (old.bin, 10 MiB, deleted; large.bin, 16 MiB, 1 MiB of it rewritten). It is built
# fresh each run and removed at the end (the change edits it). Needs root. Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100mbit}
BASE=${BASE:-a13e0a6}
export SIZE_MB=${SIZE_MB:-2048} ROOT_MB=${ROOT_MB:-1536} TREE_MB=${TREE_MB:-1000}
export GARBAGE_MB=${GARBAGE_MB:-128} TREE_SRC=${TREE_SRC:-/usr}
export PATH="$HOME/.cargo/bin:$PATH"
work=$(realpath -m "${BENCH_DIR:-bench/work}")/delta
mkdir -p "$work"

# Both binaries are built the way scripts/build-agent.sh builds the agent (static, gnu
# target) so that they share the agent's dependency builds in target/; same flags for
# both, so the capture comparison is like with like. main's imgtool is built from a plain
# export of BASE (no git worktree) and copied out before this tree's build replaces it.
build() { # [--manifest-path M]
  RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" CARGO_TARGET_DIR=$PWD/target \
    nice cargo build --release -q -p imgtool --target x86_64-unknown-linux-gnu "$@"
}
bin=$PWD/target/x86_64-unknown-linux-gnu/release/imgtool
if [ ! -x "$work/imgtool-$BASE" ]; then
  rm -rf "$work/src-$BASE"; mkdir -p "$work/src-$BASE"
  git archive "$BASE" | tar -x -C "$work/src-$BASE"
  build --manifest-path "$work/src-$BASE/Cargo.toml"
  cp "$bin" "$work/imgtool-$BASE"
  rm -rf "$work/src-$BASE"
fi
build
old=$work/imgtool-$BASE new=$work/imgtool-new
cp "$bin" "$new"
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0

. bench/lib.sh
tag="dlt$$"
cleanup() {
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true
  for m in "$work"/mnt.*; do [ -d "$m" ] && { umount "$m" 2>/dev/null || true; rmdir "$m"; }; done
  detach_all
  ip netns del "$tag-s" 2>/dev/null || true
  ip netns del "$tag-n" 2>/dev/null || true
  rm -rf "$work/master.img" "$work/target.img" "$work/images" "$work/cap-old" "$work/cap-new"
}
trap cleanup EXIT

echo "building the fixture ..." >&2
master=$work/master.img
scripts/make-fixture.sh gpt "$master" >/dev/null
with_root() { # run "$@" with the master's root fs mounted at $mnt
  local l; l=$(attach "$master"); mnt=$(mktemp -d "$work/mnt.XXXX")
  mount "${l}p2" "$mnt"; "$@"; umount "$mnt"; rmdir "$mnt"
  partx -d "$l" 2>/dev/null || true; losetup -d "$l"
}
prepare() {
  head -c $((10 << 20)) /dev/urandom > "$mnt/srv/old.bin"
  head -c $((16 << 20)) /dev/urandom > "$mnt/srv/large.bin"
}
changed_bytes=$work/changed.bin
change() { # 20 MiB new (half random, half text), 10 MiB deleted, 1 MiB rewritten
  mkdir -p "$mnt/srv/new"
  head -c $((10 << 20)) /dev/urandom > "$mnt/srv/new/random.bin"
  # No `yes | nl | head`: under pipefail `nl`'s SIGPIPE fails the run whenever head closes first.
  awk -v max=$((10 << 20)) 'BEGIN { for (i = 1; n < max; i++) { l = sprintf("%6d\ta line of new log text from the changed master\n", i); printf "%s", l; n += length(l) } }' > "$mnt/srv/new/app.log"
  truncate -s $((10 << 20)) "$mnt/srv/new/app.log"
  rm "$mnt/srv/old.bin"
  head -c $((1 << 20)) /dev/urandom > "$work/patch.bin"
  dd if="$work/patch.bin" of="$mnt/srv/large.bin" bs=1M seek=5 conv=notrunc status=none
  cat "$mnt/srv/new/random.bin" "$mnt/srv/new/app.log" "$work/patch.bin" > "$changed_bytes"
}
with_root prepare

# --- capture: main's imgtool and ours, cold cache, alternated ---
payload() { du -cb "$1"/*.zst | tail -1 | cut -f1; }
declare -A cap_t cap_s
for round in 1 2; do
  for who in old new; do
    rm -rf "$work/cap-$who"; drop
    t0=$(now); "${!who}" capture -q "$master" "$work/cap-$who" >/dev/null; t1=$(now)
    cap_t[$who$round]=$(secs "$t0" "$t1"); cap_s[$who]=$(payload "$work/cap-$who")
  done
done
mkdir -p "$work/images"; mv "$work/cap-new" "$work/images/v1"; rm -rf "$work/cap-old"

# --- network: a server and a node namespace, the server's egress at RATE ---
ip netns add "$tag-s"; ip netns add "$tag-n"
ip link add s0 netns "$tag-s" type veth peer name n0 netns "$tag-n"
ip -n "$tag-s" addr add 10.251.0.1/24 dev s0; ip -n "$tag-n" addr add 10.251.0.2/24 dev n0
for ns in s n; do ip -n "$tag-$ns" link set lo up; ip -n "$tag-$ns" link set "${ns}0" up; done
ip netns exec "$tag-s" tc qdisc add dev s0 root tbf rate "$RATE" burst 256kb latency 100ms
ip netns exec "$tag-s" "$new" serve "$work/images" --listen 10.251.0.1:8080 2>/dev/null &
srv=$!
for _ in $(seq 50); do ip netns exec "$tag-n" curl -sf -o /dev/null http://10.251.0.1:8080/v1/manifest && break; sleep 0.1; done

truncate -s "$(stat -c %s "$master")" "$work/target.img"
T=$(attach "$work/target.img")
declare -A res_t res_b res_c
clone() { # name group [args]: timed restore on the node, cold cache
  local name=$1 group=$2; shift 2
  drop; t0=$(now)
  ip netns exec "$tag-n" "$new" restore -q --json "$@" "http://10.251.0.1:8080/$group" "$T" > "$work/$name.json"
  sync; t1=$(now)
  res_t[$name]=$(secs "$t0" "$t1")
  res_b[$name]=$(python3 -c "import json;print(json.load(open('$work/$name.json'))['source_bytes'])")
  res_c[$name]=$(python3 -c "
import json; c=json.load(open('$work/$name.json'))['chunks']
print('%d checked, %d skipped, %d fetched' % (c['checked'], c['skipped'], c['fetched']))")
}
clone full v1
clone same v1
with_root change
"$new" capture -q "$master" "$work/images/v2" >/dev/null
clone changed v2
diff_ok=$("$new" diff -q "$work/images/v2" "$T" >/dev/null 2>&1 && echo "equal (imgtool diff)" || echo DIFFERS)
fsck_ok=$(e2fsck -fn "${T}p2" >/dev/null 2>&1 && echo clean || echo ERRORS)
changed_zst=$(zstd -3 -c "$changed_bytes" | wc -c)
rm -f "$changed_bytes" "$work/patch.bin"

mb() { awk -v n="$1" 'BEGIN { printf "%.1f MB", n / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
avg() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (a + b) / 2 }'; }
full_t=${res_t[full]}
cat <<TABLE
### Delta re-clone — $(date -u +"%Y-%m-%d %H:%M") UTC, $(nproc) cores (load $(cut -d' ' -f1-3 /proc/loadavg)), $RATE, kernel $(uname -r)

Fixture: ${SIZE_MB} MiB GPT disk, ${ROOT_MB} MiB ext4 root with ${TREE_MB} MB of /usr, image payload $(mb "${cap_s[new]}").
Change: 20 MiB new files (10 random, 10 text), 10 MiB deleted, 1 MiB rewritten in a 16 MiB file; $(mb "$changed_zst") compressed.

| clone (one node, $RATE) | time (s) | vs full | payload bytes on the wire | chunks |
|---|---:|---:|---:|---|
| full (blank disk) | $full_t | 1.000 | $(mb "${res_b[full]}") | ${res_c[full]} |
| unchanged re-clone | ${res_t[same]} | $(ratio "${res_t[same]}" "$full_t") | $(mb "${res_b[same]}") | ${res_c[same]} |
| 20 MiB-change re-clone | ${res_t[changed]} | $(ratio "${res_t[changed]}" "$full_t") | $(mb "${res_b[changed]}") | ${res_c[changed]} |

After the changed re-clone: disk $diff_ok, e2fsck -fn $fsck_ok.

| capture (cold cache) | run 1 (s) | run 2 (s) | mean (s) | payload |
|---|---:|---:|---:|---:|
| main $BASE (format 1) | ${cap_t[old1]} | ${cap_t[old2]} | $(avg "${cap_t[old1]}" "${cap_t[old2]}") | $(mb "${cap_s[old]}") |
| this tree (format 2) | ${cap_t[new1]} | ${cap_t[new2]} | $(avg "${cap_t[new1]}" "${cap_t[new2]}") | $(mb "${cap_s[new]}") ($(ratio "${cap_s[new]}" "${cap_s[old]}")x) |
TABLE
