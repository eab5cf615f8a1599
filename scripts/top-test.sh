#!/usr/bin/env bash
# `tessera top` on a real terminal (issue 15): runs it in a shell inside tmux (installed with
# apt-get when missing), beside `tessera serve` on a simulated node, and reads the screen with
# `tmux capture-pane`: the GPUs and their instances are drawn as `tessera gpus -o json` says,
# a job that starts shows running with its holder on the slice map, a job that must wait shows
# in the queue with the reason `tessera jobs -o json` gives; a resize is followed; q (and
# SIGTERM) put the terminal back: the shell's prompt, the main screen, cooked mode.
# Every screen read is saved under $TOP_TEST_OUT (default: a new directory under /tmp).
# Needs root only to install tmux; skipped when tmux is missing and cannot be.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

check_name=top-test
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
need_packages 'command -v tmux >/dev/null' tmux
tessera_binary

W=$(mktemp -d /tmp/tessera-top.XXXXXX)
OUT=${TOP_TEST_OUT:-$(mktemp -d /tmp/tessera-top-screens.XXXXXX)}
mkdir -p "$OUT"
pids=()
tops=()
failed=1
TM() { tmux -S "$W/tmux.sock" "$@"; }
cleanup() {
    set +e
    TM kill-server 2>/dev/null
    # A tessera top that outlived its terminal (what step 7 checks for) would spin on.
    for p in "${tops[@]}"; do kill -KILL "$p" 2>/dev/null; done
    # The jobs' supervisors outlive the daemon: end the jobs first.
    if [ -S "$W/tessera.sock" ]; then
        T cancel --state queued,placing,running >/dev/null 2>&1
        wait_for 20 sh -c "! $TESSERA --socket $W/tessera.sock jobs -o json | grep -q '\"state\"'"
    fi
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ "$failed" = 1 ]; then
        for f in "$W"/*.log; do echo "----- $f (last 30 lines)"; tail -30 "$f"; done >&2
        echo "top-test: FAILED; the daemon's files are in $W, the screens in $OUT" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT

cat >"$W/tessera.toml" <<TOML
[server]
socket = "$W/tessera.sock"
TOML
"$TESSERA" serve --sim '2xH100-80GB' --sim-state "$W/sim.json" --state-dir "$W/state" --config "$W/tessera.toml" \
    >"$W/tessera.log" 2>&1 &
pids+=($!)
T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
wait_for 30 T gpus >/dev/null 2>&1 || fail "tessera serve does not answer"
T admin layout 0 1g.10gb,1g.10gb,3g.40gb >/dev/null
T admin layout 1 4g.40gb@0,2g.20gb@4 >/dev/null
T admin drain 1 --reason 'top-test maintenance' >/dev/null

# A shell in a 120x40 terminal, with a prompt to look for.
TM -f /dev/null new-session -d -s top -x 120 -y 40 "env -i PATH=$PATH HOME=$W TERM=tmux-256color PS1='top-test\$ ' bash --norc --noprofile"
TM set-option -t top status off >/dev/null
screen() { TM capture-pane -p -t top; }
# Saves the screen as $OUT/NN-name.txt.
n=0
save() {
    n=$((n + 1))
    screen >"$OUT/$(printf %02d $n)-$1.txt"
}
prompt_back() { [ "$(screen | sed '/^$/d' | tail -1)" = 'top-test$' ]; }
wait_for 10 prompt_back || fail "the shell in tmux shows no prompt: $(screen)"
TM send-keys -t top "$TESSERA --socket $W/tessera.sock top --interval 1s" Enter
# alternate_on: the program switched to the alternate screen (tmux knows whose screen it shows).
alternate() { [ "$(TM display-message -p -t top '#{alternate_on}')" = "$1" ]; }
wait_for 10 alternate 1 || fail "tessera top did not switch to the alternate screen: $(screen)"
# $pid: the tessera top the pane's shell runs, remembered for the cleanup.
top_pid() {
    pid=$(pgrep -P "$(TM display-message -p -t top '#{pane_pid}')" -x tessera) || fail "no tessera top runs in the pane"
    tops+=("$pid")
}
top_pid

# Whether the screen shows what the API says: every GPU's line, its slice map (each instance's
# profile in order of placement, its holder `ID USER`, or idle), the running jobs and, with
# `full`, the queued ones with the start of their reasons. Prints the first difference.
agree() {
    screen >"$W/screen.txt"
    T gpus -o json >"$W/gpus.json"
    T jobs -A -o json >"$W/jobs.json" 2>/dev/null || T jobs -o json >"$W/jobs.json"
    python3 - "$W/screen.txt" "$W/gpus.json" "$W/jobs.json" "$1" >"$W/agree.out" <<'PY' || return 1
import json, re, sys
screen = open(sys.argv[1], encoding="utf-8").read().split("\n")
gpus = json.load(open(sys.argv[2], encoding="utf-8"))["gpus"]
jobs = json.load(open(sys.argv[3], encoding="utf-8"))["jobs"]
full = sys.argv[4] == "full"

def fail(why):
    print(why)
    sys.exit(1)

def labels(line):
    return [l.strip() for l in re.findall(r"\[([^\]]*)\]", line)]

def same(shown, want):
    # A label cut to its block ends in "…".
    return shown == want or (shown.endswith("…") and want.startswith(shown[:-1]))

for g in gpus:
    at = [i for i, l in enumerate(screen) if l.startswith("GPU %d  " % g["index"])]
    if not at:
        fail("no line for GPU %d" % g["index"])
    block = screen[at[0]:]
    unit = next((i for i, l in enumerate(block) if l.strip().startswith("unit  0")), None)
    if unit is None:
        fail("GPU %d has no slice map" % g["index"])
    profiles, holders = labels(block[unit + 1]), labels(block[unit + 2])
    insts = sorted(g["instances"], key=lambda i: i["start"])
    want_p = [i["profile"] for i in insts]
    want_h = ["%d %s" % (i["occupants"][0]["job"], i["occupants"][0]["user"]) if i["occupants"] else "idle" for i in insts]
    if len(profiles) != len(want_p) or not all(same(s, w) for s, w in zip(profiles, want_p)):
        fail("GPU %d's map shows %s, the API %s" % (g["index"], profiles, want_p))
    if len(holders) != len(want_h) or not all(same(s, w) for s, w in zip(holders, want_h)):
        fail("GPU %d's holders are %s, the API's %s" % (g["index"], holders, want_h))
    if g["drained"] and "drained by" not in " ".join(block[:unit]):
        fail("GPU %d is drained but its line does not say so" % g["index"])

def section(title):
    start = next((i for i, l in enumerate(screen) if l.startswith(title)), None)
    if start is None:
        fail("no %s section" % title)
    out = []
    for l in screen[start + 1:]:
        if not l.strip():
            break
        out.append(l)
    return screen[start], out

for state, title in (("running", "Running"), ("queued", "Queued")):
    want = [j for j in jobs if j["state"] == state]
    head, rows = section(title)
    if not want:
        if head != title + ": none":
            fail("%s: %r, but the API has none" % (title, head))
        continue
    if head != "%s (%d)" % (title, len(want)):
        fail("%s: %r, the API has %d" % (title, head, len(want)))
    for j in want:
        row = next((r for r in rows if r.split()[:2] == [str(j["id"]), j["user"]]), None)
        if row is None:
            fail("job %d is not among the %s jobs: %s" % (j["id"], state, rows))
        if state == "queued" and full:
            reason = j["reason"][:20]
            if not reason or reason not in row:
                fail("job %d's row %r lacks its reason %r" % (j["id"], row, j["reason"]))
PY
}

wait_for 10 agree full || fail "$(cat "$W/agree.out")"
save fresh
grep -q 'every 1 s' "$OUT/01-fresh.txt" || fail "the header does not say how often it refreshes"
step "1. the GPUs and their instances as tessera gpus says (saved: $OUT/01-fresh.txt)"

a=$(T submit --profile 3g.40gb -- sleep 120)
wait_for 20 sh -c "$TESSERA --socket $W/tessera.sock jobs -o json | grep -q '\"state\": *\"running\"'" ||
    fail "job $a does not run"
wait_for 10 agree full || fail "$(cat "$W/agree.out")"
save running
grep -q "\[$a root" "$OUT/02-running.txt" || fail "job $a's holder is not on the slice map"
step "2. job $a runs, held on GPU 0's 3g.40gb on the screen"

b=$(T submit --gpus 1 -- sleep 120)
queued_with_reason() {
    T job "$b" -o json | python3 -c 'import json,sys; j=json.load(sys.stdin); sys.exit(0 if j["state"]=="queued" and j["reason"] else 1)'
}
wait_for 20 queued_with_reason || fail "job $b does not wait with a reason: $(T job "$b")"
wait_for 10 agree full || fail "$(cat "$W/agree.out")"
save queued
step "3. job $b waits, with its reason: $(T job "$b" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["reason"])')"

TM resize-window -t top -x 80 -y 24
wait_for 10 agree maps || fail "after a resize to 80x24: $(cat "$W/agree.out")"
save narrow
too_wide=$(python3 -c 'import sys; print("\n".join(l for l in open(sys.argv[1], encoding="utf-8").read().splitlines() if len(l) > 80))' "$OUT/04-narrow.txt")
[ -z "$too_wide" ] || fail "lines wider than 80 columns: $too_wide"
step "4. resized to 80x24, it follows: the maps and jobs still agree"

# The daemon out of reach (its socket moved away): the error, the last data kept, then back.
mv "$W/tessera.sock" "$W/away.sock"
words() { screen | tr -s ' \n' '  '; }
failing() { words | grep -q "refresh failed at [0-9:]*, showing what the daemon said at [0-9:]* ([0-9]*s old): cannot reach the daemon"; }
wait_for 10 failing || { mv "$W/away.sock" "$W/tessera.sock"; fail "no error with the age of the data on the screen: $(screen)"; }
save unreachable
mv "$W/away.sock" "$W/tessera.sock"
grep -q "\[$a root" "$OUT/05-unreachable.txt" || fail "the last data is not kept while the daemon is out of reach"
wait_for 10 sh -c "! tmux -S $W/tmux.sock capture-pane -p -t top | grep -q 'refresh failed'" ||
    fail "the error stays after the daemon is back: $(screen)"
step "5. the daemon out of reach: its error in red, the last data kept with its age; cleared when it is back"

# Typed into the shell after top: the terminal's canonical mode and echo, as `modes=icanon,echo`.
modes='echo "modes=$(stty -a | tr " ;" "\n\n" | grep -xE -- "-?(icanon|echo)" | paste -sd, -)"'
TM send-keys -t top q
wait_for 5 prompt_back || fail "q did not bring the prompt back: $(screen)"
alternate 0 || fail "q left the terminal on the alternate screen"
TM send-keys -t top 'echo "exit=$?"' Enter "$modes" Enter
wait_for 5 sh -c "tmux -S $W/tmux.sock capture-pane -p -t top | grep -qx 'modes=icanon,echo'" ||
    fail "the terminal is not back in cooked mode: $(screen)"
screen | grep -qx 'exit=0' || fail "tessera top did not exit 0: $(screen)"
save quit
step "6. q quits: exit 0, the prompt on the main screen, canonical mode and echo back"

TM send-keys -t top clear Enter "$TESSERA --socket $W/tessera.sock top" Enter
wait_for 10 alternate 1 || fail "tessera top did not start again: $(screen)"
wait_for 10 agree maps || fail "$(cat "$W/agree.out")"
top_pid
kill -TERM "$pid"
wait_for 5 prompt_back || fail "SIGTERM did not bring the prompt back: $(screen)"
alternate 0 || fail "SIGTERM left the terminal on the alternate screen"
TM send-keys -t top "$modes" Enter
wait_for 5 sh -c "tmux -S $W/tmux.sock capture-pane -p -t top | grep -qx 'modes=icanon,echo'" ||
    fail "SIGTERM left the terminal in raw mode: $(screen)"
save sigterm
step "7. SIGTERM: the terminal put back as well"

TM send-keys -t top clear Enter "$TESSERA --socket $W/tessera.sock top" Enter
wait_for 10 alternate 1 || fail "tessera top did not start again: $(screen)"
top_pid
TM kill-server
wait_for 5 sh -c "! kill -0 $pid 2>/dev/null" || fail "tessera top (pid $pid) goes on after its terminal went away"
step "8. the terminal gone (tmux killed: SIGHUP), tessera top ends"

failed=0
step "screens saved in $OUT"
echo "top-test: all checks passed"
