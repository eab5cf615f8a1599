#!/usr/bin/env bash
# Crash loop of the Slurm node agent (issue 16, item 2): under the real one-node Slurm of
# scripts/slurm-test.sh (scripts/lib/slurm-cluster.sh), with MIG operations of 300 ms each,
# `tessera slurm agent` is killed with SIGKILL at random moments KILLS times (default 100) and
# started again each time, while a client submits waves of short jobs for profiles the layout
# has and lacks (4g.40gb, and more 2g.20gb or 3g.40gb than there are), so kills land while jobs
# run, while the agent drains the node, changes a layout, writes the GRES files or waits for
# Slurm to restart. Kills come 0.2 to 6 s apart: one change (drain, layout, GRES, a restart of
# Slurm of about 4 s) takes longer than the shorter gaps, so many kills interrupt one and the
# next agent must finish it. Only the agent is killed (a restart of Slurm it began runs to its
# end, as one that systemd began would). Afterwards:
# - every job the client submitted exists once, COMPLETED, and ran exactly once (each appends
#   its token to a file);
# - the node is not drained (the agent finished every change a kill interrupted), and Slurm's
#   Gres= and the GRES files are what the daemon's layout gives (`tessera slurm gres`), with no
#   restart still owed;
# - no instance is held, no two jobs' holds of one instance overlapped (the store's history),
#   and the daemon's instances are the simulated node's: nothing leaked or forgotten;
# - the journal has no open reconfiguration.
# Needs root (as slurm-test.sh); says SKIPPED and exits 0 where it cannot run.
# Usage: scripts/slurm-crash-loop.sh [KILLS]. Figures go to stdout; SLURM_KEEP=1 keeps the work
# directory (it is kept anyway when a check fails).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kills=${1:-${KILLS:-100}}
check_name=slurm-crash-loop
export SLURM_SIM_EXTRA=mig-op-ms=300

agent=
submitter=
slurm_cleanup_extra() {
    [ -n "$submitter" ] && kill "$submitter" 2>/dev/null
    [ -n "$agent" ] && kill "$agent" 2>/dev/null
    # Restarts of Slurm that killed agents left queued must not start it again after the cleanup.
    for p in $(pgrep -f "$W/restart-slurm.sh"); do kill "$p" 2>/dev/null; done
    timeout 30 flock "$W/restart.lock" true
    true
}
# shellcheck source=scripts/lib/slurm-cluster.sh
source "$repo/scripts/lib/slurm-cluster.sh"

start_agent() {
    "$TESSERA" slurm agent --config "$W/tessera.toml" --socket "$W/tessera.sock" >>"$W/log/agent.log" 2>&1 &
    agent=$!
}
start_agent
step "agent started; $kills kills to come"

