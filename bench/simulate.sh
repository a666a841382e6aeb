#!/usr/bin/env bash
# Distribution at sizes nothing here can run: builds a cluster.toml, lets pxe-builder write
# the clone plan, and runs the simulator (netboot-sim, docs/DISTRIBUTION.md "The model")
# over that plan file. Prints one markdown table. Not a test; no root needed.
#
#   bench/simulate.sh                     # the issue's table: 4 GiB, N = 1 000 … 100 000
#   NS_LIST="1000 10000" SHAPES="serial tree" bench/simulate.sh
#   MODE=netns PAYLOAD=217865124 T1=18.3 HOST_RATE=4.5e8 bench/simulate.sh
#                                         # bench/distribution.sh's setting, for comparison
#
# SHAPES: naive and cmu are schemes over the plan (everyone from the primary; CMU's two
# store-and-forward phases along the plan's secondaries); the others are rack_shape values.
# TREE_FANOUT: tree_fanout in the cluster (bench/distribution.sh's ours-tree uses 2).
# CONDITIONS: clean (no skew), skew (boots within SKEW s), fail (FAIL_SHARE of the nodes die
# mid-stream), both. SIM_ARGS: extra netboot-sim arguments (e.g. "--set stall=2"; "--set
# keepalive=null --set connect_timeout=3 --set down_candidate_cost=3 --set grace=10" is the
# agent before issue 13's timers). BOOT_WINDOW: the cluster's boot_window_s (default SKEW):
# the agents' grace is that + 5 s (imgtool::source::boot_grace), read from the plan.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
MODE=${MODE:-datacentre}
if [ "$MODE" = netns ]; then
  # bench/distribution.sh: racks of 16, every host's egress limited to RATE (the primary's
  # too), no limit on receiving or in the bridge; all agents share the host's CPU.
  NS_LIST=${NS_LIST:-"1 8 16 32 64"}
  PER_RACK=${PER_RACK:-16}
  SHAPES=${SHAPES:-"serial"}
  CONDITIONS=${CONDITIONS:-clean}
  RATE_MBIT=${RATE_MBIT:-100}
  PAYLOAD=${PAYLOAD:?the payload bytes of the run (distribution.sh: payload MB; the agents log them)}
  T1=${T1:?the measured N = 1 time (s)}
  NODE_GBPS=$(awk -v r="$RATE_MBIT" 'BEGIN { print r / 1000 }')
  UPLINK_GBPS=$NODE_GBPS
  # N = 1 calibrates everything a node does besides the transfer: setup = T1 - payload/rate.
  SETUP=$(awk -v t="$T1" -v p="$PAYLOAD" -v r="$RATE_MBIT" 'BEGIN { s = t - p * 8 / (r * 1e6); print (s > 0 ? s : 0) }')
  base=(--set "image_bytes=$PAYLOAD" --set "node_up=$(awk -v r="$RATE_MBIT" 'BEGIN { print r * 1e6 / 8 }')"
    --set node_down=null --set rack_uplink=null --set spine=null
    --set "primary_uplink=$(awk -v r="$RATE_MBIT" 'BEGIN { print r * 1e6 / 8 }')"
    --set "setup=$SETUP" --set hop_latency=0.0002 --set stall=30 --set down_candidate_cost=0
    --set "host_rate=${HOST_RATE:-null}")
else
  NS_LIST=${NS_LIST:-"1000 10000 100000"}
  PER_RACK=${PER_RACK:-250}
  SHAPES=${SHAPES:-"naive cmu serial tree auto"}
  CONDITIONS=${CONDITIONS:-"clean skew fail both"}
  NODE_GBPS=${NODE_GBPS:-10}
  UPLINK_GBPS=${UPLINK_GBPS:-100}
  base=(--set "image_bytes=$(( ${IMAGE_GIB:-4} << 30 ))" --set "node_up=$(awk -v g="$NODE_GBPS" 'BEGIN { print g * 1e9 / 8 }')"
    --set "node_down=$(awk -v g="$NODE_GBPS" 'BEGIN { print g * 1e9 / 8 }')"
    --set "rack_uplink=$(awk -v g="$UPLINK_GBPS" 'BEGIN { print g * 1e9 / 8 }')"
    --set "primary_uplink=$(awk -v g="$UPLINK_GBPS" 'BEGIN { print g * 1e9 / 8 }')")
fi
SKEW=${SKEW:-30}
BOOT_WINDOW=${BOOT_WINDOW:-$SKEW}
FAIL_SHARE=${FAIL_SHARE:-0.01}
read -r -a extra <<< "${SIM_ARGS:-}"
# SKIP_BUILD=1: use target/release's binaries as they are (a rerun on a busy machine).
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p pxe-builder -p netboot-sim
bin=$PWD/target/release
work=$(realpath -m "${BENCH_DIR:-target/simulate}")
mkdir -p "$work"
echo k > "$work/vmlinuz"; echo i > "$work/initrd.img"

