#!/usr/bin/env bash
# Tessera under a real Slurm (issue 14): installs Debian's slurm-wlm and munge when missing,
# writes a one-node localhost cluster (GresTypes=gpu,mps, proctrack/linuxproc), starts munge,
# slurmctld, slurmd and `tessera serve` on a simulated node of two H100s, and runs the
# scenarios of docs/slurm.md against what the jobs themselves observed. The device files
# slurmd checks are `mknod`ed in a scratch directory (Slurm needs them to exist, not to work).
# Needs root (slurmd, mknod, a second user). Everything it starts is stopped at the end; the
# scratch directory is kept (and its logs printed) when a step fails.
#
#   scripts/slurm-test.sh                 # uses target/debug/tessera (built if missing)
#   TESSERA=target/release/tessera scripts/slurm-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

check_name=slurm-test
# shellcheck source=scripts/lib/slurm-cluster.sh
source "$repo/scripts/lib/slurm-cluster.sh"

cat >"$W/show.sh" <<'SH'
#!/bin/sh
echo "CVD=$CUDA_VISIBLE_DEVICES"
echo "CPUS=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)"
echo "NUMA=$TESSERA_NUMA_NODE"
echo "PIPE=$CUDA_MPS_PIPE_DIRECTORY"
if [ -n "$CUDA_MPS_PIPE_DIRECTORY" ]; then
    echo "PIPE_OWNER=$(stat -c %U "$CUDA_MPS_PIPE_DIRECTORY")"
    echo "PIPE_FILES=$(ls "$CUDA_MPS_PIPE_DIRECTORY" | tr '\n' ' ')"
fi
echo "PCT=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
[ -n "$WAIT_FOR" ] && while [ ! -e "$WAIT_FOR" ]; do sleep 0.2; done
exit 0
SH
chmod 755 "$W/show.sh"
field() { sed -n "s/^$1=//p" "$2" | head -1; }

# 1. srun as a user: the MIG UUID of a 1g.10gb slice and its GPU's NUMA-local CPUs.
step "1. srun --gres=gpu:1g.10gb:1 as tslurm"
(cd "$W/out" && runuser -u tslurm -- srun --gres=gpu:1g.10gb:1 "$W/show.sh") >"$W/out/s1.out" 2>&1 ||
    fail "srun failed: $(cat "$W/out/s1.out")"
cvd=$(field CVD "$W/out/s1.out")
case "$cvd" in MIG-*) ;; *) fail "the job saw CUDA_VISIBLE_DEVICES='$cvd', not a MIG UUID";; esac
[ "$(instance_field "$cvd" profile)" = 1g.10gb ] || fail "$cvd is a $(instance_field "$cvd" profile), not a 1g.10gb"
local_cpus=$(instance_field "$cvd" local_cpus)
[ -n "$local_cpus" ] || fail "the daemon gives no local CPUs for $cvd's GPU"
[ "$(field CPUS "$W/out/s1.out")" = "$local_cpus" ] ||
    fail "the task ran on CPUs $(field CPUS "$W/out/s1.out"), not its GPU's NUMA-local CPUs $local_cpus"
step "   saw $cvd on CPUs $local_cpus (NUMA node $(field NUMA "$W/out/s1.out"))"

# 2. sbatch jobs of several profiles run to completion, each on a slice of its profile.
step "2. sbatch jobs of 3g.40gb, 2g.20gb and 1g.10gb"
ids=()
for p in 3g.40gb 2g.20gb 1g.10gb; do
    ids+=("$(cd "$W/out" && runuser -u tslurm -- sbatch --parsable --gres=gpu:$p:1 -o "$W/out/s2-$p.out" "$W/show.sh")")
done
for id in "${ids[@]}"; do wait_for 60 job_done "$id" || fail "job $id did not end: $(scontrol show job "$id")"; done
i=0
for p in 3g.40gb 2g.20gb 1g.10gb; do
    id=${ids[$i]}; i=$((i + 1))
    [ "$(job_state "$id")" = COMPLETED ] || fail "job $id ($p) ended $(job_state "$id")"
    u=$(field CVD "$W/out/s2-$p.out")
    [ "$(instance_field "$u" profile)" = "$p" ] || fail "job $id asked for $p and saw $u ($(instance_field "$u" profile))"
