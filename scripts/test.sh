#!/usr/bin/env bash
# The whole test suite: the README's test command, and what CI (.ci/run) runs.
# Needs only the Rust toolchain; the simulated GPU node stands in for real GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The NVML backend's tests load the stand-in libnvidia-ml (a cdylib): build it first.
cargo build --locked -p tessera-nvml-standin
cargo test --workspace --locked "$@"
