# Sourced by scripts/slurm-test.sh and scripts/slurm-crash-loop.sh (set `repo` and `check_name`
# first): a one-node localhost Slurm (GresTypes=gpu,mps, proctrack/linuxproc) around `tessera
# serve` on a simulated node of two H100s (GPU 0: 1g.10gb, 1g.10gb, 2g.20gb, 3g.40gb; GPU 1:
# 3g.40gb, 1g.10gb), with Tessera's prolog, epilog and task prolog, a FUTURE node offering every
# profile, and the first sync done. Installs Debian's slurm-wlm and munge when missing (root);
# says SKIPPED and exits 0 where it cannot run. Sets W (the scratch directory), H (the node), T
# (the CLI on the daemon), TESSERA, `pids` (stopped at exit), `failed` (set it to 0 on success:
# the directory is then removed), the job_* helpers, and an EXIT trap that stops everything (it
# calls `slurm_cleanup_extra` first when the caller defines one).
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
    echo "$check_name: SKIPPED (needs root and Debian's slurm-wlm or apt-get: slurmd, mknod and a second user); run it with sudo" >&2
    exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "$check_name: installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
fi
if [ -z "${TESSERA:-}" ]; then
    cargo build --locked -q -p tessera
    TESSERA=$repo/target/debug/tessera
fi
TESSERA=$(realpath "$TESSERA")

W=$(mktemp -d "/tmp/tessera-$check_name.XXXXXX")
chmod 755 "$W"
mkdir -p "$W"/{log,ctld-state,spool,out,state,run,lib,dev/nvidia-caps}
chmod 1777 "$W/out"
H=$(hostname -s)
export SLURM_CONF=$W/slurm.conf
pids=()
started_munge=
failed=1

