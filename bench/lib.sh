# Shared by the bench scripts (sourced, not run): loop devices recorded in a file (attach
# runs in $(...) subshells) and detached with their partitions on exit, cold-cache drops
# and timing. A script calls `detach_all` from its own EXIT trap.
loopfile=$(mktemp)
detach_all() {
  while read -r l; do partx -d "$l" 2>/dev/null || true; losetup -d "$l" 2>/dev/null || true; done < "$loopfile"
  rm -f "$loopfile"
}
attach() { local l; l=$(losetup -f --show --direct-io=on "$@"); echo "$l" >> "$loopfile"; partx -a "$l" 2>/dev/null || true; echo "$l"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
size() { stat -c %s "$1"; }
# Sets $agent and $imgtool: the agent exactly as the initrd carries it (static, release)
# and imgtool built the same way (it shares the agent's compiled dependencies), or those
# of another build in $BIN_DIR (before/after comparisons).
static_bins() {
  if [ -n "${BIN_DIR:-}" ]; then
    agent=$(realpath "$BIN_DIR/initrd-agent"); imgtool=$(realpath "$BIN_DIR/imgtool")
  else
    agent=$(scripts/build-agent.sh)
    RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" \
      cargo build --release -q -p imgtool --target x86_64-unknown-linux-gnu
    imgtool=$PWD/target/x86_64-unknown-linux-gnu/release/imgtool
  fi
}
