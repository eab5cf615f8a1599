#!/usr/bin/env bash
# Run Tessera's fuzz targets (fuzz/, cargo-fuzz over crates/tessera-fuzz) one after another, each
# for SECONDS_PER_TARGET (default 60), and print a table: target, executions, exec/s, crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Each target starts from its seed corpus fuzz/corpus/<target>/ (new inputs libFuzzer finds go to
# a scratch corpus under fuzz/target/, not into the repository). A crash keeps its input in
# fuzz/artifacts/<target>/ (libFuzzer's artifact, printed below the table): fix the parser, copy
# the input to fuzz/regressions/<target>/, and `cargo test -p tessera-fuzz` replays it on stable.
# Needs nightly (`cargo +nightly`) and cargo-fuzz; without them (and no way to install
# cargo-fuzz) it says "fuzz: SKIPPED (...)" and exits 0. Exits 1 when a target crashed.
# Environment: FUZZ_MAX_LEN (default 16384), FUZZ_RSS_MB (default 2048), FUZZ_JOBS (libFuzzer
# -fork workers; default 1, one core), FUZZ_LOG_DIR (default fuzz/target/logs),
# FUZZ_DEBUG_ASSERTIONS=0 (build without debug assertions and overflow checks: faster, finds less).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

seconds=${1:-60}
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -lt 1 ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
max_len=${FUZZ_MAX_LEN:-16384}
rss_mb=${FUZZ_RSS_MB:-2048}
jobs=${FUZZ_JOBS:-1}
build_flags=(-O --debug-assertions)
if [[ ${FUZZ_DEBUG_ASSERTIONS:-1} == 0 ]]; then build_flags=(-O); fi
log_dir=${FUZZ_LOG_DIR:-$root/fuzz/target/logs}

skip() {
    echo "fuzz: SKIPPED ($1)"
    exit 0
}

command -v cargo >/dev/null || skip "no cargo"
cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain (rustup toolchain install nightly)"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz missing; installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked >&2 || skip "cargo-fuzz missing and cannot be installed"
fi

all_targets=$(cargo +nightly fuzz list)
if [[ $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        grep -qx "$t" <<<"$all_targets" || { echo "fuzz: no target '$t' (targets: $(echo $all_targets))" >&2; exit 2; }
    done
else
    mapfile -t targets <<<"$all_targets"
fi

mkdir -p "$log_dir"
echo "fuzz: building the targets (cargo fuzz build ${build_flags[*]}: release, ASan)" >&2
if ! cargo +nightly fuzz build "${build_flags[@]}" >"$log_dir/build.log" 2>&1; then
    tail -30 "$log_dir/build.log" >&2
    echo "fuzz: the build failed (log: $log_dir/build.log)" >&2
    exit 1
fi

rows=()
crashed=0
for t in "${targets[@]}"; do
    scratch="$root/fuzz/target/corpus/$t"
    mkdir -p "$scratch" "$root/fuzz/artifacts/$t"
    log="$log_dir/$t.log"
    echo "fuzz: $t for ${seconds}s (log: $log)" >&2
    extra=()
    if [[ $jobs -gt 1 ]]; then extra=(-fork="$jobs" -ignore_crashes=0); fi
    set +e
    cargo +nightly fuzz run "${build_flags[@]}" "$t" "$scratch" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -max_len="$max_len" -timeout=10 \
        -print_final_stats=1 "${extra[@]}" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | tail -1 | awk '{print $2}')
    rate=$(grep -E '^stat::average_exec_per_sec:' "$log" | tail -1 | awk '{print $2}')
    if [[ -z $execs ]]; then
        # -fork mode prints no final stats: take the last status line's total.
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
        rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | awk '{print $2}')
    fi
    artifacts=$(grep -oE 'Test unit written to [^ ]+' "$log" | awk '{print $5}' | sort -u || true)
    crashes=$(grep -c . <<<"$artifacts" || true)
    if [[ $rc -ne 0 && $crashes -eq 0 ]]; then crashes="error(rc=$rc)"; fi
    if [[ $crashes != 0 ]]; then
        crashed=1
        for a in $artifacts; do echo "fuzz: $t: crash input kept at $a" >&2; done
        grep -m1 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" >&2 || true
    fi
    rows+=("$t ${execs:-0} ${rate:-0} $crashes")
done

printf '\n%-18s %14s %10s %8s\n' target executions exec/s crashes
for r in "${rows[@]}"; do
    # shellcheck disable=SC2086
    printf '%-18s %14s %10s %8s\n' $r
done
exit $crashed
