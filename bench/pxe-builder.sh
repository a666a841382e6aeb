#!/usr/bin/env bash
# pxe-builder at scale: a generated cluster of 100 000 nodes in 400 entities (/24 each,
# 250 nodes per entity, 4 groups + 10 vSMP groups), build and check wall time and peak memory.
# Target: < 2 s and < 500 MB. Not a test. Prints one markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# PXE_BUILDER_BIN: a binary to measure instead of building this tree's (e.g. a copy of an
# older build, to compare before and after in the same run).
if [ -z "${PXE_BUILDER_BIN:-}" ]; then cargo build --release -q -p pxe-builder; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo k > "$work/vmlinuz"; echo i > "$work/initrd.img"
gen() { # MODE OUT — MODE: mixed (racks boot their default group) or worst (no node does)
python3 - "$1" "$2" <<'PY'
import sys
mode, path = sys.argv[1], sys.argv[2]
out = open(path, "w")
out.write('[cluster]\nname = "big"\nimage_server = "http://10.255.0.1:8080"\nserver_ip = "10.255.0.1"\n'
          'kernel = "vmlinuz"\ninitrd = "initrd.img"\nkernel_args = "console=ttyS0"\nvsmp_loader = "vmlinuz"\n\n')
for g in range(4):
    out.write(f'[[group]]\nname = "g{g}"\n\n')
vsmp = {}  # node -> vSMP group: 10 groups of 8 boards
for k in range(10):
    boards = [k * 9973 + 17 * j for j in range(8)]
    active = ", ".join('"n%d"' % b for b in boards)
    out.write(f'[[group]]\nname = "vSMP_{k}"\nactive = [{active}]\n\n')
    for b in boards:
        vsmp[b] = f"vSMP_{k}"
for e in range(400):
    a, b = divmod(e, 256)
    out.write(f'[[entity]]\nname = "rack{e}"\nsubnet = "10.{a}.{b}.0/24"\ngateway = "10.{a}.{b}.254"\ndefault_group = "g{e % 4}"\n\n')
n = 0
for e in range(400):
    a, b = divmod(e, 256)
    for h in range(1, 251):
        mac = f"52:54:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}"
        if n in vsmp:
            groups = f'["{vsmp[n]}"]'
        elif mode == "worst" or n % 50 == 0:
            groups = f'["g{(e + 1) % 4}"]'
        else:
            groups = f'["g{e % 4}"]'
        out.write(f'[[node]]\nname = "n{n}"\nmac = "{mac}"\nip = "10.{a}.{b}.{h}"\nentity = "rack{e}"\ngroups = {groups}\n\n')
        n += 1
PY
}
bin=${PXE_BUILDER_BIN:-$PWD/target/release/pxe-builder}
echo "### pxe-builder, 100 000 nodes / 400 entities — $(date -u +%Y-%m-%d), $(nproc) cores"
echo
echo "| cluster | step | files | wall (s) | peak RSS (MB) |"
echo "|---|---|---:|---:|---:|"
for mode in mixed worst; do
  gen "$mode" "$work/cluster.toml"
  set -- $( { /usr/bin/time -f "%e %M" "$bin" check "$work/cluster.toml" >/dev/null; } 2>&1 )
  echo "| $mode | check | | $1 | $(( $2 / 1024 )) |"
  for i in 1 2 3; do
    rm -rf "$work/tree"; sync
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" build --cluster "$work/cluster.toml" --out "$work/tree" >/dev/null
    set -- $(cat "$work/time")
    echo "| $mode | build to disk | $(find "$work/tree" -type f | wc -l) | $1 | $(( $2 / 1024 )) |"
  done
  if [ -d /dev/shm ]; then
    shm=$(mktemp -d /dev/shm/pxe-bench.XXXX)
    /usr/bin/time -f "%e %M" -o "$work/time" "$bin" build --cluster "$work/cluster.toml" --out "$shm/tree" >/dev/null
    set -- $(cat "$work/time")
    echo "| $mode | build to tmpfs | $(find "$shm/tree" -type f | wc -l) | $1 | $(( $2 / 1024 )) |"
    rm -rf "$shm"
  fi
done
python3 - <<'PY'
import os, time
d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "pxe-bench-files")
os.makedirs(d, exist_ok=True)
t = time.time()
for i in range(2000):
    with open(f"{d}/f{i}", "w") as f:
        f.write("x" * 400)
us = (time.time() - t) / 2000 * 1e6
for i in range(2000):
    os.unlink(f"{d}/f{i}")
os.rmdir(d)
print(f"\nThis disk's floor at the time of the run: creating one small file costs {us:.0f} µs (Python, one thread).")
PY
