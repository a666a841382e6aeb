#!/usr/bin/env bash
# Network backup (issue 15) against local capture and against `partclone | zstd | nc`
# streaming, over loopback and over a 1 Gbit/s link (veth between two network namespaces
# this script creates, the sender's egress shaped with tc tbf), in one run, one table.
#
#   bench/backup.sh                 # the bench fixture of bench/imgtool.sh (4 GiB, /usr)
#   FIXTURE=path.img bench/backup.sh  # any GPT disk image whose partition 2 is ext4
#   SIZE_MB=1024 ROOT_MB=800 TREE_MB=400 GARBAGE_MB=128 bench/backup.sh  # a smaller one
#   RANDOM_MB=2048 bench/backup.sh  # link-bound-capable: 4 GiB disk whose root keeps 2 GiB
#                                   # of random (incompressible) bytes besides 600 MiB of /usr
#   BIN_DIR=dir bench/backup.sh     # time dir/imgtool and dir/initrd-agent (another build,
#                                   # for an A/B on the same fixture and load) instead of
#                                   # building this tree's
#
# The bench fixture compresses 3.2 GB to 0.5 GB: the capture makes ~64 MB/s of output, so
# its 1 Gbit/s row cannot fill the link. With RANDOM_MB the capture makes more than the
# link takes (random bytes compress to themselves, fast), so the link row shows whether
# the backup is link-bound. The last line gives the floor a link sets, max(local capture,
# bytes sent at the link's rate), and the backup's time against it.
#
# Two more rows give both sides one compression thread (`--threads 1`, the admin path
# `imgtool capture DISK http://...`, the same code as the agent's): the other core is
# then the server's, as when it runs on a machine of its own, and what the upload adds
# over writing locally is the protocol's own cost. With all cores on both, a 2-core
# machine runs the capture and the server's check of every frame on the same two cores.
#
# Every tool reads partition 2 (the ext4 root, nearly all of the data): `imgtool capture
# --partitions 2`, the agent's backup mode with `--partitions 2` (`initrd-agent backup`,
# the code PID 1 runs), and partclone.ext4 of that partition. Caches are dropped before
# every timed step. The receivers write to disk (the image root; nc into a file). Not a
# test: it asserts nothing but that each backup published. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RATE=${RATE:-1gbit}
. bench/lib.sh
static_bins
work=$(realpath -m "${BENCH_DIR:-bench/work}")/backup
mkdir -p "$work"
master=${FIXTURE:-}
if [ -z "$master" ]; then
  if [ -n "${RANDOM_MB:-}" ]; then
    master=$work/master-random-$RANDOM_MB-${SIZE_MB:-4096}.img
  elif [ -n "${SIZE_MB:-}" ]; then
    master=$work/master-$SIZE_MB.img
  else
    master=$(realpath -m "${BENCH_DIR:-bench/work}")/master.img # bench/imgtool.sh's fixture
  fi
  if [ ! -f "$master" ]; then
    echo "building the fixture (once) ..." >&2
    if [ -n "${RANDOM_MB:-}" ]; then tree_mb=${TREE_MB:-600}; else tree_mb=${TREE_MB:-1800}; fi
    SIZE_MB=${SIZE_MB:-4096} ROOT_MB=${ROOT_MB:-3072} TREE_MB=$tree_mb GARBAGE_MB=${GARBAGE_MB:-512} \
      KEEP_RANDOM_MB=${RANDOM_MB:-0} TREE_SRC="/usr" scripts/make-fixture.sh gpt "$master" >/dev/null
  fi
fi