# The client: waves of jobs, each appending its token to marks; a wave is waited for (every job
# ended) before the next, so changes that alter the node's slice count get their turn. The
# requests ask for more slices of a profile than the layout may have (two 3g.40gb, two 2g.20gb,
# four 1g.10gb, a 4g.40gb), so the layout goes back and forth. A job still pending after
# 300 s is lost work: the run fails.
: >"$W/out/marks"
: >"$W/submitted"
: >"$W/ended"
client() {
    local n=0
    local profiles=(1g.10gb:1 1g.10gb:4 2g.20gb:1 2g.20gb:2 3g.40gb:1 3g.40gb:2 4g.40gb:1)
    while [ ! -e "$W/stop" ]; do
        local wave=()
        for _ in 1 2 3 4; do
            n=$((n + 1))
            local p=${profiles[$((RANDOM % ${#profiles[@]}))]}
            local token="t$n"
            local id=
            # sbatch may fail while slurmctld restarts; a failed submit looks for its job first.
            until id=$(sbatch --parsable -J "$token" --gres=gpu:$p -o /dev/null \
                --wrap "echo $token >> $W/out/marks; sleep 0.$((RANDOM % 9 + 1))" 2>>"$W/log/client.log"); do
                sleep 0.5
                id=$(squeue -h -n "$token" -o %i 2>/dev/null | head -1) && [ -n "$id" ] && break
            done
            echo "$token $id $p" >>"$W/submitted"
            wave+=("$token:$id")
        done
        for tj in "${wave[@]}"; do
            local id=${tj#*:}
            local since=$SECONDS
            # scontrol fails while slurmctld restarts: ask again.
            until s=$(scontrol show job -o "$id" 2>/dev/null | tr ' ' '\n' | sed -n 's/^JobState=//p') &&
                case "$s" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED) true ;; *) false ;; esac; do
                [ $((SECONDS - since)) -gt 300 ] && { echo "${tj%%:*} $id STUCK-$s ?" >>"$W/ended"; continue 2; }
                sleep 0.3
            done
            local requeued
            requeued=$(scontrol show job -o "$id" 2>/dev/null | tr ' ' '\n' | sed -n 's/^Restarts=//p')
            echo "${tj%%:*} $id $s ${requeued:-?}" >>"$W/ended"
        done
    done
}
client &
submitter=$!

t0=$SECONDS
for i in $(seq 1 "$kills"); do
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 6.0), 2))')"
    kill -9 "$agent" 2>/dev/null || true
    wait "$agent" 2>/dev/null || true
    start_agent
    [ $((i % 10)) = 0 ] && step "$i kills ($((SECONDS - t0)) s, $(wc -l <"$W/ended") jobs ended)"
done
touch "$W/stop"
step "$kills kills in $((SECONDS - t0)) s; the client finishes its wave"
wait_for 600 sh -c "! kill -0 $submitter 2>/dev/null" || fail "the client's last wave did not end in 600 s"
submitter=
# The agent finishes what the last kill interrupted: the node resumed, nothing owed, the GRES
# what the layout gives.
settled() {
    ! sinfo -h -n "$H" -o %T | grep -q drain && [ ! -e "$W/lib/restart-pending" ] &&
        "$TESSERA" slurm gres --config "$W/tessera.toml" --socket "$W/tessera.sock" 2>/dev/null |
        cmp -s - "$W/tessera-gres.conf"
}
wait_for 120 settled || fail "node still drained, a restart owed or GRES out of step: $(sinfo -h -N -n "$H" -o '%T %E')"
kill "$agent" 2>/dev/null || true
wait "$agent" 2>/dev/null || true
agent=

T jobs -A -a -o json >"$W/jobs.json"
T gpus -o json >"$W/gpus.json"
"$TESSERA" mig --backend sim --sim-state "$W/sim.json" gpus -o json >"$W/node.json"
"$TESSERA" slurm gres --config "$W/tessera.toml" --socket "$W/tessera.sock" >"$W/gres-now.conf"
scontrol show node -o "$H" >"$W/node-slurm.txt"

python3 - "$W" <<'PY' || fail "a promise was broken (above)"
import collections, json, re, sqlite3, sys
w = sys.argv[1]
submitted = [l.split() for l in open(f"{w}/submitted")]
ended = {l.split()[0]: l.split() for l in open(f"{w}/ended")}
marks = collections.Counter(open(f"{w}/out/marks").read().split())
bad = []
ids = collections.Counter(s[1] for s in submitted)
for token, jid, prof in submitted:
    if ids[jid] != 1:
        bad.append(f"{token}: Slurm job {jid} stands for {ids[jid]} submissions")
    e = ended.get(token)
    if not e or e[2] != "COMPLETED":
        bad.append(f"{token} (job {jid}, {prof}): {e[2] if e else 'never ended'}")
    elif e[3] not in ("0", "?"):
        bad.append(f"{token} (job {jid}): requeued {e[3]} times")
    if marks[token] != 1:
        bad.append(f"{token} (job {jid}, {prof}): ran {marks[token]} times")
extra = set(marks) - {s[0] for s in submitted}
if extra:
    bad.append(f"ran but never submitted: {sorted(extra)[:5]}")
# GRES: the files are what the layout gives, and Slurm runs with them.
if open(f"{w}/gres-now.conf").read() != open(f"{w}/tessera-gres.conf").read():
    bad.append("gres.conf differs from what the daemon's layout gives now")
gpus = json.load(open(f"{w}/gpus.json"))["gpus"]
want = collections.Counter(i["profile"] for g in gpus for i in g["instances"])
line = open(f"{w}/node-slurm.txt").read()
m = re.search(r"\bGres=(\S+)", line)
have = collections.Counter()
for part in (m.group(1) if m else "").split(","):
    f = part.split("(")[0].split(":")
    if f[0] == "gpu" and len(f) == 3:
        have[f[1]] += int(f[2])
if have != want:
    bad.append(f"Slurm's Gres {dict(have)} is not the layout's {dict(want)}")
state = re.search(r"\bState=(\S+)", line).group(1)
if "DRAIN" in state:
    bad.append(f"node state {state}")
# Holds: none left, none overlapping, the daemon's instances the node's.
node = json.load(open(f"{w}/node.json"))["gpus"]
for g, n in zip(gpus, node):
    held = [i for i in g["instances"] if i["jobs"] or i.get("occupants")]
    if held:
        bad.append(f"GPU {g['index']}: instances still held: {held}")
    mine = sorted((i["profile_id"], i["start"]) for i in g["instances"])
    theirs = sorted((i["profile_id"], i["start"]) for i in n.get("instances", []))
    if mine != theirs:
        bad.append(f"GPU {g['index']}: the daemon shows {mine}, the node has {theirs}")
live = [j for j in json.load(open(f"{w}/jobs.json"))["jobs"] if j["state"] in ("queued", "placing", "running")]
if live:
    bad.append(f"{len(live)} holds still live in the daemon")
db = sqlite3.connect(f"file:{w}/state/tessera.db?mode=ro", uri=True)
opened = db.execute("SELECT count(*) FROM reconfigs WHERE state = 'open'").fetchone()[0]
if opened:
    bad.append(f"{opened} reconfiguration(s) still open in the journal")
reconfigs = dict(db.execute("SELECT outcome, count(*) FROM reconfigs GROUP BY outcome").fetchall())
unreleased = db.execute("SELECT count(*) FROM allocations WHERE released_at IS NULL").fetchone()[0]
if unreleased:
    bad.append(f"{unreleased} allocation(s) never released")
rows = db.execute("SELECT gpu_uuid, start, allocated_ms, released_at, job_id FROM allocations "
                  "WHERE exclusive = 1 ORDER BY gpu_uuid, start, allocated_ms").fetchall()
last = {}
for uuid, start, a, r, job in rows:
    key = (uuid, start)
    if key in last and last[key][0] is not None and a < last[key][0]:
        bad.append(f"instance at {uuid}@{start} held by jobs {last[key][1]} and {job} at once")
    last[key] = (r, job)
profiles = collections.Counter(s[2] for s in submitted)
print(f"slurm-crash-loop: {len(submitted)} jobs submitted ({dict(profiles)}), {sum(marks.values())} runs, "
      f"{len(rows)} exclusive holds, reconfigurations {reconfigs}")
for b in bad[:20]:
    print("slurm-crash-loop: BROKEN:", b)
sys.exit(1 if bad else 0)
PY
changes=$(grep -c 'tessera: repartitioning' "$W/log/agent.log" || true)
finished=$(grep -c 'finished an interrupted change' "$W/log/agent.log" || true)
resynced=$(grep -c 'GRES out of step with the layout (' "$W/log/agent.log" || true)
step "changes made by the agent: $changes; interrupted changes finished by the next agent: $finished; GRES found out of step and synced: $resynced; Slurm restarts: $(grep -c 'slurmctld version .* started' "$W/log/slurmctld.log" || true)"
failed=0
step "all checks passed in $((SECONDS - t0)) s"
