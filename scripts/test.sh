#!/usr/bin/env bash
# The test command (README and .ci/run): installs what the tests need, checks formatting
# and lints, then runs every test of the workspace as root (loop devices, mounts, netns,
# QEMU), then the whole suite again as an ordinary user (scripts/test-rootless.sh), where
# root-only tests must skip instead of failing (docs/TESTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The static agent for the PXE clone test (QEMU boots it as PID 1).
NETBOOT_AGENT=$(scripts/build-agent.sh)
export NETBOOT_AGENT
# Every fuzz target for a short fixed budget; found inputs land in fuzz/regressions/.
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" scripts/fuzz.sh
log=$(mktemp)
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (the last runner's own line is a doc-test binary
# with nothing in it).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
# The rootless pass (warm: ~1 min on 2 cores; the first run builds the workspace in the user's target dir); ROOTLESS=0 leaves it out.
if [ "${ROOTLESS:-1}" != 0 ]; then
  scripts/test-rootless.sh || status=$?
fi
exit "$status"
