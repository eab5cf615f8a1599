#!/usr/bin/env bash
# Load test (issue 16, item 6): `tessera serve` on a simulated 2x A100-40GB node (14 1g.5gb
# slices), driven as two non-root test users the script creates (and removes afterwards).
# Measures, and prints one line per figure with the load average beside it:
# - CLI submissions/s as a non-root user: separate `tessera submit` processes (4 at a time),
#   and one `tessera submit --array` (a job array, one process);
# - API latency p50/p99 of submissions and of one job's read, over the Unix socket, as that user;
# - with JOBS jobs queued (the GPUs drained): `tessera jobs` p50/p99 as the user with most of
#   them, as the other user alone, and as the other user while the first lists everything
#   (`--limit all -o json`) in a loop; the daemon's RSS (and its peak) after 4 concurrent
#   full listings;
# - the queue drained: every job is `true`; jobs/s from undrain to empty, against the slices.
# Usage: scripts/load-test.sh [JOBS] (default 10000; 2000 is the short form). Must run as root.
# LOAD_OUT=DIR keeps the work directory; TESSERA=binary tests that binary. Exits non-zero when a
# measurement could not be made (not when a figure misses its goal: the figures are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
jobs=${1:-10000}
check_name=load-test
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
[ "$(id -u)" = 0 ] || { echo "load-test: SKIPPED (needs root: it creates test users)" >&2; exit 0; }
tessera_binary

W=${LOAD_OUT:-$(mktemp -d /tmp/tessera-load.XXXXXX)}
mkdir -p "$W"
chmod 755 "$W"
cp "$TESSERA" "$W/tessera"
chmod 755 "$W/tessera"
TESSERA=$W/tessera
u1=tload1
u2=tload2
daemon=
bg=()
made_users=()
cleanup() {
    set +e
    for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    for u in "${made_users[@]}"; do userdel "$u" 2>/dev/null; done
    [ -z "${LOAD_OUT:-}" ] && rm -rf "$W"
}
trap cleanup EXIT
for u in $u1 $u2; do
    if ! id "$u" >/dev/null 2>&1; then
        for _ in 1 2 3 4 5; do
            useradd --no-create-home --shell /usr/sbin/nologin "$u" 2>/dev/null && break
            sleep 0.5
        done
        id "$u" >/dev/null 2>&1 || fail "cannot create the test user $u"
        made_users+=("$u")
    fi
done
mkdir -p "$W/work"
chmod 777 "$W/work"

sock=$W/tessera.sock
T() { "$TESSERA" --socket "$sock" "$@"; }
As() { local u=$1; shift; (cd "$W/work" && runuser -u "$u" -- "$@"); }
load() { cut -d' ' -f1 /proc/loadavg; }
cat >"$W/tessera.toml" <<EOF
[jobs]
output_dir = "$W/output"
isolation = "off"
EOF
"$TESSERA" serve --config "$W/tessera.toml" --sim 2xA100-40GB --sim-state "$W/sim.json" --state-dir "$W/state" \
    --socket "$sock" >"$W/tessera.log" 2>&1 &
daemon=$!
wait_for 30 T gpus >/dev/null 2>&1 || fail "the daemon did not start (see $W/tessera.log)"
T admin drain 0 --reason load-test >/dev/null
T admin drain 1 --reason load-test >/dev/null
rss() { awk -v k="$1" '$1 == k":" {printf "%.1f", $2 / 1024}' "/proc/$daemon/status"; }
step "daemon up (2x A100-40GB, GPUs drained so jobs stay queued); idle RSS $(rss VmRSS) MB; load $(load)"

# The measuring side: Python, timing each call, run as the test users.
cat >"$W/measure.py" <<'PY'
import http.client, json, os, socket, subprocess, sys, threading, time

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")

class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("tessera")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def api(sock, method, path, body=None):
    c = Unix(sock)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: HTTP {r.status}: {data[:200]!r}")
    return json.loads(data)

mode, tessera, sock = sys.argv[1], sys.argv[2], sys.argv[3]
T = [tessera, "--socket", sock]
if mode in ("cli-submit", "cli-start"):  # N separate processes, P at a time
    n, par = int(sys.argv[4]), int(sys.argv[5])
    argv = T + ["submit", "--profile", "1g.5gb", "--", "true"] if mode == "cli-submit" else [tessera, "--version"]
    left = [n]
    lock = threading.Lock()
    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(par)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps({"per_s": n / (time.monotonic() - t0)}))
elif mode == "cli-array":
    n = int(sys.argv[4])
    t0 = time.monotonic()
    out = subprocess.run(T + ["submit", "--array", f"0-{n - 1}", "--profile", "1g.5gb", "--", "true"],
                         check=True, capture_output=True, text=True).stdout.split()
    assert len(out) == n, f"{len(out)} ids for {n} jobs"
    print(json.dumps({"per_s": n / (time.monotonic() - t0)}))
