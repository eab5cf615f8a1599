#!/usr/bin/env bash
# Tessera's main job on the embedded default, a simulated DGX-H100-like node (8x H100 80GB,
# 2 NUMA nodes): look at the node, plan layouts without touching it, apply a mig-parted config
# incrementally, and watch a busy instance be left alone. Nothing here needs a GPU.
#
#   ./scripts/demo.sh                   # uses a fresh temporary state file
#   KEEP_STATE=path ./scripts/demo.sh   # keeps the simulated node's state in `path`
#   PROFILE=dev ./scripts/demo.sh       # a debug build (quicker to build); default release
#
# The binary is wherever cargo puts it (CARGO_TARGET_DIR and cargo's config are honoured).
# Every step must do what it shows: the demo stops at the first one that does not (the two
# refusals it shows on purpose must be refusals).
set -Eeuo pipefail
trap 'echo "demo.sh: line $LINENO: \`$BASH_COMMAND\` failed" >&2' ERR
cd "$(dirname "$0")/.."

BIN=$(cargo build --profile "${PROFILE:-release}" --locked -q -p tessera --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\/tessera\)".*/\1/p' | tail -n 1)
[ -x "$BIN" ] || { echo "demo.sh: cargo built no tessera binary" >&2; exit 1; }
STATE="${KEEP_STATE:-$(mktemp -d)/sim-node.json}"
export TESSERA_SIM_STATE="$STATE"

run() {
  printf '\n\033[1m$ tessera %s\033[0m\n' "$*"
  "$BIN" "$@"
}

# A step that is refused on purpose: it must exit 1 (a request that cannot be met).
refused() {
  printf '\n\033[1m$ tessera %s\033[0m\n' "$*"
  local rc=0
  "$BIN" "$@" || rc=$?
  if [ "$rc" -ne 1 ]; then
    echo "demo.sh: expected \`tessera $*\` to be refused (exit 1), it exited $rc" >&2
    exit 1
  fi
  echo "(exit 1: refused, as it should be)"
}

echo "Simulated node state: $STATE"
run mig profiles --gpu H100-80GB
run mig plan --gpu H100-80GB 3g.40gb 2g.20gb 1g.10gb
refused mig plan --gpu A100-40GB 4g.20gb 4g.20gb
run mig plan --gpu H100-80GB --per-gpu-numa 3g.40gb
run mig apply -f examples/mig-config.yaml -c inference --dry-run
run mig apply -f examples/mig-config.yaml -c inference
run mig gpus
# A job starts on GPU 0's GPU instance 13 (the 1g.10gb at unit 6) and on GPU 1's instance 7 (unit 0).
run mig busy 0:13 --pid 4242
run mig busy 1:7 --pid 4343
# Growing GPUs 0-3 to 3x1g + 4g: GPU 0 keeps its busy 1g@6; GPU 1's busy 1g@0 is in the way.
refused mig apply -f examples/mig-config.yaml -c inference-plus-training --dry-run
run mig idle 1:7
run mig apply -f examples/mig-config.yaml -c inference-plus-training
run mig assert -f examples/mig-config.yaml -c inference-plus-training
run mig export

echo
echo "== The daemon: people submit work, Tessera partitions, places, runs and finishes it =="
DSTATE="$(dirname "$STATE")/daemon"
export TESSERA_SOCKET="$DSTATE/tessera.sock"
mkdir -p "$DSTATE"
printf '[scheduler]\ntick_ms = 100\n' > "$DSTATE/tessera.toml"
# Its own simulated node (2 GPUs), apart from the 8-GPU one above.
"$BIN" serve --sim 2xH100-80GB,numa=2 --sim-state "$DSTATE/sim-node.json" --state-dir "$DSTATE" \
  --config "$DSTATE/tessera.toml" 2>"$DSTATE/serve.log" &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null' EXIT
for _ in $(seq 100); do [ -S "$TESSERA_SOCKET" ] && break; sleep 0.1; done
if [ ! -S "$TESSERA_SOCKET" ]; then
  echo "demo.sh: the daemon did not start; its log:" >&2
  cat "$DSTATE/serve.log" >&2
  exit 1
fi
J1=$("$BIN" submit --profile 3g.40gb --cpus 2 -- sh -c 'echo "training on $CUDA_VISIBLE_DEVICES (rank $RANK)"; sleep 2')
J2=$("$BIN" submit --gpu-mem 10GB -- sh -c 'echo "inference on $CUDA_VISIBLE_DEVICES"; sleep 1')
J3=$("$BIN" submit --profile 2g.20gb --ranks 2 --gpu-numa-local -- sh -c 'echo "rank $RANK of $WORLD_SIZE on $CUDA_VISIBLE_DEVICES"')
J4=$("$BIN" submit --profile 1g.10gb --mps 50% -- sh -c 'echo "MPS client at $CUDA_MPS_ACTIVE_THREAD_PERCENTAGE%"')
sleep 0.5
run jobs
run gpus
run wait "$J1"
run logs "$J1"
run logs "$J3" --rank 1
run logs "$J3" --prefix
run job "$J2"
run jobs --all
kill "$DAEMON"
wait "$DAEMON"
trap - EXIT