done
step "   all three completed on slices of their profiles"

# 3. Dynamic MIG: a 4g.40gb job waits until the agent repartitions GPU 1's idle 3g.40gb, while
#    a running job keeps its three 1g.10gb slices (one of them on GPU 1) and their GRES indices.
#    (The node keeps its number of slices: Slurm 22.05 requeues running jobs when it changes.)
step "3. dynamic MIG with a job running on the GPU being changed"
hold=$(cd "$W/out" && sbatch --parsable --gres=gpu:1g.10gb:3 -o "$W/out/s3-hold.out" \
    --export=ALL,WAIT_FOR="$W/out/release" "$W/show.sh")
wait_for 30 job_running "$hold" || fail "the holding job did not start"
wait_for 10 test -s "$W/out/s3-hold.out" || fail "the holding job printed nothing"
hold_uuids=$(field CVD "$W/out/s3-hold.out")
hold_idx=$(job_idx "$hold")
first=${hold_uuids%%,*}
occ=$(instance_field "$first" occupants)
case "$occ" in *"slurm:job/$hold/root"*) ;; *) fail "the daemon does not show $first held for Slurm job $hold (occupants '$occ')";; esac
big=$(cd "$W/out" && runuser -u tslurm -- sbatch --parsable --gres=gpu:4g.40gb:1 -o "$W/out/s3-big.out" "$W/show.sh")
sleep 3
[ "$(job_state "$big")" = PENDING ] || fail "the 4g.40gb job is $(job_state "$big") before the agent runs"
"$TESSERA" slurm agent --config "$W/tessera.toml" --socket "$W/tessera.sock" >"$W/log/agent.log" 2>&1 &
pids+=($!)
wait_for 120 job_done "$big" || fail "the 4g.40gb job did not run: $(scontrol show job "$big")"
[ "$(job_state "$big")" = COMPLETED ] || fail "the 4g.40gb job ended $(job_state "$big")"
u=$(field CVD "$W/out/s3-big.out")
[ "$(instance_field "$u" profile)" = 4g.40gb ] || fail "the 4g.40gb job saw $u ($(instance_field "$u" profile))"
# The drain (what `scontrol show node` shows users while it lasts) as slurmctld recorded it.
grep -q "node $H reason set to: tessera: repartitioning GPU 1 for jobs $big" "$W/log/slurmctld.log" ||
    fail "slurmctld saw no drain naming job $big: $(grep 'reason set' "$W/log/slurmctld.log")"
