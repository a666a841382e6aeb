#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a short fixed budget and fails when one
# crashes, aborts, leaks past the RSS limit or hangs. Found inputs are copied into
# fuzz/regressions/<target>/ (commit them: the ordinary `cargo test` replays them).
# See docs/FUZZING.md.
#
#   FUZZ_SECONDS=20   seconds per target (default 20)
#   FUZZ_TARGETS="…"  targets to run (default: all)
#   FUZZ_TARGET_DIR   build directory (default: ~/.cache/netboot-fuzz-target)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz passes -Zsanitizer and other unstable flags; this lets the stable toolchain
# accept them (the project pins no nightly).
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-20}
targets=${FUZZ_TARGETS:-gpt_mbr ext_probe fat_probe xfs_probe btrfs_probe lvm_metadata image_load upload_wire upload_manifest range_answer agent_config cluster_toml plain_toml clone_plan boot_files seen_answer}
# Every input is cut to this length by the target bodies anyway (imgtool::fuzzing::MAX_INPUT).
max_len=65536

# libfuzzer-sys compiles libFuzzer (C++) from source.
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz: installing g++"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi

cd fuzz
# Outside the checkout, so a fresh clone on the same machine (CI) rebuilds only our
# crates, not every dependency with sanitizer instrumentation.
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/netboot-fuzz-target}
flags=(--release --debug-assertions --target-dir "$target_dir")
cargo fuzz build "${flags[@]}" >/dev/null

failed=()
for t in $targets; do
    mkdir -p "corpus/$t" "regressions/$t"
    work=$(mktemp -d)
    artifacts=$(mktemp -d)
    log=$(mktemp)
    # New inputs go to the first directory (scratch); the kept corpus and the
    # regressions are read only, and every one of them is run first.
    status=0
    cargo fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' |
        awk '{s+=$1} END {print s+0}')
    found=$(find "$artifacts" -type f | wc -l)
    if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
        echo "fuzz: $t FAILED after $runs runs (exit $status); last lines:"
        grep -E 'ERROR|panicked|SUMMARY|Test unit written|==[0-9]+==' "$log" | tail -n 15 || tail -n 30 "$log"
        for a in "$artifacts"/*; do
            [ -f "$a" ] || continue
            keep="regressions/$t/$(basename "$a")"
            cp "$a" "$keep"
            echo "fuzz: $t: kept $keep"
        done
        failed+=("$t")
    else
        echo "fuzz: $t ok, $runs runs in ${seconds}s"
    fi
    rm -rf "$work" "$artifacts" "$log"
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: failed: ${failed[*]} (inputs kept under fuzz/regressions/; see docs/FUZZING.md)"
    exit 1
fi
