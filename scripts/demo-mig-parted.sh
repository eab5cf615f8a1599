#!/usr/bin/env bash
# Tessera as NVIDIA's mig-parted: a simulated 2 x H100 node switches between two of NVIDIA's
# default configs (`all-balanced` and `all-3g.40gb`, from NVIDIA's config-default.yaml, which are
# also Tessera's built-ins) while a job holds one GPU instance. Tessera is called by mig-parted's
# name and command lines, with mig-parted's variables, as mig-manager and the systemd service call it.
#
#   ./scripts/demo-mig-parted.sh              # a fresh temporary node
#   PROFILE=dev ./scripts/demo-mig-parted.sh  # a debug build (quicker to build); default release
#
# Every step must do what it shows; the demo stops at the first that does not. Nothing needs a GPU.
set -Eeuo pipefail
trap 'echo "demo-mig-parted.sh: line $LINENO: \`$BASH_COMMAND\` failed" >&2' ERR
cd "$(dirname "$0")/.."

BIN=$(cargo build --profile "${PROFILE:-release}" --locked -q -p tessera --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\/tessera\)".*/\1/p' | tail -n 1)
[ -x "$BIN" ] || { echo "demo-mig-parted.sh: cargo built no tessera binary" >&2; exit 1; }
DIR=$(mktemp -d)
ln -s "$BIN" "$DIR/nvidia-mig-parted"
export PATH="$DIR:$PATH"
export TESSERA_SIM_STATE="$DIR/sim-node.json"
# NVIDIA's file, as mig-parted's systemd service and the GPU operator ship it.
export MIG_PARTED_CONFIG_FILE="$PWD/crates/tessera-migparted/data/nvidia-config-default.yaml"
JOB=
trap 'echo "demo-mig-parted.sh: line $LINENO: \`$BASH_COMMAND\` failed" >&2; [ -n "$JOB" ] && kill "$JOB" 2>/dev/null' ERR
trap '[ -n "$JOB" ] && kill "$JOB" 2>/dev/null; rm -rf "$DIR"' EXIT

say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() {
  printf '\033[1m$ %s\033[0m\n' "$*"
  "$@"
}
# GPU 0's GPU instances as `profile@start` (the layout the demo checks after every step).
layout0() {
  "$BIN" mig gpus -o json | python3 -c '
import json, sys
gpu = [g for g in json.load(sys.stdin)["gpus"] if g["index"] == 0][0]
print(" ".join(sorted("%s@%s" % (i["profile"], i["start"]) for i in gpu["instances"])))'
}

say "A simulated node: 2 x H100 80GB, MIG disabled"
"$BIN" --sim 2xH100-80GB,mig=off mig gpus >/dev/null
run nvidia-mig-parted assert --valid-config -c all-balanced

say "mig-manager's sequence for the label nvidia.com/mig.config=all-balanced"
MIG_PARTED_SELECTED_CONFIG=all-balanced
export MIG_PARTED_SELECTED_CONFIG
nvidia-mig-parted assert >/dev/null 2>&1 && { echo "already applied?" >&2; exit 1; }
run nvidia-mig-parted -d apply --mode-only
run nvidia-mig-parted -d assert --mode-only
run nvidia-mig-parted -d apply
run nvidia-mig-parted assert
run "$BIN" mig gpus

say "A job starts on GPU 0's 3g.40gb instance and keeps running"
sleep 600 &
JOB=$!
GI=$("$BIN" mig gpus -o json | python3 -c '
import json, sys
gpu = [g for g in json.load(sys.stdin)["gpus"] if g["index"] == 0][0]
print([i for i in gpu["instances"] if i["profile"] == "3g.40gb"][0]["gpu_instance_id"])')
run "$BIN" mig busy "0:$GI" --pid "$JOB"
HELD=$(layout0 | tr ' ' '\n' | grep '^3g.40gb@')
echo "the job (pid $JOB) holds $HELD on GPU 0"

say "Relabel to all-3g.40gb: mig-parted would clear GPU 0 and fail on the busy instance;"
say "Tessera keeps the job's instance where it is and changes only the rest"
export MIG_PARTED_SELECTED_CONFIG=all-3g.40gb
run nvidia-mig-parted -d apply
run nvidia-mig-parted assert
layout0 | grep -q "$HELD" || { echo "the job's instance moved" >&2; exit 1; }
kill -0 "$JOB"
echo "GPU 0 now: $(layout0); the job's $HELD is untouched and the job still runs"

say "And back to all-balanced, with the job still running"
export MIG_PARTED_SELECTED_CONFIG=all-balanced
run nvidia-mig-parted -d apply
run nvidia-mig-parted assert
layout0 | grep -q "$HELD" || { echo "the job's instance moved" >&2; exit 1; }
kill -0 "$JOB"
echo "GPU 0 now: $(layout0); the job's $HELD is still untouched"
run nvidia-mig-parted export

say "all-7g.80gb needs the job's instance: refused, naming the job, and nothing changes"
printf '\033[1m$ %s\033[0m\n' "nvidia-mig-parted apply -c all-7g.80gb"
BEFORE=$(layout0)
rc=0
nvidia-mig-parted apply -c all-7g.80gb 2>"$DIR/refusal" || rc=$?
cat "$DIR/refusal"
[ "$rc" -eq 1 ] || { echo "expected exit 1 (refused), got $rc" >&2; exit 1; }
grep -q "$JOB" "$DIR/refusal" || { echo "the refusal does not name pid $JOB" >&2; exit 1; }
[ "$(layout0)" = "$BEFORE" ] || { echo "GPU 0 changed although the apply was refused" >&2; exit 1; }
echo "(exit 1: refused, GPU 0 unchanged: $BEFORE)"

say "The job ends; now the whole GPU may change"
kill "$JOB"
wait "$JOB" 2>/dev/null || true
run "$BIN" mig idle "0:$GI"
JOB=
run nvidia-mig-parted apply -c all-7g.80gb
run nvidia-mig-parted assert -c all-7g.80gb