tag="bkp$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for ns in "$tag-s" "$tag-c"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work/images" "$work/local" "$work"/*.zst
  detach_all
}
trap cleanup EXIT

M=$(attach -r "$master"); P2=${M}p2
tokens=$work/tokens
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

serve() { # netns-or-empty listen -> imgtool serve on a fresh image root; sets $tok
  rm -rf "$work/images"; mkdir -p "$work/images"
  tok=$(token); printf 'compute %s\n' "$tok" > "$tokens"; chmod 600 "$tokens"
  ${1:+ip netns exec "$1"} "$imgtool" serve "$work/images" --tokens "$tokens" --listen "$2" >/dev/null 2>"$work/serve.log" &
  pids+=($!)
  for _ in $(seq 50); do
    ${1:+ip netns exec "$1"} bash -c "exec 3<>/dev/tcp/${2%:*}/${2#*:}" 2>/dev/null && break
    sleep 0.1
  done
}
stop_servers() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }

backup() { # client-netns-or-empty server-addr server-netns-or-empty -> $result seconds, $sent
  serve "${3:-}" "$2"
  drop; local t0; t0=$(now)
  ${1:+ip netns exec "$1"} "$agent" backup --server "http://$2" --group compute \
    --token "$tok" --disk "$M" --partitions 2 > "$work/agent.log" 2>&1 \
    || { cat "$work/agent.log" >&2; exit 1; }
  local t1; t1=$(now)
  grep -q "done: backup" "$work/agent.log" || { cat "$work/agent.log" >&2; exit 1; }
  sent=$(sed -n 's/.*(\([0-9]*\) bytes sent).*/\1/p' "$work/agent.log" | tail -1)
  published=$(readlink "$work/images/compute" || true)
  stop_servers
  result=$(secs "$t0" "$t1")
}

stream() { # sender-netns-or-empty host port receiver-netns-or-empty -> $result seconds
  rm -f "$work/pc.zst"
  ${4:+ip netns exec "$4"} busybox nc -l -p "$3" > "$work/pc.zst" &
  local rx=$!
  sleep 0.5
  drop; local t0; t0=$(now)
  partclone.ext4 -c -s "$P2" -o - -L /dev/null 2>/dev/null | zstd -T0 -3 -q \
    | ${1:+ip netns exec "$1"} bash -c "cat > /dev/tcp/$2/$3" # busybox nc cuts its input short
  wait "$rx" || true
  local t1; t1=$(now)
  pc_size=$(size "$work/pc.zst")
  result=$(secs "$t0" "$t1")
}

