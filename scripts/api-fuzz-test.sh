#!/usr/bin/env bash
# API fuzzing from the OpenAPI document (issue 16, item 4): installs schemathesis 4 from PyPI into
# a private virtual environment (cached under ${XDG_CACHE_HOME:-$HOME/.cache}/tessera/), starts
# `tessera serve` on a simulated node with a TCP listener and a token file, and runs schemathesis
# against GET /openapi.json twice: as an admin and as a non-admin user. Checks: no 5xx, status
# codes, content types and response bodies as documented, schema-violating requests refused and
# schema-conforming ones accepted (the document is the contract), no request slower than the
# request timeout (a hang fails), and every 4xx a JSON body with an error message (a post-pass
# over the HAR report). Afterwards the daemon must still answer and its log hold no panic.
#
# The jobs schemathesis submits run for real on the simulated node: both callers are non-root
# users (the admin is `daemon`, named in `admins`; the other is `nobody`), and every job is
# cancelled and the daemon killed on exit. Needs root (the daemon runs jobs as other users).
# Knobs: TESSERA (a built binary), API_FUZZ_EXAMPLES (per operation, default 100),
# API_FUZZ_SEED, API_FUZZ_OUT (keep the reports there).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
check_name=api-fuzz
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
skip() {
    echo "api-fuzz: SKIPPED ($*)" >&2
    exit 0
}

[ "$(id -u)" = 0 ] || skip "needs root: the daemon runs the fuzzer's jobs as other users"
admin=daemon
other=nobody
for u in "$admin" "$other"; do id "$u" >/dev/null 2>&1 || skip "no user $u on this machine"; done
command -v python3 >/dev/null || skip "no python3"

# schemathesis 4 in a private venv, kept between runs.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tessera
venv=$cache/schemathesis-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q 'version 4\.'; then
    echo "api-fuzz: installing schemathesis 4 into $venv"
    mkdir -p "$cache"
    rm -rf "$venv"
    python3 -m venv "$venv" >/dev/null 2>&1 || skip "python3 -m venv failed (python3-venv missing?)"
    "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5' >"$cache/schemathesis-install.log" 2>&1 ||
        { rm -rf "$venv"; skip "pip could not install schemathesis (offline?): see $cache/schemathesis-install.log"; }
fi
ST=$venv/bin/schemathesis
PY=$venv/bin/python

if [ -z "${TESSERA:-}" ]; then
    cargo build --locked -q -p tessera
    TESSERA=$repo/target/debug/tessera
fi