gen() { # N SHAPE OUT: one group, racks of PER_RACK nodes (a /24 each), the link rates
python3 - "$1" "$2" "$3" "$PER_RACK" "$NODE_GBPS" "$UPLINK_GBPS" "${TREE_FANOUT:-}" "$BOOT_WINDOW" <<'PY'
import sys
n, shape, path, per, node, up = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
fanout = f"tree_fanout = {sys.argv[7]}\n" if sys.argv[7] else ""
fanout += f"boot_window_s = {int(float(sys.argv[8]))}\n"
out = open(path, "w")
out.write('[cluster]\nname = "sim"\nimage_server = "http://10.255.0.1:8080"\nserver_ip = "10.255.0.1"\n'
          f'kernel = "vmlinuz"\ninitrd = "initrd.img"\nrack_shape = "{shape}"\n'
          f'node_link_gbps = {node}\nrack_uplink_gbps = {up}\nspine_gbps = {up}\nprimary_uplink_gbps = {up}\n{fanout}\n'
          '[[group]]\nname = "compute"\n\n')
racks = (n + per - 1) // per
for e in range(racks):
    a, b = divmod(e, 256)
    out.write(f'[[entity]]\nname = "rack{e}"\nsubnet = "10.{a}.{b}.0/24"\ngateway = "10.{a}.{b}.254"\ndefault_group = "compute"\n\n')
for i in range(n):
    e, h = divmod(i, per)
    a, b = divmod(e, 256)
    mac = f"52:54:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
    out.write(f'[[node]]\nname = "n{i}"\nmac = "{mac}"\nip = "10.{a}.{b}.{h + 1}"\nentity = "rack{e}"\ngroups = ["compute"]\n\n')
PY
}

plan() { # N RACK_SHAPE -> path of its clone-plan.json (built once)
  local p="$work/plan-$1-$2-w$BOOT_WINDOW.json"
  if [ ! -f "$p" ]; then
    gen "$1" "$2" "$work/cluster.toml"
    rm -rf "$work/tree"
    "$bin/pxe-builder" build --cluster "$work/cluster.toml" --out "$work/tree" >/dev/null
    mv "$work/tree/clone-plan.json" "$p"
    rm -rf "$work/tree"
  fi
  echo "$p"
}

cond_args() { # CONDITION
  case $1 in
    clean) ;;
    skew) echo "--set skew=$SKEW" ;;
    fail) echo "--set fail_share=$FAIL_SHARE" ;;
    both) echo "--set skew=$SKEW --set fail_share=$FAIL_SHARE" ;;
    *) echo "unknown condition $1" >&2; exit 2 ;;
  esac
}

: > "$work/rows.jsonl"
for n in $NS_LIST; do
  for s in $SHAPES; do
    case $s in
      naive | cmu) p=$(plan "$n" fanout); scheme=$s ;;
      *) p=$(plan "$n" "$s"); scheme=plan ;;
    esac
    for c in $CONDITIONS; do
      # shellcheck disable=SC2046
      "$bin/netboot-sim" --plan "$p" --scheme "$scheme" --json "${base[@]}" $(cond_args "$c") "${extra[@]}" |
        python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r.update(n=int(sys.argv[1]), shape=sys.argv[2], cond=sys.argv[3]); print(json.dumps(r))' "$n" "$s" "$c" \
        >> "$work/rows.jsonl"
      echo "$s N=$n $c: done" >&2
    done
  done
done

python3 - "$work/rows.jsonl" "$MODE" "$SKEW" "$FAIL_SHARE" "$CONDITIONS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
mode, skew, share, conds = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5].split()
names = {"clean": "no skew", "skew": f"skew {skew} s", "fail": f"{share:.0%} dead", "both": f"skew {skew} s + {share:.0%} dead"}
single = rows[0]["single"] if rows else 0
print(f"### Simulated ({mode}) — single node {single:.2f} s; cells: last node's finish (s), and × (single + skew)")
print()
print("| N | scheme | depth |" + "".join(f" {names[c]} |" for c in conds) + (" p99, both (s) | delayed by failures (max, nodes > 1 s) |" if "both" in conds else ""))
print("|---:|---|---:|" + "---:|" * len(conds) + ("---:|---|" if "both" in conds else ""))
keys = []
for r in rows:
    k = (r["n"], r["shape"])
    if k not in keys:
        keys.append(k)
for k in keys:
    rs = {r["cond"]: r for r in rows if (r["n"], r["shape"]) == k}
    any_r = next(iter(rs.values()))
    cells = []
    for c in conds:
        r = rs.get(c)
        if not r:
            cells.append("")
            continue
        s, p = r["summary"], r["params"]
        t = s["total"]
        flag = f" ({s['unfinished']} unfinished!)" if s["unfinished"] else ""
        cells.append(f"{t:.1f} ({t / (r['single'] + p['skew']):.2f}x){flag}")
    tail = ""
    if "both" in conds and rs.get("both") and rs["both"]["delays"]:
        r = rs["both"]
        d, p99 = r["delays"], r["summary"]["p99"]
        tail = f" {p99:.1f} ({p99 / (r['single'] + r['params']['skew']):.2f}x) | {d['max']:.1f} s, {d['over_1s']} |"
    elif "both" in conds:
        tail = " | |"
    print(f"| {k[0]} | {k[1]} | {any_r['depth']} |" + "".join(f" {c} |" for c in cells) + tail)
PY
