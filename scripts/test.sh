#!/usr/bin/env bash
# The test command (README and .ci/run): installs what the tests need, checks formatting
# and lints, then runs every test of the workspace. Needs root (loop devices, mounts).
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
exit "$status"
