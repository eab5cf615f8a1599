#!/usr/bin/env bash
# Crash loop (issue 16, item 2): `tessera serve` on a simulated node whose MIG operations take
# 300 ms each is killed with SIGKILL at random moments, KILLS times (default 100), and restarted
# each time, while a client submits short jobs without pause and another changes GPU 1's layout
# back and forth (so kills land in the middle of reconfigurations too). Afterwards:
# - every job the client submitted exists exactly once and succeeded, and ran exactly once (each
#   job appends its token to a file);
# - no job is left queued or running, and no instance is held;
# - no two exclusive allocations of one instance ever overlapped in time (the store's history);
# - the journal has no open reconfiguration, and the daemon's instances are the node's (the
#   simulated driver's own state): nothing leaked, nothing forgotten;
# - GPU 2's fault (a fatal Xid raised before the first kill) and its drain are as they were.
# Usage: scripts/crash-loop.sh [KILLS]. Figures go to stdout; CRASH_LOOP_OUT keeps the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kills=${1:-100}
check_name=crash-loop
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
tessera_binary

W=${CRASH_LOOP_OUT:-$(mktemp -d /tmp/tessera-crash.XXXXXX)}
mkdir -p "$W"
daemon=
bg=()
failed=1
cleanup() {
    set +e
    for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    # Supervisors of jobs still running (a failed run) end with their jobs.
    pkill -f "$W/" 2>/dev/null
    sleep 0.5
    if [ "$failed" = 1 ]; then
        tail -40 "$W/tessera.log" >&2
        echo "crash-loop: FAILED; everything is in $W" >&2
    elif [ -z "${CRASH_LOOP_OUT:-}" ]; then
        rm -rf "$W" 2>/dev/null || { sleep 1; rm -rf "$W"; }
    fi
}
trap cleanup EXIT

T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
spec='3xH100-80GB,numa=1,cpus=16,mig-op-ms=300'
start_daemon() {
    "$TESSERA" serve --sim "$spec" --sim-state "$W/sim.json" --state-dir "$W/state" \
        --socket "$W/tessera.sock" >>"$W/tessera.log" 2>&1 &
    daemon=$!
    wait_for 30 T gpus >/dev/null 2>&1 || fail "the daemon did not come back after a kill (see $W/tessera.log)"
}
start_daemon
step "daemon up: $spec"

# GPU 2: a fatal Xid (needs a reset) and a drain, which every restart must keep.
"$TESSERA" mig --sim "$spec" --sim-state "$W/sim.json" xid 2 48 >/dev/null
T admin drain 2 --reason "crash-loop: keep me" >/dev/null
wait_for 20 sh -c "$TESSERA --socket $W/tessera.sock gpus -o json | grep -q 'unhealthy'" ||
    fail "GPU 2 is not fenced after Xid 48"
health_before=$(T gpus -o json | python3 -c 'import json,sys; g=json.load(sys.stdin)["gpus"][2]; print(g["health"].split(":")[0], g["drained"]["reason"])')
step "GPU 2: $health_before"

# The client: submits a job, and after a failed submit looks for its token before trying again
# (a kill may land after the daemon stored the job but before it answered).
: >"$W/submitted"
: >"$W/marks"
submitter() {
    local n=0
    while :; do
        n=$((n + 1))
        local token="t$n"
        local cmd="echo $token >> $W/marks; sleep 0.$((RANDOM % 5))"
        until T submit --profile 1g.10gb -- sh -c "$cmd" >/dev/null 2>&1; do
            sleep 0.2
            if T jobs -A -a -o json 2>/dev/null | grep -q "\"echo $token >>"; then break; fi
        done
        echo "$token" >>"$W/submitted"
        sleep 0.0$((RANDOM % 10))
    done
}
submitter &
bg+=($!)
# The admin: GPU 1 between two layouts (each change is four 300 ms MIG operations or more).
changer() {
    while :; do
        T admin layout 1 3g.40gb@0,3g.40gb@4 >/dev/null 2>&1 || true
        sleep 0.5
        T admin layout 1 4g.40gb@0,2g.20gb@4,1g.10gb@6 >/dev/null 2>&1 || true
        sleep 0.5
    done
}
changer &
bg+=($!)

t0=$SECONDS
for i in $(seq 1 "$kills"); do
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 2.0), 2))')"
    kill -9 "$daemon"
    wait "$daemon" 2>/dev/null || true
    start_daemon
    [ $((i % 10)) = 0 ] && step "$i kills ($((SECONDS - t0)) s)"
