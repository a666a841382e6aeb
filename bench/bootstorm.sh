#!/usr/bin/env bash
# Boot storm: N nodes fetching kernel + initrd at once, from the primary alone vs from
# their entity's secondary (issue 16, "boot files from the rack"). Network namespaces
# this script creates, one bridge; every host's link is limited to RATE both ways (tc
# tbf on each veth end: what a host sends and what it receives), the primary's to
# PRIMARY_RATE. The boot files are real: the netboot kernel and our initrd (KERNEL,
# INITRD), served by `imgtool serve` from a tree `pxe-builder build` wrote
# (etc/bootfiles.json with their sizes and sha256).
#
#   one      one node alone fetches both from the primary (the reference time);
#   primary  N nodes at once from the primary;
#   rack     RACKS racks of N/RACKS, a cold storm: the RACKS secondaries start together.
#            Each boots as its iPXE script says (kernel and initrd from its parent in the
#            boot-file tree, 3 s progress timeout, else from the primary — in a cold storm
#            the parent is booting too, so the primary), then its agent takes the boot
#            files into RAM from the peers its node plan lists (`boot_peers`: parent,
#            grandparent …; polled while they fetch), else from the primary, checks them
#            against the primary's manifest and serves them (`initrd-agent boot-files
#            --peer …`, what a secondary's relay does beside the image); then the other
#            nodes all at once do what their iPXE script does: kernel and initrd from
#            their secondary (3 s progress timeout), else both from the primary.
#   reboot   the other N-RACKS nodes reboot at once while the secondaries keep serving
#            (the seed's ramdrive case).
#   rack1    one rack reboots, its secondary too, while the other secondaries serve: the
#            secondary boots from its parent and takes the files from its peers, then its
#            nodes boot from it.
#
# Prints one table: wall time, bytes the primary sent (its interface's TX counter),
# copies of the boot files (total and per rack) and how many nodes fell back to the
# primary. Not a test. Needs root.
#
#   bench/bootstorm.sh
#   N=32 RACKS=4 RATE=100mbit PRIMARY_RATE=100mbit bench/bootstorm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-32}
RACKS=${RACKS:-4}
RATE=${RATE:-100mbit}
PRIMARY_RATE=${PRIMARY_RATE:-$RATE}
KERNEL=${KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | head -1)}
INITRD=${INITRD:-/tmp/netboot-demo/tree/boot/initrd.img}
PER_RACK=$((N / RACKS))
[ $((PER_RACK * RACKS)) -eq "$N" ] || { echo "N must be a multiple of RACKS" >&2; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH"
# Debug builds by default (the machine is shared; serving from RAM is not CPU-bound at
# these rates); BIN=target/release after a release build.
cargo build -q -p imgtool -p initrd-agent -p pxe-builder
bin=$(realpath "${BIN:-target/debug}")
work=$(realpath -m "${BENCH_DIR:-target/bench}")/bootstorm
rm -rf "$work"; mkdir -p "$work"
cp "$KERNEL" "$work/vmlinuz"
if [ -f "$INITRD" ]; then cp "$INITRD" "$work/initrd.img"; else
  # Our initrd's size (pxe-builder initrd of the agent, 4.2 MB) when none is built here.
  INITRD="random bytes, the size of our initrd"
  head -c 4170881 /dev/urandom > "$work/initrd.img"
fi
files=$(( $(stat -c %s "$work/vmlinuz") + $(stat -c %s "$work/initrd.img") ))

tag="bst$$"
cleanup() {
  for p in $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  rm -f "$work/pids"
  for ns in $(ip netns list | awk '{print $1}' | grep "^$tag-" || true); do ip netns del "$ns"; done
}
trap cleanup EXIT

nhosts=0
host() { # name cidr rate
  local ns=$tag-$1 sw="s${$}x$nhosts"; nhosts=$((nhosts + 1))
  ip netns add "$ns"
  ip -n "$ns" link add h0 type veth peer name "$sw" netns "$tag-sw"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$2" dev h0
  ip -n "$ns" link set h0 up
  ip -n "$tag-sw" link set "$sw" master br0
  ip -n "$tag-sw" link set "$sw" up
  # The host's link, both ways: what it sends, and what the switch sends it.
  ip netns exec "$ns" tc qdisc add dev h0 root tbf rate "$3" burst 256kb latency 100ms
  ip netns exec "$tag-sw" tc qdisc add dev "$sw" root tbf rate "$3" burst 256kb latency 100ms
}
sent() { ip -n "$tag-p" -s -j link show dev h0 | sed 's/.*"tx":{"bytes":\([0-9]*\).*/\1/'; }
node_ip() { echo "10.80.$(($1 / PER_RACK + 1)).$(($1 % PER_RACK + 10))"; }
sec_of() { node_ip $(( $1 / PER_RACK * PER_RACK )); }
P=http://10.80.0.1:8080

# The tree: pxe-builder's, for etc/bootfiles.json and the boot files.
{
  printf '[cluster]\nname = "storm"\nimage_server = "%s"\nserver_ip = "10.80.0.1"\n' "$P"
  printf 'kernel = "%s"\ninitrd = "%s"\nnode_files = "all"\n\n[[group]]\nname = "compute"\n\n' "$work/vmlinuz" "$work/initrd.img"
  for r in $(seq 1 "$RACKS"); do
    printf '[[entity]]\nname = "rack%s"\nsubnet = "10.80.%s.0/24"\ngateway = "10.80.%s.1"\ndefault_group = "compute"\n\n' "$r" "$r" "$r"
  done
  for i in $(seq 0 $((N - 1))); do
    printf '[[node]]\nname = "n%s"\nmac = "52:54:00:80:%02x:%02x"\nip = "%s"\nentity = "rack%s"\ngroups = ["compute"]\n\n' \
      "$((i + 1))" $((i / 256)) $((i % 256)) "$(node_ip "$i")" $((i / PER_RACK + 1))
  done
} > "$work/cluster.toml"
"$bin/pxe-builder" build --cluster "$work/cluster.toml" --out "$work/tree" >/dev/null
grep -q "kernel --timeout 3000 http://$(sec_of 1):8180/boot/vmlinuz" "$work/tree/ipxe/01-52-54-00-80-00-01.ipxe" \
  || { echo "n2's iPXE script does not try its secondary" >&2; exit 1; }
# Secondary i's boot-file peers, as its node plan lists them: relay URLs, nearest first.
peers_of() {
  python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))