W=$(mktemp -d /tmp/tessera-api-fuzz.XXXXXX)
chmod 755 "$W"
pids=()
failed=1
T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
jobs_gone() {
    ! { T jobs -u "$admin" -o json; T jobs -u "$other" -o json; } 2>/dev/null | grep -q '"state": *"\(running\|placing\)"'
}
cleanup() {
    set +e
    # The jobs' supervisors outlive the daemon: cancel them first.
    if [ -S "$W/tessera.sock" ]; then
        T cancel -u "$admin" >"$W/cancel.log" 2>&1
        T cancel -u "$other" >>"$W/cancel.log" 2>&1
        wait_for 20 jobs_gone || echo "api-fuzz: jobs still running after cancel" >&2
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$failed" = 1 ]; then
        for f in "$W"/*.log; do echo "----- $f (last 40 lines)"; tail -40 "$f"; done >&2
        echo "api-fuzz: FAILED; everything is in $W" >&2
    else
        if [ -n "${API_FUZZ_OUT:-}" ]; then mkdir -p "$API_FUZZ_OUT" && cp -r "$W"/report-* "$W"/*.log "$API_FUZZ_OUT"/; fi
        rm -rf "$W"
    fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
other_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
install -m 600 /dev/null "$W/tokens"
printf '%s %s\n%s %s\n' "$admin" "$admin_token" "$other" "$other_token" >"$W/tokens"
tport=$(port)
# Connection limits high enough for the fuzzer's workers (a 503 would count as a server error);
# short kill grace so cancelled jobs end fast; a fuzzed job's output (`yes`) bounded.
cat >"$W/tessera.toml" <<TOML
admins = ["$admin"]

[server]
socket = "$W/tessera.sock"
tcp = "127.0.0.1:$tport"
token_file = "$W/tokens"

[server.limits]
max_connections_per_peer = 1024

[scheduler]
kill_grace_ms = 500

[jobs]
output_limit_mib = 16
TOML
"$TESSERA" serve --sim '2xH100-80GB' --sim-state "$W/sim.json" --state-dir "$W/state" --config "$W/tessera.toml" \
    >"$W/tessera.log" 2>&1 &
daemon_pid=$!
pids+=("$daemon_pid")
wait_for 30 T gpus >/dev/null 2>&1 || fail "tessera serve does not answer"
step "tessera serve on a simulated 2xH100-80GB, TCP on 127.0.0.1:$tport; $($ST --version)"

# Every 4xx must be a JSON object {"error": {"code", "message"}} with a message; also counts.
cat >"$W/post.py" <<'PY'
"""Reads schemathesis' HAR reports: requests sent, statuses, and 4xx replies without a message."""
import json, sys
from collections import Counter

bad, statuses, total = [], Counter(), 0
for path in sys.argv[1:]:
    with open(path) as f:
        har = json.load(f)
    for e in har["log"]["entries"]:
        total += 1
        req, res = e["request"], e["response"]
        status = res["status"]
        statuses[status // 100 * 100] += 1
        if not 400 <= status < 500:
            continue
        text = res.get("content", {}).get("text") or ""
        try:
            body = json.loads(text)
            msg = body["error"]["message"]
            ok = isinstance(msg, str) and msg.strip() != "" and isinstance(body["error"].get("code"), str)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            bad.append(f'{req["method"]} {req["url"]} -> {status}: {text[:200]!r}')
print(f"requests={total} " + " ".join(f"{k // 100}xx={v}" for k, v in sorted(statuses.items())))
for b in bad[:20]:
    print("4xx without a JSON error message: " + b)
sys.exit(1 if bad else 0)
PY

# A 422 is a schema-conforming request that cannot run on this node (a profile this GPU model
# lacks, more GPUs than it has): accepted as an answer to valid data, as 404 and 409 are by
# default. Submissions (and external work) are checked against the node as it is: the working
# directory must exist and the program be on the job's PATH, the tenant be configured, and the
# request's fields agree with each other (gpus_per_rank > 1 only with whole_gpu, ...). No JSON
# Schema can say that, so their schema-valid requests may be refused with 400; every other check
# still runs on them.
cat >"$W/schemathesis.toml" <<'TOML'
[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
negative_data_rejection.enabled = true
unsupported_method.enabled = true

[checks.positive_data_acceptance]
enabled = true
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path-regex = "^/v1/(jobs|jobs/dry-run|work)$"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

# A wait is a long poll: it answers when the job ends or its timeout_ms passes (30 s by default,
# at most 300 s). Here it is asked to give up after 2 s, so that a wait still unanswered at the
# request timeout (15 s) is a hang, not a running job.
[[operations]]
include-name = "GET /v1/jobs/{id}/wait"
parameters = { "query.timeout_ms" = 2000 }
TOML

examples=${API_FUZZ_EXAMPLES:-100}
seed=${API_FUZZ_SEED:-$RANDOM}
fuzz() { # NAME TOKEN
    local name=$1 token=$2 rc=0
    step "schemathesis as $name ($examples examples per operation, seed $seed)"
    (cd "$W" && "$ST" --no-color --config-file "$W/schemathesis.toml" run "http://127.0.0.1:$tport/openapi.json" \
        -H "Authorization: Bearer $token" \
        --max-examples "$examples" --seed "$seed" --request-timeout 15 --workers 1 \
        --suppress-health-check all \
        --report har --report-har-path "$W/report-$name.har" \
        --report junit --report-junit-path "$W/report-$name.xml") >"$W/schemathesis-$name.log" 2>&1 || rc=$?
    tail -25 "$W/schemathesis-$name.log" | sed "s/^/api-fuzz [$name]: /"
    [ "$rc" = 0 ] || fail "schemathesis as $name found failures (exit $rc): $W/schemathesis-$name.log"
    "$PY" "$W/post.py" "$W/report-$name.har" >"$W/post-$name.log" 2>&1 ||
        fail "$(cat "$W/post-$name.log")"
    step "$name: $(head -1 "$W/post-$name.log"); every 4xx has a JSON error message"
}
fuzz admin "$admin_token"
fuzz user "$other_token"

kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited"
wait_for 10 T gpus >/dev/null 2>&1 || fail "the daemon no longer answers"
curl -sf -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$tport/v1/health" -o /dev/null ||
    fail "the daemon no longer answers on TCP"
! grep -qi 'panick' "$W/tessera.log" || fail "the daemon's log has a panic: $(grep -i -m3 'panick' "$W/tessera.log")"
step "the daemon is up and its log has no panic"
failed=0
echo "api-fuzz: all checks passed"
