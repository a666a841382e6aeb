#!/usr/bin/env bash
# Where a network backup's time goes (issue 15): CPU seconds (user, sys) of a local
# `imgtool capture --partitions 2`, of the agent's backup over loopback into `imgtool
# serve`, and of that server (from /proc/PID/stat when the backup has published), with
# the wall times and the server's publish line (frames raw-checked, the verifier's peak).
# On one machine the server's CPU competes with the capture's; this says how much.
#
#   bench/backup-cpu.sh                      # bench/imgtool.sh's fixture (bench/work/master.img)
#   FIXTURE=path.img bench/backup-cpu.sh     # any GPT disk image whose partition 2 is ext4
#   BIN_DIR=dir bench/backup-cpu.sh          # dir/imgtool and dir/initrd-agent (another build)
#
# Needs root. Not a test: it asserts nothing but that the backup published.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
. bench/lib.sh
static_bins
master=${FIXTURE:-$(realpath -m "${BENCH_DIR:-bench/work}")/master.img}
[ -f "$master" ] || { echo "no fixture $master: run bench/imgtool.sh or bench/backup.sh once" >&2; exit 1; }
work=$(realpath -m "${BENCH_DIR:-bench/work}")/backup-cpu
rm -rf "$work"; mkdir -p "$work/images"
sp=""
cleanup() { [ -n "$sp" ] && kill "$sp" 2>/dev/null; rm -rf "$work"; detach_all; }
trap cleanup EXIT
M=$(attach -r "$master")
cpu() { awk '{ printf "%.2f user + %.2f sys", $14 / 100, $15 / 100 }' "/proc/$1/stat"; }

drop
/usr/bin/time -o "$work/time" -f "%e s wall, %U user + %S sys" "$imgtool" capture -q --partitions 2 "$M" "$work/local" >/dev/null
echo "local capture: $(cat "$work/time")"
rm -rf "$work/local"

tok=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'compute %s\n' "$tok" > "$work/tokens"; chmod 600 "$work/tokens"
"$imgtool" serve "$work/images" --tokens "$work/tokens" --listen 127.0.0.1:8095 >/dev/null 2>"$work/serve.log" &
sp=$!
for _ in $(seq 50); do bash -c 'exec 3<>/dev/tcp/127.0.0.1/8095' 2>/dev/null && break; sleep 0.1; done
drop
/usr/bin/time -o "$work/time" -f "%e s wall, %U user + %S sys" "$agent" backup --server http://127.0.0.1:8095 \
  --group compute --token "$tok" --disk "$M" --partitions 2 > "$work/agent.log" 2>&1 \
  || { cat "$work/agent.log" >&2; exit 1; }
echo "agent backup (loopback): $(cat "$work/time")"
echo "imgtool serve during it: $(cpu "$sp")"
grep 'published' "$work/serve.log" | tail -1
echo "fixture $(basename "$master"), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), binaries: ${BIN_DIR:-this tree}"
