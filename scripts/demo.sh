#!/usr/bin/env bash
# Tessera's main job on the embedded default, a simulated DGX-H100-like node (8x H100 80GB,
# 2 NUMA nodes): look at the node, plan layouts without touching it, apply a mig-parted config
# incrementally, and watch a busy instance be left alone. Nothing here needs a GPU.
#
#   ./scripts/demo.sh            # uses a fresh temporary state file
#   KEEP_STATE=path ./scripts/demo.sh   # keeps the simulated node's state in `path`
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -q -p tessera || exit 1
BIN="$PWD/target/release/tessera"
STATE="${KEEP_STATE:-$(mktemp -d)/sim-node.json}"
export TESSERA_SIM_STATE="$STATE"

run() {
  printf '\n\033[1m$ tessera %s\033[0m\n' "$*"
  "$BIN" "$@"
  local rc=$?
  [ $rc -eq 0 ] || printf '(exit %d)\n' "$rc"
}

echo "Simulated node state: $STATE"
run mig profiles --gpu H100-80GB
run mig plan --gpu H100-80GB 3g.40gb 2g.20gb 1g.10gb
run mig plan --gpu A100-40GB 4g.20gb 4g.20gb
run mig plan --gpu H100-80GB --per-gpu-numa 3g.40gb
run mig apply -f examples/mig-config.yaml -c inference --dry-run
run mig apply -f examples/mig-config.yaml -c inference
run mig gpus
# A job starts on GPU 0's GPU instance 13 (the 1g.10gb at unit 6) and on GPU 1's instance 7 (unit 0).
run mig busy 0:13 --pid 4242
run mig busy 1:7 --pid 4343
# Growing GPUs 0-3 to 3x1g + 4g: GPU 0 keeps its busy 1g@6; GPU 1's busy 1g@0 is in the way.
run mig apply -f examples/mig-config.yaml -c inference-plus-training --dry-run
run mig idle 1:7
run mig apply -f examples/mig-config.yaml -c inference-plus-training
run mig assert -f examples/mig-config.yaml -c inference-plus-training
run mig gpus
run mig export
