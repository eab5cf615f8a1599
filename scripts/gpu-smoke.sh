#!/usr/bin/env bash
# Read-only smoke test on a machine with a real NVIDIA GPU: which GPUs and driver, the MIG
# mode, and the GPU-instance profiles and placements as the driver reports them, compared with
# Tessera's catalog. It NEVER changes the MIG mode, NEVER creates or destroys instances and
# NEVER resets a GPU: every command below only reads.
#
#   ./scripts/gpu-smoke.sh [OUTPUT]     # default: docs/hardware/<gpu>-<driver>-<date>.txt
#
# Commit the output under docs/hardware/ (which GPU, which driver, which date).
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-smoke: nvidia-smi not found: this machine has no NVIDIA driver" >&2
  exit 2
fi
BIN="${TESSERA_BIN:-target/release/tessera}"
if [ ! -x "$BIN" ]; then
  cargo build --release --locked -q -p tessera || { echo "gpu-smoke: cannot build tessera" >&2; exit 2; }
fi

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr ' ' '-' )
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1)
OUT="${1:-docs/hardware/${gpu}-${driver}-$(date -u +%Y-%m-%d).txt}"
mkdir -p "$(dirname "$OUT")"

section() { printf '\n## %s\n$ %s\n' "$1" "$2"; }
{
  echo "# Tessera GPU smoke test (read-only)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  kernel: $(uname -r)  tessera: $("$BIN" --version)"
  section "GPUs" "nvidia-smi --query-gpu=..."
  nvidia-smi --query-gpu=index,name,pci.bus_id,pci.device_id,driver_version,mig.mode.current,mig.mode.pending,memory.total --format=csv
  section "Devices" "nvidia-smi -L"; nvidia-smi -L
  section "GPU-instance profiles" "nvidia-smi mig -lgip"; nvidia-smi mig -lgip 2>&1
  section "Possible placements" "nvidia-smi mig -lgipp"; nvidia-smi mig -lgipp 2>&1
  section "Existing GPU instances" "nvidia-smi mig -lgi"; nvidia-smi mig -lgi 2>&1
  section "Topology" "nvidia-smi topo -m"; nvidia-smi topo -m 2>&1
  section "Tessera's view through NVML" "tessera --backend nvml mig gpus"; "$BIN" --backend nvml mig gpus 2>&1
  section "Driver profiles against the catalog" "tessera --backend nvml mig profiles"; "$BIN" --backend nvml mig profiles 2>&1
  section "The same, as JSON" "tessera --backend nvml mig profiles -o json"; "$BIN" --backend nvml mig profiles -o json 2>&1
} | tee "$OUT"
echo "gpu-smoke: wrote $OUT" >&2