# --- local capture (the reference the issue sets: backup within 1.2x on loopback) ---
rm -rf "$work/local"
drop; t0=$(now); "$imgtool" capture -q --partitions 2 "$M" "$work/local" >/dev/null; t1=$(now)
local_s=$(secs "$t0" "$t1"); local_id=$(jq -r .image_id "$work/local/manifest" 2>/dev/null || true)
local_size=$(du -cb "$work"/local/*.zst | tail -1 | cut -f1)
rm -rf "$work/local"

# --- loopback ---
backup "" 127.0.0.1:8099 ""; lo_backup=$result; lo_sent=$sent; lo_id=$published
stream "" 127.0.0.1 8098 ""; lo_stream=$result

# --- one compression thread on each side of the comparison: the other core is left to
# the server, as when it runs on a machine of its own; what is left is the protocol's
# own cost (the admin path, `imgtool capture DISK http://...`, same code as the agent's) ---
drop; t0=$(now); "$imgtool" capture -q --threads 1 --partitions 2 "$M" "$work/local" >/dev/null; t1=$(now)
local1_s=$(secs "$t0" "$t1"); rm -rf "$work/local"
serve "" 127.0.0.1:8097
drop; t0=$(now)
"$imgtool" capture -q --threads 1 --partitions 2 --token "$tok" "$M" http://127.0.0.1:8097/compute > "$work/capture-http.log" 2>&1 \
  || { cat "$work/capture-http.log" >&2; exit 1; }
t1=$(now); lo1_backup=$(secs "$t0" "$t1"); lo1_id=$(readlink "$work/images/compute" || true)
stop_servers

# --- 1 Gbit/s: client namespace -> server namespace over a shaped veth ---
ip netns add "$tag-s"; ip netns add "$tag-c"
ip -n "$tag-c" link add v0 type veth peer name v1 netns "$tag-s"
ip -n "$tag-c" addr add 10.79.0.2/24 dev v0; ip -n "$tag-s" addr add 10.79.0.1/24 dev v1
for ns in "$tag-c" "$tag-s"; do ip -n "$ns" link set lo up; done
ip -n "$tag-c" link set v0 up; ip -n "$tag-s" link set v1 up
ip netns exec "$tag-c" tc qdisc add dev v0 root tbf rate "$RATE" burst 256kb latency 100ms
backup "$tag-c" 10.79.0.1:8099 "$tag-s"; net_backup=$result; net_sent=$sent
stream "$tag-c" 10.79.0.1 8098 "$tag-s"; net_stream=$result

gb() { awk -v n="$1" 'BEGIN { printf "%.2f GB", n / 1e9 }'; }
mbs() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f MB/s", n / t / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
link=$(awk -v r="$RATE" 'BEGIN { n = r + 0; if (r ~ /gbit/) n *= 1e9; else if (r ~ /mbit/) n *= 1e6; printf "%.0f", n / 8 }')
cat <<TABLE
### network backup vs local capture vs partclone | zstd | nc — $(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), kernel $(uname -r)

Fixture: $(basename "$master"), partition 2 (ext4) of $(gb "$(blockdev --getsize64 "$P2")"); image id of the local capture ${local_id:0:12}, published by the loopback backup as ${lo_id:-?}.

| path | tool | time (s) | sent | rate | vs local capture |
|---|---|---:|---:|---:|---:|
| local disk | imgtool capture --partitions 2 | $local_s | $(gb "$local_size") (written) | $(mbs "$local_size" "$local_s") | 1.00x |
| loopback | **initrd-agent backup** → imgtool serve | **$lo_backup** | $(gb "$lo_sent") | $(mbs "$lo_sent" "$lo_backup") | **$(ratio "$lo_backup" "$local_s")** |
| loopback | partclone.ext4 -c \\| zstd -T0 -3 \\| nc | $lo_stream | $(gb "$pc_size") | $(mbs "$pc_size" "$lo_stream") | $(ratio "$lo_stream" "$local_s") |
| local disk, 1 thread | imgtool capture --threads 1 --partitions 2 | $local1_s | $(gb "$local_size") (written) | $(mbs "$local_size" "$local1_s") | 1.00x (of this row) |
| loopback, 1 thread | imgtool capture --threads 1 → imgtool serve (${lo1_id:-?}) | $lo1_backup | $(gb "$lo_sent") | $(mbs "$lo_sent" "$lo1_backup") | $(ratio "$lo1_backup" "$local1_s") of the row above |
| $RATE veth (tbf) | **initrd-agent backup** → imgtool serve | **$net_backup** | $(gb "$net_sent") | $(mbs "$net_sent" "$net_backup") ($(awk -v n="$net_sent" -v t="$net_backup" -v l="$link" 'BEGIN { printf "%.0f%%", 100 * n / t / l }') of the link) | $(ratio "$net_backup" "$local_s") |
| $RATE veth (tbf) | partclone.ext4 -c \\| zstd -T0 -3 \\| nc | $net_stream | $(gb "$pc_size") | $(mbs "$pc_size" "$net_stream") ($(awk -v n="$pc_size" -v t="$net_stream" -v l="$link" 'BEGIN { printf "%.0f%%", 100 * n / t / l }') of the link) | $(ratio "$net_stream" "$local_s") |
TABLE

floor=$(awk -v n="$net_sent" -v l="$link" -v c="$local_s" 'BEGIN { t = n / l; if (c > t) t = c; printf "%.2f", t }')
echo
echo "Link floor over $RATE: max(local capture $local_s s, $(gb "$net_sent") at $(awk -v l="$link" 'BEGIN { printf "%.0f", l / 1e6 }') MB/s) = $floor s; the backup took $net_backup s = $(ratio "$net_backup" "$floor") of it. Binaries: ${BIN_DIR:-this tree}."