assert p["boot_files"], sys.argv[1] + " is no secondary"
print(" ".join("http://%s:%d" % (c["address"], p["relay_port"]) for c in p.get("boot_peers") or []))' \
    "$work/tree/etc/plan/n$(($1 + 1)).json"
}
# Its iPXE script tries its parent (the first peer) first.
parent_of() { local p; p=$(peers_of "$1"); echo "${p%% *}"; }
if [ "$RACKS" -gt 1 ]; then
  grep -q "kernel --timeout 3000 $(parent_of "$PER_RACK")/boot/vmlinuz" "$work/tree/ipxe/01-52-54-00-80-$(printf %02x $((PER_RACK / 256)))-$(printf %02x $((PER_RACK % 256))).ipxe" \
    || { echo "the second secondary's iPXE script does not try its parent" >&2; exit 1; }
fi

setup() {
  : > "$work/pids"; nhosts=0
  ip netns add "$tag-sw"; ip -n "$tag-sw" link add br0 type bridge; ip -n "$tag-sw" link set br0 up
  host p 10.80.0.1/16 "$PRIMARY_RATE"
  for i in $(seq 0 $((N - 1))); do host "n$i" "$(node_ip "$i")/16" "$RATE"; done
  ip netns exec "$tag-p" "$bin/imgtool" serve "$work/tree" --listen 10.80.0.1:8080 2>/dev/null &
  echo $! >> "$work/pids"
  sleep 1
}

