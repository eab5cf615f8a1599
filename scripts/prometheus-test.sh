#!/usr/bin/env bash
# Tessera's GET /metrics scraped by a real Prometheus (issue 15): installs Debian's prometheus
# when missing, starts `tessera serve` on a simulated node with the metrics port, and Prometheus
# scraping it every second; then checks through Prometheus's HTTP API that the series exist with
# dcgm-exporter's labels and say what `tessera gpus -o json` and `tessera jobs -o json` say, through
# a layout change and a job's whole life. Also `promtool check rules` on the alert rules.
# Needs root only to install the package; skipped when Prometheus is missing and cannot be.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

check_name=prometheus-test
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
need_packages 'command -v prometheus >/dev/null && command -v promtool >/dev/null' prometheus
tessera_binary

W=$(mktemp -d /tmp/tessera-prometheus.XXXXXX)
pids=()
failed=1
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    if [ "$failed" = 1 ]; then
        for f in "$W"/*.log; do echo "----- $f (last 30 lines)"; tail -30 "$f"; done >&2
        echo "prometheus-test: FAILED; everything is in $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
# A free TCP port on localhost.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

promtool check rules deploy/prometheus/tessera-rules.yml >"$W/promtool.log" 2>&1 ||
    fail "promtool check rules: $(cat "$W/promtool.log")"
step "alert rules: $(grep -o 'SUCCESS.*' "$W/promtool.log")"
promtool test rules deploy/prometheus/tessera-rules.test.yml >"$W/promtool-test.log" 2>&1 ||
    fail "promtool test rules: $(cat "$W/promtool-test.log")"
step "alert rule unit tests: SUCCESS"

mport=$(port)
pport=$(port)
cat >"$W/tessera.toml" <<TOML
[server]
socket = "$W/tessera.sock"
metrics_tcp = "127.0.0.1:$mport"
TOML
"$TESSERA" serve --sim '2xH100-80GB' --sim-state "$W/sim.json" --state-dir "$W/state" --config "$W/tessera.toml" \
    >"$W/tessera.log" 2>&1 &
pids+=($!)
T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
wait_for 30 T gpus >/dev/null 2>&1 || fail "tessera serve does not answer"
cat >"$W/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tessera
    static_configs:
      - targets: ['127.0.0.1:$mport']
YML
prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/data" --web.listen-address="127.0.0.1:$pport" \
    >"$W/prometheus.log" 2>&1 &
pids+=($!)
# The value of a PromQL query, or "none" when it has no result (one series expected).
q() {
    python3 -c '
import json, sys, urllib.parse, urllib.request
url = "http://127.0.0.1:%s/api/v1/query?query=%s" % (sys.argv[1], urllib.parse.quote(sys.argv[2]))
try:
    r = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
except OSError as e:  # Prometheus not up (yet)
    print("unreachable: %s" % e)
    sys.exit(0)
print("none" if not r else r[0]["value"][1] if len(r) == 1 else "many:%d" % len(r))' "$pport" "$1"
}
is() { [ "$(q "$1")" = "$2" ]; }
wait_for 60 is 'up{job="tessera"}' 1 || fail "Prometheus does not scrape the metrics port: $(q 'up')"
step "Prometheus scrapes tessera serve's metrics port"

gpus_json() { T gpus -o json; }
# Every instance the daemon shows is a series with dcgm-exporter's labels, and nothing else is.
instances_agree() {
    gpus_json | python3 -c '
import json, sys, urllib.parse, urllib.request
port = sys.argv[1]
def query(e):
    u = "http://127.0.0.1:%s/api/v1/query?query=%s" % (port, urllib.parse.quote(e))
    return json.load(urllib.request.urlopen(u))["data"]["result"]
want = set()
for g in json.load(sys.stdin)["gpus"]:
    for i in g["instances"]:
        want.add((g["uuid"], str(g["index"]), i["profile"], str(i["gpu_instance_id"]), i["mig_uuid"], str(i["start"])))
got = set()
for s in query("tessera_instance_info"):
    m = s["metric"]
    assert m["Hostname"] and m["modelName"].startswith("NVIDIA"), m
    got.add((m["UUID"], m["gpu"], m["GPU_I_PROFILE"], m["GPU_I_ID"], m["mig_uuid"], m["placement_start"]))
sys.exit(0 if got == want else 1)' "$pport"
}

step "1. a layout change"
T admin layout 0 1g.10gb,1g.10gb,3g.40gb >/dev/null
wait_for 20 instances_agree || fail "tessera_instance_info does not match tessera gpus after the layout change"
g0=$(gpus_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gpus"][0]["uuid"])')
wait_for 10 is "tessera_gpu_compute_slices{UUID=\"$g0\",state=\"idle\"}" 5 ||
    fail "GPU 0's idle compute slices are $(q "tessera_gpu_compute_slices{UUID=\"$g0\",state=\"idle\"}"), not 5"
T admin layout 0 2g.20gb@0,3g.40gb@4 >/dev/null
wait_for 20 instances_agree || fail "tessera_instance_info does not match tessera gpus after the second change"
step "   instance series follow the layout (two changes)"

step "2. a job's whole life"
id=$(T submit --profile 3g.40gb -- sh -c 'sleep 6' | grep -o '[0-9]\+' | head -1)
wait_for 20 sh -c "$TESSERA --socket $W/tessera.sock jobs -o json | grep -q '\"state\": *\"running\"'" ||
    fail "job $id does not run"
uuid=$(T gpus -o json | python3 -c '
import json, sys
for g in json.load(sys.stdin)["gpus"]:
    for i in g["instances"]:
        if '"$id"' in i["jobs"]:
            print(i["mig_uuid"])')
[ -n "$uuid" ] || fail "tessera gpus does not show job $id on an instance"
wait_for 10 is "tessera_instance_holder{tessera_job=\"$id\",GPU_I_PROFILE=\"3g.40gb\"}" 1 ||
    fail "no holder series for job $id: $(q "tessera_instance_holder")"
wait_for 10 is "sum(tessera_jobs{state=\"running\"})" 1 || fail "tessera_jobs{state=running} is $(q 'sum(tessera_jobs{state="running"})')"
wait_for 10 is "tessera_gpu_compute_slices{UUID=\"$g0\",state=\"allocated\"}" 3 || fail "GPU 0's allocated slices are not 3"
T wait "$id" >/dev/null || fail "job $id failed"
wait_for 20 is "tessera_instance_holder{tessera_job=\"$id\"}" none || fail "job $id still holds its instance in Prometheus"
wait_for 10 is "tessera_gpu_compute_slices{UUID=\"$g0\",state=\"allocated\"}" 0 || fail "GPU 0's allocated slices are not 0"
wait_for 10 is "sum(tessera_jobs{state=\"running\"})" none || fail "a running job is still counted"
wait_for 10 is "sum(tessera_queue_wait_seconds_count)" 1 || fail "the queue-wait histogram counts $(q 'sum(tessera_queue_wait_seconds_count)') starts, not 1"
is "sum(tessera_reconfigurations_total{UUID=\"$g0\",outcome=\"completed\"})" 2 ||
    fail "GPU 0's completed reconfigurations are $(q "sum(tessera_reconfigurations_total{UUID=\"$g0\"})"), not 2"
step "   holder, running count and allocated slices came and went with job $id; one wait, two reconfigurations"

step "3. every dashboard query and alert expression runs in Prometheus"
# The dashboard's variables as Grafana would substitute them: every node, a one-minute window.
python3 - "$pport" deploy/grafana/tessera-dashboard.json deploy/prometheus/tessera-rules.yml <<'PY' || fail "a query does not run"
import json, re, sys, urllib.parse, urllib.request
port, dashboard, rules = sys.argv[1:]
exprs = []
for p in json.load(open(dashboard))["panels"]:
    for t in p.get("targets", []):
        exprs.append(("panel '%s'" % p["title"], t["expr"].replace("$host", ".*").replace("$__rate_interval", "1m")))
for line in open(rules):
    m = re.match(r"\s+expr: (.*)$", line)
    if m:
        exprs.append(("alert rule", m.group(1)))
empty = []
for where, e in exprs:
    u = "http://127.0.0.1:%s/api/v1/query?query=%s" % (port, urllib.parse.quote(e))
    try:
        r = json.load(urllib.request.urlopen(u, timeout=5))
    except urllib.error.HTTPError as err:
        sys.exit("%s: %s: %s" % (where, e, err.read().decode()))
    if r["status"] != "success":
        sys.exit("%s: %s: %s" % (where, e, r))
    if not r["data"]["result"]:
        empty.append(where)
print("prometheus-test:    %d queries ran; without data on this node (no such event yet): %s" % (len(exprs), ", ".join(sorted(set(empty))) or "none"))
# The views the dashboard exists for have data here.
for must in ["panel 'Compute slices per GPU'", "panel 'Instances by profile'", "panel 'Memory slices'", "panel 'Slices in use'"]:
    if must in empty:
        sys.exit("%s shows nothing" % must)
PY

failed=0
step "all checks passed"
