#!/usr/bin/env bash
# Many-node cloning with rate-limited links, three schemes in the same run:
#   naive  every node pulls the whole image from the primary;
#   cmu    CMU's two store-and-forward phases: secondaries one after another (each from
#          the previous one, complete before the next starts), then every rack's nodes
#          from their secondary;
#   ours   everything at once, cut-through, in the plan's default shape (rack_shape =
#          "auto": "serial" — one chain through the racks, each rack entered at its
#          secondary — up to 1024 nodes, "tree" beyond); also "ours-serial", "ours-chain"
#          (secondaries in a pipeline, a chain behind each), "ours-fanout" (secondaries in
#          a pipeline, racks fan out) and "ours-tree" (rack chains, racks in a tree of
#          fan-out 2 under one rack fed by the primary, whose uplink is a node's link).
# Every host's egress (the primary's uplink too) is limited to RATE with tc tbf, in
# network namespaces this script creates; racks hold up to 16 nodes. Runs every N of a
# scheme, then the next scheme, and prints one table at the end: wall time per scheme and
# N, and the ratio to N = 1. Not a test. Needs root.
#
#   bench/distribution.sh                         # the issue's parameters (~1 hour)
#   NS_LIST="1 4 8" RATE=200mbit IMAGE_MB=100 SCHEMES=ours bench/distribution.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NS_LIST=${NS_LIST:-"1 8 16 32 64"}
RATE=${RATE:-100mbit}
IMAGE_MB=${IMAGE_MB:-200}
SCHEMES=${SCHEMES:-"ours cmu naive"}
CHUNK=${CHUNK:-1M}
PER_RACK=16
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh >/dev/null
cargo build --release -q -p imgtool -p initrd-agent -p pxe-builder
bin=$PWD/target/release
work=$(realpath -m "${BENCH_DIR:-bench/work}")/dist
mkdir -p "$work"
master=$work/master-$IMAGE_MB-4k.img
if [ ! -f "$master" ]; then
  echo "building a master with $IMAGE_MB MiB of incompressible data ..." >&2
  SIZE_MB=$((IMAGE_MB + 320)) ROOT_MB=$((IMAGE_MB + 160)) KEEP_RANDOM_MB=$IMAGE_MB GARBAGE_MB=0 BLOCK_SIZE=4096 \
    scripts/make-fixture.sh gpt "$master" >/dev/null