# Node i fetches both files from the primary; fails on any error.
from_primary() {
  ip netns exec "$tag-n$1" curl -sf -o /dev/null "$P/boot/vmlinuz" &&
    ip netns exec "$tag-n$1" curl -sf -o /dev/null "$P/boot/initrd.img"
}
# Node i does what its iPXE script does: both from its secondary — or, for a secondary,
# its parent URL $2 — (3 s without progress fails), else both from the primary (marked
# in $work/fallback).
from_rack() {
  local s; s=${2-http://$(sec_of "$1"):8180}
  [ -n "$s" ] || { from_primary "$1"; return; }
  local c=(curl -sf -o /dev/null --connect-timeout 3 --speed-time 3 --speed-limit 1)
  if ip netns exec "$tag-n$1" "${c[@]}" "$s/boot/vmlinuz" && ip netns exec "$tag-n$1" "${c[@]}" "$s/boot/initrd.img"; then
    return 0
  fi
  echo "$1" >> "$work/fallback"
  from_primary "$1"
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
declare -A T B F

# one
setup
b0=$(sent); t0=$(now)
from_primary 1
T[one]=$(secs "$t0" "$(now)"); B[one]=$(( $(sent) - b0 )); F[one]=-
cleanup
echo "one: ${T[one]} s" >&2

# primary
setup
b0=$(sent); t0=$(now); pids=()
for i in $(seq 0 $((N - 1))); do from_primary "$i" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
T[primary]=$(secs "$t0" "$(now)"); B[primary]=$(( $(sent) - b0 )); F[primary]=-
cleanup
echo "primary: ${T[primary]} s" >&2

# Secondary i boots (its iPXE script: its parent first) and starts serving, taking the
# boot files from its peers; returns once it serves.
secondary() {
  local i=$1 peer args=()
  from_rack "$i" "$(parent_of "$i")"
  for peer in $(peers_of "$i"); do args+=(--peer "$peer"); done
  ip netns exec "$tag-n$i" "$bin/initrd-agent" boot-files --server "$P" --listen "$(node_ip "$i"):8180" \
    "${args[@]}" > "$work/sec$i.log" 2>&1 &
  echo $! >> "$work/pids"
  until grep -q "serving boot files\|initrd-agent: error" "$work/sec$i.log" 2>/dev/null; do sleep 0.1; done
  grep -q "serving boot files" "$work/sec$i.log"
}
# The nodes of racks FIRST..LAST-1 that are no secondary, all at once, from their rack.
rack_nodes() {
  local pids=() i
  for i in $(seq $(($1 * PER_RACK)) $(($2 * PER_RACK - 1))); do
    [ $((i % PER_RACK)) -eq 0 ] && continue
    from_rack "$i" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}

# rack: a cold storm (every secondary starts together)
setup
: > "$work/fallback"
b0=$(sent); t0=$(now); pids=()
for r in $(seq 0 $((RACKS - 1))); do secondary $((r * PER_RACK)) & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
t1=$(now); b1=$(sent)
rack_nodes 0 "$RACKS"
t2=$(now)
T[rack]=$(secs "$t0" "$t2"); B[rack]=$(( $(sent) - b0 )); F[rack]=$(wc -l < "$work/fallback")
T[rack-sec]=$(secs "$t0" "$t1"); B[rack-sec]=$(( b1 - b0 ))
T[rack-storm]=$(secs "$t1" "$t2"); B[rack-storm]=$(( $(sent) - b1 ))
F[rack-sec]=$(awk -v p="$PER_RACK" '$1 % p == 0' "$work/fallback" | wc -l)
from=$(for r in $(seq 0 $((RACKS - 1))); do sed -n 's/.*; from \(.*\))$/\1/p' "$work/sec$((r * PER_RACK)).log"; done | sort | uniq -c | awk '{$1=$1; print}' | paste -sd, | sed 's/,/, /g')
echo "rack: ${T[rack]} s (secondaries' files from: $from)" >&2

# reboot: the secondaries keep serving, every other node reboots at once
: > "$work/fallback"
b0=$(sent); t0=$(now)
rack_nodes 0 "$RACKS"
T[reboot]=$(secs "$t0" "$(now)"); B[reboot]=$(( $(sent) - b0 )); F[reboot]=$(wc -l < "$work/fallback")
echo "reboot: ${T[reboot]} s" >&2

# rack1: the last rack reboots, its secondary too; the others serve
last=$(( (RACKS - 1) * PER_RACK ))
if [ "$RACKS" -gt 1 ]; then
  sec_pid=$(ip netns pids "$tag-n$last" | head -1)
  [ -n "$sec_pid" ] && kill "$sec_pid"
  sleep 0.5
  : > "$work/fallback"
  b0=$(sent); t0=$(now)
  secondary "$last"
  rack_nodes $((RACKS - 1)) "$RACKS"
  T[rack1]=$(secs "$t0" "$(now)"); B[rack1]=$(( $(sent) - b0 )); F[rack1]=$(wc -l < "$work/fallback")
  echo "rack1: ${T[rack1]} s" >&2
fi
cleanup

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
copies() { awk -v b="$1" -v f="$files" 'BEGIN { printf "%.2f", b / f }'; }
ratio() { awk -v a="$1" -v b="${T[one]}" 'BEGIN { printf "%.2fx", a / b }'; }
echo "### Boot storm — $(date -u +%Y-%m-%d), $(nproc) cores, N = $N in $RACKS racks of $PER_RACK, node links $RATE, primary link $PRIMARY_RATE"
echo
echo "Boot files: kernel $(stat -c %s "$work/vmlinuz") + initrd $(stat -c %s "$work/initrd.img") = $(mb "$files") MB ($(basename "$KERNEL"), $INITRD)."
echo
per_rack() { awk -v b="$1" -v f="$files" -v r="$2" 'BEGIN { printf "%.2f", b / f / r }'; }
echo "| scheme | time (s) | vs one node | primary sent (MB) | copies of the boot files | copies per rack | fell back to the primary |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| one node, from the primary | ${T[one]} | 1.00x | $(mb "${B[one]}") | $(copies "${B[one]}") | | - |"
echo "| $N nodes, primary only | ${T[primary]} | $(ratio "${T[primary]}") | $(mb "${B[primary]}") | $(copies "${B[primary]}") | $(per_rack "${B[primary]}" "$RACKS") | - |"
echo "| $N nodes through their secondary, cold storm | ${T[rack]} | $(ratio "${T[rack]}") | $(mb "${B[rack]}") | $(copies "${B[rack]}") | $(per_rack "${B[rack]}" "$RACKS") | ${F[rack]} of $N |"
echo "| … $RACKS secondaries booted and serving (files from: $from) | ${T[rack-sec]} | $(ratio "${T[rack-sec]}") | $(mb "${B[rack-sec]}") | $(copies "${B[rack-sec]}") | $(per_rack "${B[rack-sec]}" "$RACKS") | ${F[rack-sec]} of $RACKS |"
echo "| … then the other $((N - RACKS)) nodes at once | ${T[rack-storm]} | $(ratio "${T[rack-storm]}") | $(mb "${B[rack-storm]}") | $(copies "${B[rack-storm]}") | $(per_rack "${B[rack-storm]}" "$RACKS") | |"
echo "| rack reboot, secondaries already serving: $((N - RACKS)) nodes at once | ${T[reboot]} | $(ratio "${T[reboot]}") | $(mb "${B[reboot]}") | $(copies "${B[reboot]}") | $(per_rack "${B[reboot]}" "$RACKS") | ${F[reboot]} of $((N - RACKS)) |"
if [ "$RACKS" -gt 1 ]; then
echo "| one rack reboots, its secondary too (the others serving): $PER_RACK nodes | ${T[rack1]} | $(ratio "${T[rack1]}") | $(mb "${B[rack1]}") | $(copies "${B[rack1]}") | $(per_rack "${B[rack1]}" 1) | ${F[rack1]} of $PER_RACK |"
fi