elif mode == "api":  # submissions and one job's read, one at a time
    n = int(sys.argv[4])
    body = {"command": ["true"], "env": {}, "cwd": os.getcwd(), "resources": {"gpu": {"profile": {"name": "1g.5gb"}}}}
    post, get = [], []
    for _ in range(n):
        t0 = time.monotonic()
        jid = api(sock, "POST", "/v1/jobs", body)["id"]
        post.append((time.monotonic() - t0) * 1000)
        t0 = time.monotonic()
        api(sock, "GET", f"/v1/jobs/{jid}")
        get.append((time.monotonic() - t0) * 1000)
    print(json.dumps({"post_p50": pct(post, 50), "post_p99": pct(post, 99), "get_p50": pct(get, 50), "get_p99": pct(get, 99)}))
elif mode == "jobs":  # `tessera jobs` (extra arguments after the count), timed each
    n, extra = int(sys.argv[4]), sys.argv[5:]
    ms = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(T + ["jobs"] + extra, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ms.append((time.monotonic() - t0) * 1000)
    print(json.dumps({"p50": pct(ms, 50), "p99": pct(ms, 99), "n": n}))
elif mode == "big-lists":  # full listings in a loop for SECONDS
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:
        subprocess.run(T + ["jobs", "--limit", "all", "-o", "json"], check=True, stdout=subprocess.DEVNULL)
PY
M() { local u=$1; shift; As "$u" python3 "$W/measure.py" "$1" "$TESSERA" "$sock" "${@:2}"; }
field() { python3 -c "import json,sys; print('%.1f' % json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# 1. CLI submissions as a non-root user; first what starting the process alone allows.
procs=$((jobs / 10))
r=$(M $u1 cli-start "$procs" 4)
step "CLI process start alone as $u1 (\`tessera --version\`, 4 at a time): $(field "$r" per_s)/s (load $(load))"
r=$(M $u1 cli-submit "$procs" 4)
step "CLI submissions as $u1, separate processes (4 at a time, $procs jobs): $(field "$r" per_s)/s (load $(load))"
array=$((jobs / 2))
r=$(M $u1 cli-array "$array")
step "CLI submissions as $u1, one \`submit --array 0-$((array - 1))\`: $(field "$r" per_s)/s (load $(load))"

# 2. API latency.
r=$(M $u1 api 500)
step "API as $u1 (500 each, one at a time): submit p50 $(field "$r" post_p50) ms, p99 $(field "$r" post_p99) ms; read one job p50 $(field "$r" get_p50) ms, p99 $(field "$r" get_p99) ms (load $(load))"

# 3. Fill to JOBS queued: the rest as the second user (a tenth of them) and the first.
have=$((procs + array + 500))
second=$((jobs / 10))
M $u2 cli-array "$second" >/dev/null
have=$((have + second))
[ "$have" -lt "$jobs" ] && M $u1 cli-array $((jobs - have)) >/dev/null
queued=$(T jobs -A --state queued --limit all -o json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')
step "$queued jobs queued ($u2 has $second); RSS $(rss VmRSS) MB (load $(load))"

# 4. Listings.
r=$(M $u1 jobs 50)
step "\`tessera jobs\` as $u1 (a page of 100 of its $((queued - second))): p50 $(field "$r" p50) ms, p99 $(field "$r" p99) ms (load $(load))"
r=$(M $u1 jobs 10 --limit all -o json)
step "\`tessera jobs --limit all -o json\` as $u1 (every one of its jobs): p50 $(field "$r" p50) ms, p99 $(field "$r" p99) ms (load $(load))"
r=$(M $u2 jobs 50)
step "\`tessera jobs\` as $u2 alone: p50 $(field "$r" p50) ms, p99 $(field "$r" p99) ms (load $(load))"
for _ in 1 2 3 4; do
    M $u1 big-lists 12 &
    bg+=($!)
done
sleep 1
r=$(M $u2 jobs 50)
step "\`tessera jobs\` as $u2 while $u1 lists all its jobs in 4 loops: p50 $(field "$r" p50) ms, p99 $(field "$r" p99) ms (load $(load))"
sleep 5
step "daemon RSS during 4 concurrent full listings: $(rss VmRSS) MB (peak $(rss VmHWM) MB) (load $(load))"
wait "${bg[@]}"
bg=()

# 5. The queue drained.
slices=14
t0=$(date +%s.%N)
T admin undrain 0 >/dev/null
T admin undrain 1 >/dev/null
left() { curl -sf --unix-socket "$sock" http://tessera/v1/health |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"]; print(j["queued"]+j["placing"]+j["running"])'; }
end=$((SECONDS + jobs))
until [ "$(left)" = 0 ]; do
    [ $SECONDS -ge $end ] && fail "the queue did not drain within $jobs s"
    sleep 0.2
done
t1=$(date +%s.%N)
done_ok=$(curl -sf --unix-socket "$sock" http://tessera/v1/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"]["succeeded"])')
rate=$(python3 -c "print('%.1f' % ($queued / ($t1 - $t0)))")
step "queue of $queued drained in $(python3 -c "print('%.1f' % ($t1 - $t0))") s: $rate jobs/s on $slices slices ($done_ok succeeded in all) (load $(load))"
step "daemon RSS after: $(rss VmRSS) MB (peak $(rss VmHWM) MB)"