done
for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${bg[@]}" 2>/dev/null || true
bg=()
step "$kills kills in $((SECONDS - t0)) s; waiting for the queue to drain"

idle() { [ "$(T jobs -A -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')" = 0 ]; }
wait_for 180 idle || fail "jobs are still live 180 s after the last kill: $(T jobs -A)"
T jobs -A -a -o json >"$W/jobs.json"
T gpus -o json >"$W/gpus.json"
"$TESSERA" mig --sim "$spec" --sim-state "$W/sim.json" gpus -o json >"$W/node.json"

python3 - "$W" "$health_before" <<'PY' || fail "a promise was broken (above)"
import collections, json, sqlite3, sys
w, health_before = sys.argv[1], sys.argv[2]
submitted = open(f"{w}/submitted").read().split()
marks = collections.Counter(open(f"{w}/marks").read().split())
jobs = json.load(open(f"{w}/jobs.json"))["jobs"]
by_token = collections.defaultdict(list)
for j in jobs:
    text = json.dumps(j.get("command", j))
    for tok in text.replace('"', " ").replace(";", " ").split():
        if tok.startswith("t") and tok[1:].isdigit():
            by_token[tok].append(j)
            break
bad = []
for tok in submitted:
    js = by_token.get(tok, [])
    if len(js) != 1:
        bad.append(f"{tok}: {len(js)} jobs")
    elif js[0]["state"] != "succeeded":
        bad.append(f"{tok}: job {js[0]['id']} {js[0]['state']}")
    if marks[tok] != 1:
        bad.append(f"{tok}: ran {marks[tok]} times")
extra = [t for t in marks if t not in set(submitted) and t not in by_token]
if extra:
    bad.append(f"ran but never submitted: {extra[:5]}")
db = sqlite3.connect(f"file:{w}/state/tessera.db?mode=ro", uri=True)
opened = db.execute("SELECT count(*) FROM reconfigs WHERE state = 'open'").fetchone()[0]
if opened:
    bad.append(f"{opened} reconfiguration(s) still open in the journal")
reconfigs = dict(db.execute("SELECT outcome, count(*) FROM reconfigs GROUP BY outcome").fetchall())
live = db.execute("SELECT count(*) FROM allocations WHERE released_at IS NULL").fetchone()[0]
if live:
    bad.append(f"{live} allocation(s) never released")
rows = db.execute("SELECT gpu_uuid, profile_id, start, allocated_ms, released_at, job_id FROM allocations "
                  "WHERE exclusive = 1 ORDER BY gpu_uuid, start, allocated_ms").fetchall()
last = {}
for uuid, prof, start, a, r, job in rows:
    key = (uuid, start)
    if key in last and last[key][0] is not None and a < last[key][0]:
        bad.append(f"instance at {uuid}@{start} held by jobs {last[key][1]} and {job} at once")
    last[key] = (r, job)
gpus = json.load(open(f"{w}/gpus.json"))["gpus"]
node = json.load(open(f"{w}/node.json"))["gpus"]
for g, n in zip(gpus, node):
    held = [i for i in g["instances"] if i["jobs"]]
    if held:
        bad.append(f"GPU {g['index']}: instances still held: {held}")
    mine = sorted((i["profile_id"], i["start"]) for i in g["instances"])
    theirs = sorted((i["profile_id"], i["start"]) for i in n.get("instances", []))
    if g["mig"] and mine != theirs:
        bad.append(f"GPU {g['index']}: the daemon shows {mine}, the node has {theirs}")
g2 = gpus[2]
after = f"{g2['health'].split(':')[0]} {(g2.get('drained') or {}).get('reason')}"
if after != health_before:
    bad.append(f"GPU 2 was '{health_before}', is '{after}'")
print(f"crash-loop: {len(submitted)} jobs submitted, {sum(marks.values())} runs, "
      f"{len(rows)} exclusive allocations, reconfigurations {reconfigs}")
for b in bad[:20]:
    print("crash-loop: BROKEN:", b)
sys.exit(1 if bad else 0)
PY
step "kills that landed in a reconfiguration (resumed at restart): $(grep -c 'resumed reconfiguration' "$W/tessera.log" || true), abandoned: $(grep -c 'reconfiguration [0-9]* abandoned' "$W/tessera.log" || true); restarts that found jobs ended while down: $(grep -c 'ended while the daemon was down' "$W/tessera.log" || true)"
failed=0
step "all checks passed"
