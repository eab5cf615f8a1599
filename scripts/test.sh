#!/usr/bin/env bash
# The whole test suite: the README's test command, and what CI (.ci/run) runs.
# Needs only the Rust toolchain; the simulated GPU node stands in for real GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
# Plots (tessera sim, SVG and PNG) need a TrueType font; the simulator looks for DejaVu first. Install
# Debian's fonts-dejavu-core when no usable font is there and we may (root, apt-get present).
font_found=
for f in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf \
    /usr/share/fonts/truetype/freefont/FreeSans.ttf "${TESSERA_FONT:-}"; do
    [ -n "$f" ] && [ -f "$f" ] && font_found=1
done
if [ -z "$font_found" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing fonts-dejavu-core (plots need a font)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null; }
    else
        echo "test.sh: no TrueType font found; install fonts-dejavu-core or set TESSERA_FONT for the plot tests" >&2
    fi
fi
# The NVML backend's tests load the stand-in libnvidia-ml (a cdylib): build it first.
cargo build --locked -p tessera-nvml-standin
cargo test --workspace --locked "$@"
# The Kubernetes manifests against the 1.34-1.37 schemas, and their ConfigMaps with Tessera's parsers.
scripts/kube-validate.sh
# The mig-parted demo checks every step it shows (a node switching between NVIDIA's configs
# while a job holds an instance); its output is shown only when a step fails.
demo_log=$(mktemp)
PROFILE=dev scripts/demo-mig-parted.sh >"$demo_log" 2>&1 ||
    { cat "$demo_log" >&2; echo "test.sh: scripts/demo-mig-parted.sh failed" >&2; exit 1; }
rm -f "$demo_log"
echo "demo-mig-parted: ok"
# Under a real Slurm (installed and started by the script; needs root, skipped otherwise).
slurm_log=$(mktemp)
scripts/slurm-test.sh >"$slurm_log" 2>&1 ||
    { cat "$slurm_log" >&2; echo "test.sh: scripts/slurm-test.sh failed" >&2; exit 1; }
grep -E "SKIPPED|all scenarios passed" "$slurm_log" || true
rm -f "$slurm_log"
# The Slurm agent killed with SIGKILL at random while it changes layouts for pending jobs: the
# short form (5 kills; `scripts/slurm-crash-loop.sh` runs 100, docs/reliability.md).
slurm_crash_log=$(mktemp)
scripts/slurm-crash-loop.sh 5 >"$slurm_crash_log" 2>&1 ||
    { cat "$slurm_crash_log" >&2; echo "test.sh: scripts/slurm-crash-loop.sh failed" >&2; exit 1; }
grep -E "SKIPPED|all checks passed" "$slurm_crash_log" || true
rm -f "$slurm_crash_log"
# GET /metrics scraped by a real Prometheus (installed by the script; skipped where it cannot be).
prom_log=$(mktemp)
scripts/prometheus-test.sh >"$prom_log" 2>&1 ||
    { cat "$prom_log" >&2; echo "test.sh: scripts/prometheus-test.sh failed" >&2; exit 1; }
grep -E "SKIPPED|all checks passed" "$prom_log" || true
rm -f "$prom_log"
# The daemon killed with SIGKILL at random moments while jobs and reconfigurations run: the short
# form (10 kills; `scripts/crash-loop.sh 100` is the full run, docs/reliability.md).
crash_log=$(mktemp)
scripts/crash-loop.sh 10 >"$crash_log" 2>&1 ||
    { cat "$crash_log" >&2; echo "test.sh: scripts/crash-loop.sh failed" >&2; exit 1; }
grep -E "jobs submitted|all checks passed" "$crash_log" || true
rm -f "$crash_log"
# The API fuzzed from its OpenAPI document by schemathesis (PyPI, in a cached venv), as an admin and
# as a user; 25 examples per operation here (API_FUZZ_EXAMPLES=100 for the full run).
api_log=$(mktemp)
API_FUZZ_EXAMPLES=${API_FUZZ_EXAMPLES:-25} scripts/api-fuzz-test.sh >"$api_log" 2>&1 ||
    { cat "$api_log" >&2; echo "test.sh: scripts/api-fuzz-test.sh failed" >&2; exit 1; }
grep -E "SKIPPED|all checks passed" "$api_log" || true
rm -f "$api_log"
# The web view in headless Chromium, and `tessera top` under tmux (each installed by its script when
# missing; skipped where they cannot be).
for check in web-test top-test; do
    check_log=$(mktemp)
    "scripts/$check.sh" >"$check_log" 2>&1 ||
        { cat "$check_log" >&2; echo "test.sh: scripts/$check.sh failed" >&2; exit 1; }
    grep -E "SKIPPED|all checks passed" "$check_log" || true
    rm -f "$check_log"
done
# The Debian package: built from the dev build above, installed into an empty root, its unit verified.
scripts/package-test.sh