fi
rm -rf "$work/images"; mkdir -p "$work/images"
"$bin/imgtool" capture -q --chunk-size "$CHUNK" "$master" "$work/images/compute" >/dev/null
payload=$(du -cb "$work"/images/compute/*.zst | tail -1 | cut -f1)
echo "k" > "$work/vmlinuz"; echo "i" > "$work/initrd.img"

tag="nbd$$"
cleanup() {
  for p in $(cat "$work/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  rm -f "$work/pids"
  for l in $(cat "$work/loops" 2>/dev/null); do partx -d "$l" 2>/dev/null || true; losetup -d "$l" 2>/dev/null || true; done
  rm -f "$work/loops"
  for ns in $(ip netns list | awk '{print $1}' | grep "^$tag-" || true); do ip netns del "$ns"; done
  rm -f "$work"/node*.img
}
trap cleanup EXIT

host() { # name cidr
  local ns=$tag-$1 n=$(( $(ip netns list | grep -c "^$tag-") ))
  ip netns add "$ns"
  ip -n "$ns" link add h0 type veth peer name "s$$x$n" netns "$tag-sw"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$2" dev h0
  ip -n "$ns" link set h0 up
  ip -n "$tag-sw" link set "s$$x$n" master br0
  ip -n "$tag-sw" link set "s$$x$n" up
  ip netns exec "$ns" tc qdisc add dev h0 root tbf rate "$RATE" burst 256kb latency 100ms
}

# name, ip for node i (0-based)
node_name() { echo "n$(($1 + 1))"; }
node_ip() { echo "10.78.$(($1 / PER_RACK + 1)).$(($1 % PER_RACK + 10))"; }

run() { # scheme N -> prints seconds
  local scheme=$1 n=$2 shape=auto
  case $scheme in ours-fanout | cmu) shape=fanout ;; ours-chain) shape=chain ;; ours-serial) shape=serial ;; ours-tree) shape=tree ;; esac
  : > "$work/pids"; : > "$work/loops"
  rm -f "$work"/log[0-9]*
  ip netns add "$tag-sw"; ip -n "$tag-sw" link add br0 type bridge; ip -n "$tag-sw" link set br0 up
  host p 10.78.0.1/16
  {
    printf '[cluster]\nname = "bench"\nimage_server = "http://10.78.0.1:8080"\nserver_ip = "10.78.0.1"\n'
    printf 'kernel = "vmlinuz"\ninitrd = "initrd.img"\nrack_shape = "%s"\n' "$shape"
    # Every link (the primary's too) is RATE: the tree takes one stream from the primary.
    printf 'node_link_gbps = 1\nprimary_uplink_gbps = 1\ntree_fanout = 2\n\n[[group]]\nname = "compute"\n\n'
    for r in $(seq 1 $(( (n + PER_RACK - 1) / PER_RACK ))); do
      printf '[[entity]]\nname = "rack%s"\nsubnet = "10.78.%s.0/24"\ngateway = "10.78.%s.1"\ndefault_group = "compute"\n\n' "$r" "$r" "$r"
    done
    for i in $(seq 0 $((n - 1))); do
      printf '[[node]]\nname = "%s"\nmac = "52:54:00:78:%02x:%02x"\nip = "%s"\nentity = "rack%s"\ngroups = ["compute"]\n\n' \
        "$(node_name "$i")" $((i / 256)) $((i % 256)) "$(node_ip "$i")" $((i / PER_RACK + 1))
    done
  } > "$work/cluster.toml"
  rm -rf "$work/tree"
  "$bin/pxe-builder" build --cluster "$work/cluster.toml" --out "$work/tree" >/dev/null
  cp "$work/tree/clone-plan.json" "$work/images/clone-plan.json"
  # The node plans the agents read first (etc/plan/<node>.json).
  rm -rf "$work/images/etc"; mkdir -p "$work/images/etc"; cp -r "$work/tree/etc/plan" "$work/images/etc/"
  ip netns exec "$tag-p" "$bin/imgtool" serve "$work/images" --listen 10.78.0.1:8080 2>/dev/null &
  echo $! >> "$work/pids"
  for i in $(seq 0 $((n - 1))); do
    host "$(node_name "$i")" "$(node_ip "$i")/16"
    truncate -s 0 "$work/node$i.img"; truncate -s "$(stat -c %s "$master")" "$work/node$i.img"
    # Direct I/O to the backing file: a node's disk is its own, not this host's page
    # cache (which would also copy every byte once more).
    losetup --direct-io=on -f --show "$work/node$i.img" >> "$work/loops"
  done
  sleep 1
  mapfile -t loops < "$work/loops"
  local -a apid=()
  local args=(clone --server http://10.78.0.1:8080 --group compute --stall 30)
  local start; start=$(date +%s.%N)
  local cpu0; cpu0=$(head -1 /proc/stat)
  agent() { # i extra-args...
    local i=$1; shift
    ip netns exec "$tag-$(node_name "$i")" "$bin/initrd-agent" "${args[@]}" --node "$(node_name "$i")" \
      --target "${loops[$i]}" "$@" > "$work/log$i" 2>&1 &
    echo $! >> "$work/pids"
    apid[$i]=$!
  }
  # Until node i's log says it is through (or failed), or its agent is gone.
  wait_node() { # i pattern
    until grep -q "$2\|netboot: failed" "$work/log$1" 2>/dev/null || ! kill -0 "${apid[$1]}" 2>/dev/null; do
      sleep 0.2
    done
  }
  case $scheme in
    naive) for i in $(seq 0 $((n - 1))); do agent "$i"; done ;;
    ours*) for i in $(seq 0 $((n - 1))); do agent "$i" --plan --relay-idle 10; done ;;
    cmu)
      # Phase 1: secondaries one after another, each complete before the next starts.
      for i in $(seq 0 $PER_RACK $((n - 1))); do
        agent "$i" --plan --relay-idle 3600
        wait_node "$i" "holding before growing\|done: image"
      done
      # Phase 2: every rack's nodes from their secondary.
      for i in $(seq 0 $((n - 1))); do [ $((i % PER_RACK)) -eq 0 ] || agent "$i" --plan --relay-idle 10; done
      # Phase 2 is over when every non-secondary is done; then release the secondaries.
      for i in $(seq 0 $((n - 1))); do
        [ $((i % PER_RACK)) -eq 0 ] && continue
        wait_node "$i" "done: image"
      done
      ;;
  esac
  for i in $(seq 0 $((n - 1))); do
    wait_node "$i" "holding before growing\|done: image"
  done
  local end; end=$(date +%s.%N)
  local cpu1; cpu1=$(head -1 /proc/stat)
  local busy
  busy=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); t = 0; i = 0
    for (k = 2; k <= n; k++) { d = y[k] - x[k]; t += d; if (k == 5 || k == 6) i += d }
    printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }')
  local failed rerouted
  failed=$(grep -l "netboot: failed:" "$work"/log* 2>/dev/null | wc -l)
  rerouted=$(grep -l "netboot: rerouted:" "$work"/log* 2>/dev/null | wc -l)
  mkdir -p "$work/logs/$scheme-$n"; cp "$work"/log[0-9]* "$work/logs/$scheme-$n/" 2>/dev/null || true
  cleanup
  awk -v a="$start" -v b="$end" -v f="$failed" -v r="$rerouted" \
    -v c="$busy" 'BEGIN { printf "%.1f (cpu %s%%)%s%s", b - a, c, (f > 0 ? " !" f : ""), (r > 0 ? " r" r : "") }'
}

declare -A result base
for s in $SCHEMES; do
  for n in $NS_LIST; do
    result[$s,$n]=$(run "$s" "$n")
    [ -n "${base[$s]:-}" ] || base[$s]=${result[$s,$n]%% *}
    echo "$s N=$n: ${result[$s,$n]}" >&2
  done
done
echo "### Distribution — $(date -u +%Y-%m-%d), $(nproc) cores, links $RATE, payload $((payload / 1000000)) MB, chunks $CHUNK"
echo
printf "| N |"; for s in $SCHEMES; do printf " %s (s) | ratio |" "$s"; done; echo
printf "|---:|"; for s in $SCHEMES; do printf -- "---:|---:|"; done; echo
for n in $NS_LIST; do
  printf "| %s |" "$n"
  for s in $SCHEMES; do
    t=${result[$s,$n]}
    printf " %s | %s |" "$t" "$(awk -v a="${t%% *}" -v b="${base[$s]}" 'BEGIN { printf "%.2fx", a / b }')"
  done
  echo
done
echo
echo "Time: from starting the agents until every node has written and verified every chunk"
echo "(a relay then holds its own grow until its downstream is served). '!k': k agents"
echo "failed; 'rk': k agents re-routed up their chain. cpu: busy share of the machine's 2"
echo "cores during the run (all agents, the primary and the kernel's network share them)."
echo "Logs: $work/logs/<scheme>-<N>/."
