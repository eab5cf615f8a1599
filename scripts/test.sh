#!/usr/bin/env bash
# The whole test suite: the README's test command, and what CI (.ci/run) runs.
# Needs only the Rust toolchain; the simulated GPU node stands in for real GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
