#!/usr/bin/env bash
# The daemon's web view (/ui) in a real browser (issue 15): installs Debian's chromium and
# python3-websockets when missing, starts `tessera serve` on a simulated node with a TCP listener
# and a token file, and drives headless Chromium over the DevTools protocol: the login form
# refuses a wrong token and takes the right one; the GPUs and instances on the page (data-*
# attributes of the SVG blocks) equal `tessera gpus -o json`; a job's start and a layout change
# reach the page without a reload; a job's command containing <script> shows as text; another
# user's session sees only their own jobs; a narrow window does not scroll sideways; Tab focuses
# an instance block; logout ends the session. A PNG screenshot of each state is saved in
# $WEB_TEST_OUT (default: a temporary directory, printed).
# Needs root only to install packages; skipped when Chromium is missing and cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=/usr/bin/python3 # Debian's python, where python3-websockets installs

check_name=web-test
# shellcheck source=scripts/lib/check.sh
source "$repo/scripts/lib/check.sh"
need_packages 'command -v chromium >/dev/null && [ -x "$PY" ] && "$PY" -c "import websockets" 2>/dev/null' \
    chromium python3-websockets
tessera_binary

W=$(mktemp -d /tmp/tessera-web.XXXXXX)
OUT=${WEB_TEST_OUT:-$(mktemp -d /tmp/tessera-web-shots.XXXXXX)}
mkdir -p "$OUT"
pids=()
failed=1
cleanup() {
    set +e
    # The jobs' supervisors outlive the daemon: cancel them first.
    if [ -S "$W/tessera.sock" ]; then
        T cancel -u root >"$W/cancel.log" 2>&1
        T cancel -u "$other" >>"$W/cancel.log" 2>&1
        wait_for 20 jobs_gone || echo "web-test: jobs still running after cancel" >&2
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$failed" = 1 ]; then
        for f in "$W"/*.log; do echo "----- $f (last 30 lines)"; tail -30 "$f"; done >&2
        echo "web-test: FAILED; everything is in $W, screenshots in $OUT" >&2
    else
        rm -rf "$W"
    fi
}
T() { "$TESSERA" --socket "$W/tessera.sock" "$@"; }
# No job of either user is placing or running.
jobs_gone() {
    ! { T jobs -u root -o json; T jobs -u "$other" -o json; } 2>/dev/null | grep -q '"state": *"\(running\|placing\)"'
}
other=nobody
trap cleanup EXIT
# A free TCP port on localhost.
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Two users with tokens: root (an admin) and nobody, who sees only their own jobs.
id "$other" >/dev/null 2>&1 || fail "no user $other on this machine"
root_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
other_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
install -m 600 /dev/null "$W/tokens"
printf 'root %s\n%s %s\n' "$root_token" "$other" "$other_token" >"$W/tokens"
tport=$(port)
cat >"$W/tessera.toml" <<TOML
[server]
socket = "$W/tessera.sock"
tcp = "127.0.0.1:$tport"
token_file = "$W/tokens"
TOML
"$TESSERA" serve --sim '2xH100-80GB' --sim-state "$W/sim.json" --state-dir "$W/state" --config "$W/tessera.toml" \
    >"$W/tessera.log" 2>&1 &
pids+=($!)
wait_for 30 T gpus >/dev/null 2>&1 || fail "tessera serve does not answer"
step "tessera serve on a simulated 2xH100-80GB, TCP on 127.0.0.1:$tport"
# A mixed layout on GPU 0 (units 5-7 free), and one on GPU 1 that strands unit 7 (no H100
# profile fits there alone).
T admin layout 0 3g.40gb@0,1g.10gb@4 >/dev/null
T admin layout 1 4g.40gb@0,2g.20gb@4,1g.10gb@6 >/dev/null

cport=$(port)
chromium --headless=new --no-sandbox --disable-gpu --no-first-run --no-default-browser-check \
    --hide-scrollbars --remote-debugging-port="$cport" --user-data-dir="$W/chrome" --window-size=1280,900 \
    about:blank >"$W/chromium.log" 2>&1 &
pids+=($!)
wait_for 30 curl -sf "http://127.0.0.1:$cport/json/version" -o /dev/null || fail "chromium's DevTools port does not answer"
step "headless $(chromium --version 2>/dev/null | head -1) on DevTools port $cport; screenshots in $OUT"

cat >"$W/drive.py" <<'PY'
"""Drives the web view through Chromium's DevTools protocol (one page target)."""
import asyncio, base64, json, os, subprocess, sys, time, urllib.parse, urllib.request

import websockets

CPORT, BASE, TESSERA, SOCK, OUT = sys.argv[1:6]
ROOT_TOKEN, OTHER, OTHER_TOKEN, TPORT = os.environ["ROOT_TOKEN"], os.environ["OTHER"], os.environ["OTHER_TOKEN"], os.environ["TPORT"]


def step(msg):
    print("web-test: " + msg, flush=True)


class Fail(Exception):
    pass


def tessera(*args, token=None):
    if token:
        env = dict(os.environ, TESSERA_TOKEN=token)
        cmd = [TESSERA, "--tcp", "127.0.0.1:" + TPORT, *args]
    else:
        env, cmd = os.environ, [TESSERA, "--socket", SOCK, *args]
    # /tmp: a working directory every user may enter (a job starts in its submitter's).
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp")
    if r.returncode != 0:
        raise Fail("tessera %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def api_gpus():
    return json.loads(tessera("gpus", "-o", "json"))


def want_blocks(gpus):
    """What the page must show: (gpu uuid, profile, GI, start, size, job ids) per instance."""
    return sorted(
        (g["uuid"], i["profile"], "" if i["gpu_instance_id"] is None else str(i["gpu_instance_id"]),
         str(i["start"]), str(i["size"]), ",".join(str(j) for j in i["jobs"]))
        for g in gpus["gpus"] for i in g["instances"])


class Page:
    def __init__(self, ws):
        self.ws, self.next_id, self.waiting, self.events = ws, 0, {}, []

    async def pump(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self.waiting:
                self.waiting.pop(msg["id"]).set_result(msg)
            else:
                self.events.append(msg)

    async def call(self, method, **params):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, 30)
        if "error" in msg:
            raise Fail("%s: %s" % (method, msg["error"]))
        return msg["result"]

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise Fail("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    async def until(self, expr, what, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if await self.js(expr):
                    return
            except Fail:
                pass
            await asyncio.sleep(0.25)
        raise Fail("%s (waited %d s for: %s)" % (what, timeout, expr))

    async def loaded(self, path):
        await self.until("location.pathname === %s && document.readyState === 'complete'" % json.dumps(path),
                         "the page did not load " + path)

    async def shot(self, name, whole=True):
        """A PNG of the whole page (or of the window only)."""
        if whole:
            m = await self.call("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
            r = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        else:
            r = await self.call("Page.captureScreenshot", format="png")
        path = os.path.join(OUT, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        step("   screenshot " + path)

    async def blocks(self):
        return sorted(tuple(x) for x in await self.js("""
            [...document.querySelectorAll('svg.grid.across g.inst')].map(g => [g.dataset.gpu, g.dataset.profile,
              g.dataset.gi, g.dataset.start, g.dataset.size, g.dataset.jobs])"""))

    async def matches_api(self):
        want, got = want_blocks(api_gpus()), await self.blocks()
        return want == got, want, got

    async def until_matches_api(self, what, timeout=20):
        end = time.time() + timeout
        while True:
            ok, want, got = await self.matches_api()
            if ok:
                return want
            if time.time() > end:
                raise Fail("%s: the page shows %s, tessera gpus says %s" % (what, got, want))
            await asyncio.sleep(0.3)


def form_session(token):
    """A session opened the way the form does (no browser): its cookie."""
    req = urllib.request.Request(BASE + "/ui/login", data=urllib.parse.urlencode({"token": token}).encode())

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        urllib.request.build_opener(NoRedirect).open(req)
    except urllib.error.HTTPError as e:
        if e.code != 303:
            raise Fail("login as %s: %d" % (OTHER, e.code))
        return e.headers["Set-Cookie"].split(";")[0]
    raise Fail("login did not redirect")


def page_as(cookie):
    req = urllib.request.Request(BASE + "/ui", headers={"Cookie": cookie})
    return urllib.request.urlopen(req).read().decode()


async def main():
    targets = json.load(urllib.request.urlopen("http://127.0.0.1:%s/json/list" % CPORT))
    target = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=64 << 20) as ws:
        p = Page(ws)
        pump = asyncio.ensure_future(p.pump())
        await p.call("Page.enable")
        await p.call("Runtime.enable")
        await p.call("Network.enable")
        await p.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)

        step("1. the login form")
        await p.call("Page.navigate", url=BASE + "/ui")
        await p.loaded("/ui/login")
        await p.shot("01-login.png")
        await p.js("document.getElementById('token').value = 'not-the-token-0000000000'; document.querySelector('form').submit()")
        await p.until("(document.getElementById('login-error') || {}).textContent === 'the token is not valid'",
                      "a wrong token was not refused as not valid")
        cookies = (await p.call("Network.getCookies", urls=[BASE + "/ui"]))["cookies"]
        if any(c["name"] == "tessera_session" for c in cookies):
            raise Fail("a wrong token got a session cookie")
        step("   a wrong token is refused: %s" % await p.js("document.getElementById('login-error').textContent"))
        await p.shot("02-login-refused.png")
        await p.js("document.getElementById('token').value = %s; document.querySelector('form').submit()" % json.dumps(ROOT_TOKEN))
        await p.loaded("/ui")
        cookies = (await p.call("Network.getCookies", urls=[BASE + "/ui"]))["cookies"]
        c = next((c for c in cookies if c["name"] == "tessera_session"), None)
        if not c or not c["httpOnly"] or not c["secure"] or c.get("sameSite") != "Strict" or c["path"] != "/ui":
            raise Fail("the session cookie is not HttpOnly, Secure, SameSite=Strict, Path=/ui: %s" % c)
        if await p.js("document.cookie.includes('tessera_session')"):
            raise Fail("script can read the session cookie")
        step("   the right token logs in (cookie HttpOnly, Secure, SameSite=Strict, Path=/ui)")

        step("2. the page equals tessera gpus -o json")
        want = await p.until_matches_api("the idle node")
        gpus_on_page = await p.js("[...document.querySelectorAll('article.gpu')].map(a => a.dataset.gpu)")
        if gpus_on_page != [g["uuid"] for g in api_gpus()["gpus"]]:
            raise Fail("GPUs on the page %s are not the API's" % gpus_on_page)
        stranded = await p.js("[...document.querySelectorAll('svg.across rect.stranded')].map(r => r.closest('article').dataset.gpuIndex + ':' + r.dataset.unit)")
        free = await p.js("[...document.querySelectorAll('article.gpu[data-gpu-index=\"0\"] svg.across rect.free')].map(r => r.dataset.unit)")
        if stranded != ["1:7"] or free != ["5", "6", "7"]:
            raise Fail("free units %s and stranded ones %s, not GPU 0's 5-7 free and GPU 1's 7 stranded" % (free, stranded))
        await p.until("document.getElementById('status').textContent === 'live'", "the live stream did not connect")
        step("   %d instances on 2 GPUs, GPU 0's units 5-7 free, GPU 1's unit 7 stranded; live stream connected" % len(want))
        await p.shot("03-idle.png")

        step("3. a job starts: the page follows without a reload")
        await p.js("window.__mark = 1")
        job = tessera("submit", "--profile", "3g.40gb", "--", "sh", "-c", "echo '<script>alert(1)</script>'; sleep 120").split()[-1]
        job = "".join(ch for ch in job if ch.isdigit())
        await p.until("[...document.querySelectorAll('svg.grid.across g.inst')].some(g => g.dataset.jobs.split(',').includes('%s'))" % job,
                      "job %s never showed on its slice" % job)
        await p.until_matches_api("with job " + job)
        if await p.js("window.__mark") != 1:
            raise Fail("the page was reloaded")
        if not await p.js("document.getElementById('jobs').textContent.includes(\"<script>alert(1)</script>\")"):
            raise Fail("the job's command does not show as text")
        if await p.js("document.scripts.length") != 1:
            raise Fail("a script element came from a job's command")
        other_job = tessera("submit", "--profile", "1g.10gb", "--", "sleep", "120", token=OTHER_TOKEN)
        other_job = "".join(ch for ch in other_job.split()[-1] if ch.isdigit())
        await p.until("document.querySelector('#jobs tr[data-job=\"%s\"]') !== null" % other_job,
                      "the admin's page does not list %s's job %s" % (OTHER, other_job))
        await p.until_matches_api("with jobs %s and %s" % (job, other_job))
        # A queued job and why it waits: GPU 1 is drained and GPU 0 has no room for a 4g.40gb.
        tessera("admin", "drain", "1", "--reason", "firmware <update>")
        queued = tessera("submit", "--profile", "4g.40gb", "--", "sleep", "120", token=OTHER_TOKEN)
        queued = "".join(ch for ch in queued.split()[-1] if ch.isdigit())
        await p.until("(document.querySelector('#jobs tr[data-job=\"%s\"][data-state=\"queued\"] td[data-label=\"Where or why\"]') || {textContent: ''}).textContent.includes(':')" % queued,
                      "the queued job %s never showed why it waits" % queued)
        why = await p.js("document.querySelector('#jobs tr[data-job=\"%s\"] td[data-label=\"Where or why\"]').textContent" % queued)
        await p.until("document.querySelector('article.gpu[data-gpu-index=\"1\"] .badge.warn').textContent.includes('firmware <update>')",
                      "GPU 1's drain does not show")
        step("   job %s waits: %s; GPU 1 shows its drain" % (queued, why))
        label = await p.js("document.querySelector('svg.across g.inst[data-jobs=\"%s\"]').getAttribute('aria-label')" % job)
        step("   job %s on its slice (%s), the page not reloaded, its <script> shown as text" % (job, label))
        await p.shot("04-jobs.png")
        theirs = page_as(form_session(OTHER_TOKEN))
        if 'data-job="%s"' % other_job not in theirs or 'data-job="%s"' % job in theirs:
            raise Fail("%s's page lists the wrong jobs" % OTHER)
        step("   %s's own session lists job %s and not root's job %s" % (OTHER, other_job, job))

        step("4. a layout change: the page shows the new grid")
        # GPU 1's 4g.40gb goes; its 2g.20gb and 1g.10gb (perhaps busy with a job) stay.
        tessera("admin", "layout", "1", "1g.10gb@0,1g.10gb@1,1g.10gb@2,1g.10gb@3,2g.20gb@4,1g.10gb@6")
        await p.until("document.querySelectorAll('article.gpu[data-gpu-index=\"1\"] svg.across g.inst').length === 6",
                      "GPU 1's new layout never showed")
        await p.until_matches_api("after the layout change")
        if await p.js("window.__mark") != 1:
            raise Fail("the page was reloaded")
        if not await p.js("document.getElementById('events').textContent.includes('GPU 1: layout now')"):
            raise Fail("the layout change is not among the recent events")
        step("   GPU 1 shows its new instances; the change is among the recent events")
        await p.shot("05-layout.png")

        step("5. a narrow window and the keyboard")
        await p.call("Emulation.setDeviceMetricsOverride", width=420, height=900, deviceScaleFactor=1, mobile=False)
        await asyncio.sleep(0.5)
        sw = await p.js("[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]")
        if max(sw[0], sw[1]) > sw[2]:
            raise Fail("the narrow window scrolls sideways: scrollWidth %s > innerWidth %d" % (sw[:2], sw[2]))
        step("   420 px wide: no horizontal scroll (scrollWidth %d)" % sw[0])
        await p.shot("06-narrow.png", whole=False)
        await p.shot("06-narrow-whole.png")
        await p.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        await p.js("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
        focused = None
        for _ in range(10):
            for kind in ("rawKeyDown", "keyUp"):
                await p.call("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)
            focused = await p.js("document.activeElement.matches('g.inst') ? document.activeElement.getAttribute('aria-label') : null")
            if focused:
                break
        if not focused:
            raise Fail("Tab never focused an instance block")
        step("   Tab focuses an instance block: \"%s\"" % focused)
        await p.call("Emulation.setDeviceMetricsOverride", width=1280, height=600, deviceScaleFactor=1, mobile=False)
        await p.shot("07-focus.png", whole=False)

        step("6. logout")
        await p.js("document.querySelector('form.logout').submit()")
        await p.loaded("/ui/login")
        await p.call("Page.navigate", url=BASE + "/ui")
        await p.loaded("/ui/login")
        step("   logged out: /ui leads to the login form again")
        pump.cancel()


try:
    asyncio.run(main())
except Fail as e:
    print("web-test: FAIL: %s" % e, file=sys.stderr)
    sys.exit(1)
PY
ROOT_TOKEN=$root_token OTHER=$other OTHER_TOKEN=$other_token TPORT=$tport \
    "$PY" "$W/drive.py" "$cport" "http://127.0.0.1:$tport" "$TESSERA" "$W/tessera.sock" "$OUT" ||
    fail "the browser checks failed (above)"
failed=0
echo "web-test: screenshots in $OUT"
echo "web-test: all checks passed"
