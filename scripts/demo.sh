#!/usr/bin/env bash
# The product end to end on built-in demo data, from a fresh Debian machine (as root):
#  1. installs what it needs and builds imgtool, pxe-builder and the static initrd-agent;
#  2. makes a demo master disk (GPT: ESP, ext4 root with a real file tree, swap, ext4 data);
#  3. captures it into a logical-group image and verifies it;
#  4. builds the netboot initrd and the PXE boot tree for a one-rack cluster;
#  5. serves images and boot options with `imgtool serve`;
#  6. boots a blank QEMU node (SeaBIOS + iPXE ROM + pxelinux, TCG) that clones itself onto
#     its NVMe disk and powers off; then checks the disk and shows the status board.
#
#   scripts/demo.sh [WORKDIR]      (default: /tmp/netboot-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(realpath -m "${1:-/tmp/netboot-demo}")
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building (release)"
cargo build --release --quiet -p imgtool -p pxe-builder
agent=$(scripts/build-agent.sh)
imgtool=$repo/target/release/imgtool
pxeb=$repo/target/release/pxe-builder
mkdir -p "$work"
rm -rf "$work/images" "$work/tree" "$work/node.img" "$work/console.log"

if [ ! -f "$work/master.img" ]; then
  step "making the demo master disk $work/master.img"
  scripts/make-fixture.sh gpt "$work/master.img" >/dev/null
fi
sgdisk -p "$work/master.img" | tail -5

step "imgtool capture master.img images/compute"
mkdir -p "$work/images"
"$imgtool" capture "$work/master.img" "$work/images/compute"
"$imgtool" verify "$work/images/compute"

step "pxe-builder initrd (static agent + modules + e2fsprogs)"
kernel=$(ls /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -1)
"$pxeb" initrd --agent "$agent" --kernel "$kernel" --out "$work/initrd.img"

step "pxe-builder build (one rack, one node)"
cat > "$work/cluster.toml" <<TOML
[cluster]
name = "demo"
image_server = "http://172.20.0.100:8080"
server_ip = "172.20.0.2"
kernel = "$kernel"
initrd = "initrd.img"
kernel_args = "console=ttyS0 panic=-1 netboot.done=poweroff netboot.onerror=poweroff"

[[entity]]
name = "rack1"
subnet = "172.20.0.0/27"
gateway = "172.20.0.2"
default_group = "compute"

[[group]]
name = "compute"

[[node]]
name = "node01"
mac = "52:54:00:00:00:01"
ip = "172.20.0.9"
entity = "rack1"
groups = ["compute"]
TOML
"$pxeb" check "$work/cluster.toml"
"$pxeb" build --cluster "$work/cluster.toml" --out "$work/tree"
"$pxeb" lookup --tree "$work/tree" --mac 52:54:00:00:00:01 --ip 172.20.0.9 | tail -5

step "imgtool serve images/ + tree/ on 127.0.0.1"
port=$((20000 + $$ % 20000))   # loopback only; imgtool serve says so if it is taken
"$imgtool" serve "$work/images" --tree "$work/tree" --listen "127.0.0.1:$port" 2>"$work/serve.log" &
server=$!
qemu=""
cleanup() {
  [ -n "$qemu" ] && kill "$qemu" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
}
trap cleanup EXIT
sleep 1
if ! kill -0 "$server" 2>/dev/null; then
  echo "demo: imgtool serve did not start: $(cat "$work/serve.log")" >&2
  exit 1
fi

step "booting a blank node in QEMU (TCG): PXE -> pxelinux -> kernel -> agent clones itself"
truncate -s 384M "$work/node.img"
: > "$work/console.log"
qemu-system-x86_64 -accel "${NETBOOT_QEMU_ACCEL:-tcg}" -m 1024 -nographic -no-reboot \
  -netdev "user,id=n0,net=172.20.0.0/24,dhcpstart=172.20.0.9,restrict=on,tftp=$work/tree,bootfile=pxelinux.0,guestfwd=tcp:172.20.0.100:8080-cmd:/bin/busybox nc 127.0.0.1 $port" \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01 -boot n \
  -drive "file=$work/node.img,if=none,id=d0,format=raw" -device nvme,drive=d0,serial=node01 \
  </dev/null >> "$work/console.log" 2>&1 &
qemu=$!
tail -f "$work/console.log" --pid "$qemu" | grep --line-buffered 'netboot:' || true
wait "$qemu" || true
qemu=""

step "checking the node's disk from the host"
sgdisk -v "$work/node.img" | grep -m1 "No problems found"
loop=$(losetup -f --show -r "$work/node.img"); partx -a "$loop"
trap 'partx -d "$loop" 2>/dev/null || true; losetup -d "$loop" 2>/dev/null || true; cleanup' EXIT
e2fsck -fn "${loop}p2" 2>&1 | tail -1
e2fsck -fn "${loop}p4" 2>&1 | tail -1
"$imgtool" status --server "http://127.0.0.1:$port"

step "done"
echo "master disk:   $work/master.img"
echo "image:         $work/images/compute   (imgtool inspect $work/images/compute)"
echo "boot tree:     $work/tree             (pxe-builder lookup --tree $work/tree --ip 172.20.0.9)"
echo "node console:  $work/console.log"
echo "cloned disk:   $work/node.img"
