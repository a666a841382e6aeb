#!/usr/bin/env bash
# The rootless pass: `cargo test --workspace` as an ordinary user, as a developer without
# root runs it. Tests that need root (loop devices, mounts, network namespaces, QEMU boots)
# skip with "skipped: needs root (...)"; everything else must pass. Run it as root (CI,
# scripts/test.sh); it prepares the user and then drops to it:
#
#   scripts/test-rootless.sh            # user `builder` (created if missing)
#   ROOTLESS_USER=alice scripts/test-rootless.sh
#
# The user gets root's Rust toolchain as hard links in its home (no copy, no change to
# /root's permissions; refreshed when root's toolchain changes) and a copy of root's crate
# registry (cargo runs offline), builds into its own target dir (~/target-netboot, kept
# between runs) and reads this checkout in place. Ends with one line:
#   rootless: N passed, F failed, S skipped (needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
user=${ROOTLESS_USER:-builder}
[ "$(id -u)" = 0 ] || { echo "test-rootless.sh: run it as root (it drops to user $user)" >&2; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH"

id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")

# Root's active toolchain, hard-linked into the user's home (same file system), else copied.
sysroot=$(rustc --print sysroot)
tc="$home/.rust-toolchain/$(basename "$sysroot")"
if [ ! "$tc/bin/rustc" -ef "$sysroot/bin/rustc" ] && ! cmp -s "$tc/bin/rustc" "$sysroot/bin/rustc"; then
  rm -rf "$tc"
  mkdir -p "$(dirname "$tc")"
  cp -al "$sysroot" "$tc" 2>/dev/null || cp -a "$sysroot" "$tc"
fi

# The crates this lock file needs, from root's registry: cargo then runs offline.
cargo fetch --locked --quiet
mkdir -p "$home/.cargo/registry"
for d in index cache; do
  [ -d "$HOME/.cargo/registry/$d" ] && cp -a -u "$HOME/.cargo/registry/$d" "$home/.cargo/registry/"
done
chown -R "$user:$group" "$home/.cargo"

log=$(mktemp)
chmod 644 "$log"
status=0
# A clean environment: what an ordinary login has (no /usr/sbin on PATH, none of root's
# variables such as NETBOOT_AGENT).
runuser -u "$user" -- env -i \
  HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 \
  PATH="$tc/bin:/usr/local/bin:/usr/bin:/bin" \
  CARGO_HOME="$home/.cargo" CARGO_TARGET_DIR="$home/target-netboot" CARGO_NET_OFFLINE=true \
  bash -c 'cd "$1" && cargo test --workspace --locked --no-fail-fast -- --show-output' _ "$repo" \
  2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } /skipped: needs root/ { s++ }
     END { printf "rootless: %d passed, %d failed, %d skipped (needs root)\n", p - s, f, s }' "$log"
rm -f "$log"
[ "$status" = 0 ] || echo "rootless: FAILED (cargo test exited $status; see above)"
exit "$status"