job_running "$hold" || fail "the holding job is $(job_state "$hold") after the change"
[ "$(job_idx "$hold")" = "$hold_idx" ] || fail "the holding job's GRES changed: $hold_idx -> $(job_idx "$hold")"
for x in ${hold_uuids//,/ }; do
    [ "$(instance_field "$x" profile)" = 1g.10gb ] || fail "the holding job's slice $x is gone or changed"
done
wait_for 20 sh -c "! sinfo -h -n $H -o %T | grep -q drain" || fail "node still drained: $(sinfo -N -n "$H")"
touch "$W/out/release"
wait_for 30 job_done "$hold" || fail "the holding job did not end"
[ "$(job_state "$hold")" = COMPLETED ] || fail "the holding job ended $(job_state "$hold")"
step "   4g.40gb made on GPU 1 and used; the running job kept $hold_idx"

# 4. MPS: a control daemon per slice as the job's user, gone after the job, killed or not.
step "4. --gres=mps:50 as tslurm"
(cd "$W/out" && runuser -u tslurm -- srun --gres=mps:50 "$W/show.sh") >"$W/out/s4.out" 2>&1 ||
    fail "srun --gres=mps failed: $(cat "$W/out/s4.out")"
pipe=$(field PIPE "$W/out/s4.out")
[ -n "$pipe" ] || fail "the MPS job got no CUDA_MPS_PIPE_DIRECTORY"
[ "$(field PIPE_OWNER "$W/out/s4.out")" = tslurm ] || fail "the MPS pipe directory belongs to $(field PIPE_OWNER "$W/out/s4.out")"
[ -n "$(field PIPE_FILES "$W/out/s4.out")" ] || fail "no control daemon state in $pipe"
[ "$(field PCT "$W/out/s4.out")" = 50 ] || fail "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$(field PCT "$W/out/s4.out")"
wait_for 20 test ! -e "$pipe" || fail "the epilog left $pipe"
python3 - "$W/run/mps-commands.jsonl" "$tuid" <<'PY' || fail "MPS control daemon not started and stopped as tslurm"
import json, sys
ops = [json.loads(l) for l in open(sys.argv[1])]
assert any(o["op"] == "start" and o["uid"] == int(sys.argv[2]) for o in ops), ops
assert any(o.get("stdin") == "quit" for o in ops), ops
PY
killed=$(cd "$W/out" && runuser -u tslurm -- sbatch --parsable --gres=mps:50 -o /dev/null --wrap "sleep 300")
wait_for 30 job_running "$killed" || fail "the MPS job to kill did not start"
wait_for 20 sh -c "ls -d $W/run/mps/$killed/*/pipe >/dev/null 2>&1" || fail "no MPS daemon for job $killed"
scancel "$killed"
# slurmstepd may retry its completion message to a busy slurmctld for tens of seconds.
wait_for 90 job_done "$killed" || fail "job $killed did not end"
wait_for 30 test ! -e "$W/run/mps/$killed" || fail "the epilog left $W/run/mps/$killed"
wait_for 30 test ! -e "$W/run/jobs/$killed.json" || fail "the epilog left $W/run/jobs/$killed.json"
left=$(T jobs --all -o json | python3 -c '
import json, sys
print(sum(1 for j in json.load(sys.stdin)["jobs"] if j["state"] == "running" and (j.get("external") or {}).get("door") == "slurm"))')
[ "$left" = 0 ] || fail "$left Slurm holds still running in the daemon after the jobs ended"
step "   MPS started as tslurm and stopped; a cancelled job's daemon and files removed"

# 5. What Tessera does instead where Slurm 22.05 cannot follow: a change that alters the node's
#    number of slices while a job holds GPU indices would make slurmctld requeue that job (even
#    with every index kept), so the agent waits, saying why, until the node's GPU jobs end.
step "5. a change that alters the node's slice count waits for running jobs"
hold=$(cd "$W/out" && sbatch --parsable --gres=gpu:1g.10gb:3 -o "$W/out/s5-hold.out" \
    --export=ALL,WAIT_FOR="$W/out/release5" "$W/show.sh")
wait_for 30 job_running "$hold" || fail "the holding job did not start"
two=$(cd "$W/out" && runuser -u tslurm -- sbatch --parsable --gres=gpu:2g.20gb:2 -o "$W/out/s5-two.out" "$W/show.sh")
wait_for 20 grep -q "jobs $two wait: .*GPU records would go from 6 to 7" "$W/log/agent.log" ||
    fail "the agent did not say why job $two waits: $(tail -5 "$W/log/agent.log")"
sleep 2
[ "$(job_state "$two")" = PENDING ] || fail "job $two is $(job_state "$two") while the change must wait"
job_running "$hold" || fail "the holding job is $(job_state "$hold") while the change waits"
touch "$W/out/release5"
wait_for 30 job_done "$hold" || fail "the holding job did not end"
[ "$(job_state "$hold")" = COMPLETED ] || fail "the holding job ended $(job_state "$hold")"
wait_for 120 job_done "$two" || fail "job $two did not run after the node's jobs ended"
[ "$(job_state "$two")" = COMPLETED ] || fail "job $two ended $(job_state "$two")"
n=0
for u in $(field CVD "$W/out/s5-two.out" | tr ',' ' '); do
    [ "$(instance_field "$u" profile)" = 2g.20gb ] || fail "job $two saw $u ($(instance_field "$u" profile))"
    n=$((n + 1))
done
[ "$n" = 2 ] || fail "job $two saw $n slices, not 2"
step "   waited while job $hold ran, then made a second 2g.20gb and ran"

failed=0
step "all scenarios passed"
