#!/usr/bin/env bash
# The test command (README and .ci/run): installs what the tests need, checks formatting
# and lints, then runs every test of the workspace. Needs root (loop devices, mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --workspace --no-fail-fast
