#!/usr/bin/env bash
# Soak (issue 16, item 6): `tessera serve` on a simulated node runs continuous short jobs for
# SECONDS (default 3600) while the daemon prunes finished jobs as `[store]` says. Every 10 s it
# samples the daemon's RSS, its open file descriptors (/proc/PID/fd), the database's size (with
# its WAL), the last scheduling round's duration (`GET /v1/health`'s `last_round_us`), the jobs
# in the store and finished so far, and the load average; it writes them to a CSV and draws
# them (SVG, no plotting package needed: python3 alone). At the end it says whether each curve
# levelled off: the last third's maximum against the middle third's (growth over 25% and over a
# floor fails).
#
# Usage: scripts/soak.sh [SECONDS]. SOAK_OUT=DIR keeps the CSV, the plot and the log there
# (default: a temporary directory, printed); TESSERA=binary tests that binary (copied first, so a
# rebuild meanwhile does not change it). SOAK_KEEP_MS (default 600000: 10 min) and
# SOAK_PRUNE_MS (default 30000) set `store.keep_finished_ms` and `store.prune_interval_ms`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
seconds=${1:-3600}
check_name=soak
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
tessera_binary

W=${SOAK_OUT:-$(mktemp -d /tmp/tessera-soak.XXXXXX)}
mkdir -p "$W"
cp "$TESSERA" "$W/tessera"
TESSERA=$W/tessera
daemon=
bg=()
cleanup() {
    set +e
    for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    # Supervisors of the last jobs (each `sleep 0.2`) end on their own.
    sleep 1
    rm -rf "$W/state" "$W/output" 2>/dev/null
}
trap cleanup EXIT

T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
# `GET /v1/health` (jobs by state, the last round's duration), as root over the socket.
health() { curl -sf --max-time 10 --unix-socket "$W/tessera.sock" http://tessera/v1/health; }
spec='3xH100-80GB,numa=1,cpus=32,mem=256GiB'
cat >"$W/tessera.toml" <<EOF
[store]
keep_finished_ms = ${SOAK_KEEP_MS:-600000}
prune_interval_ms = ${SOAK_PRUNE_MS:-30000}
[jobs]
output_dir = "$W/output"
isolation = "off"
EOF
rm -rf "$W/state" "$W/output"
"$TESSERA" serve --config "$W/tessera.toml" --sim "$spec" --sim-state "$W/sim.json" --state-dir "$W/state" \
    --socket "$W/tessera.sock" >"$W/tessera.log" 2>&1 &
daemon=$!
wait_for 30 T gpus >/dev/null 2>&1 || fail "the daemon did not start (see $W/tessera.log)"
step "daemon $daemon up on $spec; $seconds s; output in $W"

# The load: keep about 60 short jobs queued (21 1g.10gb slices run at once), each `sleep 0.2`.
feeder() {
    while :; do
        local queued
        queued=$(health 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"].get("queued", 0))' 2>/dev/null || echo 999)
        if [ "$queued" -lt 60 ]; then
            for _ in $(seq 20); do T submit --profile 1g.10gb -- sleep 0.2 >/dev/null 2>&1 || true; done
        else
            sleep 0.5
        fi
    done
}
feeder &
bg+=($!)

csv=$W/soak.csv
echo "elapsed_s,rss_kib,fds,db_kib,wal_kib,round_us,jobs_in_store,finished,queued,running,load1" >"$csv"
sample() {
    local elapsed=$1 rss fds db wal health
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
    fds=$(find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    db=$(($(stat -c %s "$W/state/tessera.db") / 1024))
    wal=$(($(stat -c %s "$W/state/tessera.db-wal" 2>/dev/null || echo 0) / 1024))
    health=$(health 2>/dev/null || echo '{}')
    echo "$health" | python3 -c '
import json, sys
h = json.load(sys.stdin)
jobs = h.get("jobs", {})
done = sum(v for k, v in jobs.items() if k not in ("queued", "placing", "running"))
print(h.get("last_round_us", 0), sum(jobs.values()), done, jobs.get("queued", 0), jobs.get("running", 0))
' | {
        read -r round total done queued running
        echo "$elapsed,$rss,$fds,$db,$wal,$round,$total,$done,$queued,$running,$(cut -d' ' -f1 /proc/loadavg)"
    } >>"$csv"
}
start=$SECONDS
while [ $((SECONDS - start)) -lt "$seconds" ]; do
    kill -0 "$daemon" 2>/dev/null || fail "the daemon died (see $W/tessera.log)"
    sample $((SECONDS - start))
    sleep 10
done
sample $((SECONDS - start))
for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
bg=()

step "done: $(($(wc -l <"$csv") - 1)) samples"

# The plot and the verdict.
status=0
python3 - "$csv" "$W/soak.svg" <<'PY' || status=$?
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
t = [int(r["elapsed_s"]) / 60 for r in rows]
panels = [
    ("daemon RSS (MiB)", [int(r["rss_kib"]) / 1024 for r in rows], 4.0),
    ("open file descriptors", [int(r["fds"]) for r in rows], 8.0),
    ("database + WAL (MiB)", [(int(r["db_kib"]) + int(r["wal_kib"])) / 1024 for r in rows], 4.0),
    ("last round (ms)", [int(r["round_us"]) / 1000 for r in rows], 50.0),
    ("jobs in the store", [int(r["jobs_in_store"]) for r in rows], 2000.0),
    ("load average (1 min)", [float(r["load1"]) for r in rows], 99.0),
]
W, H, pad = 900, 190, 60
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H * len(panels) + 40}" font-family="sans-serif" font-size="12">',
       f'<rect width="100%" height="100%" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">tessera serve soak: {len(rows)} samples, {t[-1]:.0f} min</text>']
verdicts = []
for i, (name, ys, floor) in enumerate(panels):
    top = 40 + i * H
    lo, hi = 0, max(ys) * 1.1 or 1
    x = lambda v: pad + (v / (t[-1] or 1)) * (W - 2 * pad)
    y = lambda v: top + H - 30 - (v - lo) / (hi - lo) * (H - 50)
    svg.append(f'<rect x="{pad}" y="{top + 20}" width="{W - 2 * pad}" height="{H - 50}" fill="none" stroke="#999"/>')
    svg.append(f'<text x="{pad}" y="{top + 14}">{name}</text>')
    for frac in (0, 0.5, 1):
        v = lo + frac * (hi - lo)
        svg.append(f'<text x="{pad - 6}" y="{y(v) + 4}" text-anchor="end">{v:.4g}</text>')
    for m in range(0, int(t[-1]) + 1, 10):
        svg.append(f'<text x="{x(m)}" y="{top + H - 14}" text-anchor="middle">{m} min</text>')
    pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, ys))
    svg.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    n = len(ys)
    if n >= 9 and name != "load average (1 min)":
        mid, last = max(ys[n // 3: 2 * n // 3]), max(ys[2 * n // 3:])
        grew = last - mid
        ok = grew <= max(0.25 * mid, floor)
        verdicts.append((name, mid, last, ok))
svg.append("</svg>")
open(sys.argv[2], "w").write("\n".join(svg))
bad = False
for name, mid, last, ok in verdicts:
    print(f"soak: {name}: max {mid:.4g} in the middle third, {last:.4g} in the last: {'levels off' if ok else 'STILL GROWING'}")
    bad |= not ok
sys.exit(1 if bad else 0)
PY
step "CSV $csv, plot $W/soak.svg"
exit $status