cleanup() {
    set +e
    # The caller's own background work first (slurm_cleanup_extra, when it defines one).
    declare -F slurm_cleanup_extra >/dev/null && slurm_cleanup_extra
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    [ -f "$W/d.pid" ] && kill "$(cat "$W/d.pid")" 2>/dev/null
    [ -f "$W/ctld.pid" ] && kill "$(cat "$W/ctld.pid")" 2>/dev/null
    # munged stops asynchronously: wait it out, so a next run does not take a dying one for live.
    if [ -n "$started_munge" ]; then
        pkill -x munged
        for _ in $(seq 50); do pgrep -x munged >/dev/null || break; sleep 0.1; done
    fi
    sleep 0.5
    if [ "$failed" = 1 ]; then
        for f in "$W"/log/*.log; do echo "----- $f (last 40 lines)"; tail -40 "$f"; done >&2
        echo "$check_name: FAILED; everything is in $W" >&2
    elif [ -z "${SLURM_KEEP:-}" ]; then
        # A daemon stopping may still write its last files.
        rm -rf "$W" 2>/dev/null || { sleep 1; rm -rf "$W"; }
    fi
}
trap cleanup EXIT

job_state() { scontrol show job -o "$1" | tr ' ' '\n' | sed -n 's/^JobState=//p'; }
job_done() { case "$(job_state "$1")" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) return 0;; esac; return 1; }
job_running() { [ "$(job_state "$1")" = RUNNING ]; }
job_idx() { scontrol show job -d -o "$1" | grep -o ' GRES=[^ ]*' | tr -d ' ' || true; }
# A field of `tessera gpus -o json` for the instance with MIG UUID $1: profile, gpu or local_cpus.
instance_field() {
    "$TESSERA" --socket "$W/tessera.sock" gpus -o json | python3 -c '
import json, sys
uuid, field = sys.argv[1], sys.argv[2]
for g in json.load(sys.stdin)["gpus"]:
    for i in g["instances"]:
        if i.get("mig_uuid") == uuid:
            print({"profile": i["profile"], "gpu": g["index"], "local_cpus": g.get("local_cpus") or "",
                   "occupants": ",".join((o.get("external") or {}).get("door", "") + ":" + (o.get("external") or {}).get("key", "") for o in i.get("occupants", []))}[field])
            sys.exit(0)
print("MISSING")' "$1" "$2"
}

step "scratch directory $W, node $H"
id tslurm >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin tslurm
tuid=$(id -u tslurm)

# A munged without its socket is stopping (another run's cleanup): wait until it is gone.
for _ in $(seq 50); do
    pgrep -x munged >/dev/null && [ ! -S /run/munge/munge.socket.2 ] || break
    sleep 0.1
done
if ! pgrep -x munged >/dev/null; then
    munged --force 2>/dev/null || munged
    started_munge=1
fi

# The simulated node: two H100s, each on its own NUMA node with one CPU of its own.
cat >"$W/tessera.toml" <<TOML
[server]
socket = "$W/tessera.sock"

[slurm]
node_name = "$H"
gres_file = "$W/tessera-gres.conf"
node_file = "$W/tessera-node.conf"
node_params = "CPUs=$(nproc) NodeAddr=127.0.0.1"
state_dir = "$W/lib"
runtime_dir = "$W/run"
dev_root = "$W"
restart = [["$W/restart-slurm.sh"]]
agent_interval_ms = 500
TOML
chmod 644 "$W/tessera.toml"
# SLURM_SIM_EXTRA: more of the node's spec (the crash loop's slow MIG operations).
"$TESSERA" serve --sim "2xH100-80GB,numa=2,cpus=2,mem=16GiB${SLURM_SIM_EXTRA:+,$SLURM_SIM_EXTRA}" --sim-state "$W/sim.json" --state-dir "$W/state" \
    --config "$W/tessera.toml" >"$W/log/tessera.log" 2>&1 &
pids+=($!)
T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
wait_for 30 test -S "$W/tessera.sock" || fail "tessera serve did not start"
wait_for 30 T gpus >/dev/null 2>&1 || fail "tessera serve does not answer"
T admin layout 0 1g.10gb@0,1g.10gb@1,2g.20gb@2,3g.40gb@4 >/dev/null
T admin layout 1 3g.40gb@0,1g.10gb@6 >/dev/null

# Device files as the driver makes them (/dev/nvidiaN major 195; nvidia-caps minors of both GPUs).
if ! mknod "$W/dev/nvidia0" c 195 0 2>/dev/null; then
    failed=0
    echo "$check_name: SKIPPED (this machine does not let root mknod; Slurm checks that GRES files are devices)" >&2
    exit 0
fi
mknod "$W/dev/nvidia1" c 195 1
for m in $(seq 1 300); do mknod "$W/dev/nvidia-caps/nvidia-cap$m" c 236 "$m"; done

for s in prolog epilog task-prolog; do
    cat >"$W/$s.sh" <<SH
#!/bin/sh
TESSERA_SOCKET=$W/tessera.sock exec $TESSERA slurm $s --config $W/tessera.toml
SH
    chmod 755 "$W/$s.sh"
done
cat >"$W/restart-slurm.sh" <<SH
#!/bin/sh
# What Slurm 22.05 needs to take up a node's new GRES: slurmd stopped, slurmctld restarted
# (scontrol reconfigure keeps the node's old GRES), slurmd started. One at a time, as systemctl
# runs one unit's restarts (a restart left behind by a killed agent may still be at work).
exec 9>$W/restart.lock
flock 9
# Each daemon is waited for until the process is gone, not its pid file (which goes first: a
# new slurmd beside the old one registers the old GRES again), at most 20 s.
for f in $W/d.pid $W/ctld.pid; do
    p=\$(cat \$f 2>/dev/null) || continue
    kill \$p 2>/dev/null || continue
    for i in \$(seq 1 200); do kill -0 \$p 2>/dev/null || break; sleep 0.1; done
done
slurmctld -f $W/slurm.conf 9>&- && slurmd -f $W/slurm.conf 9>&-
SH
chmod 755 "$W/restart-slurm.sh"

# slurm.conf with the node's line included from Tessera's file, and a FUTURE node offering every
# profile, so Slurm queues jobs for profiles no real node has now.
future=$("$TESSERA" slurm gres --config "$W/tessera.toml" --socket "$W/tessera.sock" --format future)
cat >"$W/slurm.conf" <<CONF
ClusterName=tessera-test
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$W/ctld-state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/ctld.pid
SlurmdPidFile=$W/d.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu,mps
Prolog=$W/prolog.sh
Epilog=$W/epilog.sh
TaskProlog=$W/task-prolog.sh
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
Include $W/tessera-node.conf
$future
PartitionName=p Nodes=$H,tessera-mig-future Default=YES MaxTime=INFINITE State=UP
CONF
echo "Include $W/tessera-gres.conf" >"$W/gres.conf"
# Before slurmctld runs, scontrol would retry the controller for a minute per call: these two
# read GresTypes from a file scontrol refuses at once (Tessera then reads the file itself).
echo "GresTypes=gpu,mps" >"$W/pre-start.conf"
SLURM_CONF=$W/pre-start.conf "$TESSERA" slurm gres --config "$W/tessera.toml" --socket "$W/tessera.sock" >"$W/tessera-gres.conf"
SLURM_CONF=$W/pre-start.conf "$TESSERA" slurm gres --config "$W/tessera.toml" --socket "$W/tessera.sock" --format node >"$W/tessera-node.conf"
slurmd -G -f "$W/slurm.conf" >"$W/log/slurmd-G.log" 2>&1 || true
grep -q 'Type=3g.40gb' "$W/log/slurmd-G.log" || fail "slurmd -G does not list the 3g.40gb record: $(cat "$W/log/slurmd-G.log")"
slurmctld -f "$W/slurm.conf"
slurmd -f "$W/slurm.conf"
wait_for 30 sh -c "sinfo -h -n $H -o %T | grep -q idle" || fail "node $H is not idle: $(sinfo -N)"
step "cluster up: $(sinfo -h -N -n "$H" -o '%N %T %G')"

# The first sync writes the GRES index map (and restarts Slurm through restart-slurm.sh).
"$TESSERA" slurm sync --config "$W/tessera.toml" --socket "$W/tessera.sock" | tee "$W/log/sync1.log"
[ -f "$W/lib/gres-map.json" ] || fail "sync wrote no GRES index map"
grep -q "nvidia-cap" "$W/tessera-gres.conf" || fail "gres.conf names no nvidia-caps file"
