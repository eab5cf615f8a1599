#!/usr/bin/env bash
# The Debian package, end to end: build it (dev profile, the build the test suite just made),
# check its metadata and contents, install it into an empty root with dpkg (maintainer scripts
# run outside a chroot with DPKG_ROOT), run the installed binary, read a man page, verify the
# installed unit with systemd-analyze, check the installed config with `serve --check-config`,
# then remove and purge it. Any failure exits non-zero, naming the check.
#
#   scripts/package-test.sh            (scripts/test.sh runs it after the cargo tests)
set -euo pipefail
cd "$(dirname "$0")/.."

# What the test needs from Debian, installed when it is missing and we may (root, apt-get).
if ! command -v systemd-analyze >/dev/null || ! command -v dpkg-deb >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "package-test: installing systemd (systemd-analyze) and dpkg"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd dpkg >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd dpkg >/dev/null; }
    fi
fi
for tool in dpkg dpkg-deb systemd-analyze; do
    if ! command -v "$tool" >/dev/null; then
        echo "package-test: skipped: '$tool' is not installed and cannot be (not root, or no apt-get)"
        exit 0
    fi
done

fail() {
    echo "package-test: FAILED: $*" >&2
    exit 1
}
step() { echo "package-test: $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-package-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)

step "building the package (dev profile)"
deb=$(scripts/package.sh --profile dev --out "$work/out" | tail -n 1)
[ "$deb" = "$work/out/tessera_${version}_${arch}.deb" ] || fail "package.sh made '$deb', not tessera_${version}_${arch}.deb"

step "metadata"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = tessera ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), the workspace has $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
field Depends | grep -q 'libc6 (>= ' || fail "Depends has no versioned libc6: $(field Depends)"
dpkg-deb --info "$deb" conffiles | grep -qx /etc/tessera/tessera.toml || fail "/etc/tessera/tessera.toml is not a conffile"
for script in postinst prerm postrm; do
    dpkg-deb --info "$deb" "$script" | head -n 1 | grep -q '^#!/bin/sh' || fail "no $script"
done

step "contents"
dpkg-deb --contents "$deb" >"$work/contents"
for path in ./usr/bin/tessera ./usr/lib/systemd/system/tessera.service ./etc/tessera/tessera.toml \
    ./usr/share/man/man1/tessera.1.gz ./usr/share/man/man1/tessera-submit.1.gz ./usr/share/man/man1/tessera-mig-apply.1.gz \
    ./usr/share/bash-completion/completions/tessera ./usr/share/zsh/vendor-completions/_tessera \
    ./usr/share/fish/vendor_completions.d/tessera.fish ./usr/share/doc/tessera/copyright ./usr/share/doc/tessera/operations.md \
    ./usr/lib/systemd/system/tessera-slurm-agent.service ./usr/share/doc/tessera/slurm.md \
    ./usr/share/doc/tessera/observe.md ./usr/share/tessera/prometheus/tessera-rules.yml \
    ./usr/share/tessera/grafana/tessera-dashboard.json; do
    grep -q " $path\$" "$work/contents" || fail "$path is not in the package"
done
grep -q 'tessera-shim\.1' "$work/contents" && fail "the hidden supervisor command has a man page"
for s in prolog epilog task-prolog; do
    grep -q " ./usr/lib/tessera/tessera-slurm-$s -> ../../bin/tessera\$" "$work/contents" ||
        fail "no /usr/lib/tessera/tessera-slurm-$s link to the binary"
done
owners=$(awk '{print $2}' "$work/contents" | sort -u)
[ "$owners" = root/root ] || fail "files not owned by root/root: $owners"
grep -q '^-rwxr-xr-x .* ./usr/bin/tessera$' "$work/contents" || fail "/usr/bin/tessera is not mode 0755"

if command -v lintian >/dev/null; then
    step "lintian"
    lintian --fail-on error "$deb"
fi

step "installing into an empty root"
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status"
# --force-depends: the empty root has no libc6 (the binary runs on this machine's).
dpkg --root="$root" --force-script-chrootless --force-not-root --force-depends --log=/dev/null -i "$deb" >"$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
[ "$(dpkg --root="$root" --status tessera | sed -n 's/^Status: //p')" = "install ok installed" ] || fail "not installed"
[ -L "$root/etc/systemd/system/multi-user.target.wants/tessera.service" ] \
    || fail "postinst did not enable tessera.service (no multi-user.target.wants link)"

step "the installed binary"
got=$("$root/usr/bin/tessera" --version)
[ "$got" = "tessera $version" ] || fail "tessera --version says '$got'"
"$root/usr/bin/tessera" completion bash >/dev/null || fail "tessera completion bash"

step "a man page"
page=$root/usr/share/man/man1/tessera-submit.1.gz
gzip -dc "$page" | grep -q '^\.TH tessera-submit 1' || fail "$page has no .TH header"
if command -v man >/dev/null; then
    MANWIDTH=100 man -l "$page" 2>"$work/man.err" >"$work/man.txt" || { cat "$work/man.err" >&2; fail "man -l $page"; }
    grep -q -- '--gpu-mem' "$work/man.txt" || fail "man -l $page does not show --gpu-mem"
    if grep -v '^$' "$work/man.err" | grep -q .; then cat "$work/man.err" >&2; fail "man -l $page warns"; fi
fi

step "systemd-analyze verify on the installed units"
# systemd-analyze --root resolves the unit's dependencies inside the root: give it this machine's
# targets. Documentation=man: pages are looked up in the root's man pages.
mkdir -p "$root/usr/lib/systemd/system"
for t in /usr/lib/systemd/system/*.target /lib/systemd/system/*.target; do
    [ -f "$t" ] && [ ! -e "$root/usr/lib/systemd/system/${t##*/}" ] && cp "$t" "$root/usr/lib/systemd/system/"
done
# Any message (an unknown key, a bad value, a missing binary or page) fails the test.
for unit in tessera.service tessera-slurm-agent.service; do
    MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" "/usr/lib/systemd/system/$unit" >"$work/verify.log" 2>&1 \
        || { cat "$work/verify.log" >&2; fail "systemd-analyze verify $unit"; }
    if [ -s "$work/verify.log" ]; then cat "$work/verify.log" >&2; fail "systemd-analyze verify $unit printed diagnostics"; fi
done
if systemd-analyze security --offline=true --root="$root" /usr/lib/systemd/system/tessera.service >"$work/security.log" 2>&1; then
    step "$(tail -n 1 "$work/security.log" | sed 's/^→ //')"
fi

step "the installed config"
"$root/usr/bin/tessera" serve --check-config --config "$root/etc/tessera/tessera.toml" >"$work/check.log" 2>&1 \
    || { cat "$work/check.log" >&2; fail "tessera serve --check-config does not accept the installed /etc/tessera/tessera.toml"; }

step "removing and purging"
dpkg --root="$root" --force-script-chrootless --force-not-root --force-depends --log=/dev/null -r tessera >>"$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e "$root/usr/bin/tessera" ] || fail "/usr/bin/tessera is still there after removal"
[ -f "$root/etc/tessera/tessera.toml" ] || fail "removal (not purge) took the conffile"
dpkg --root="$root" --force-script-chrootless --force-not-root --force-depends --log=/dev/null -P tessera >>"$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log" >&2; fail "dpkg -P"; }
[ ! -e "$root/etc/tessera/tessera.toml" ] || fail "purge left /etc/tessera/tessera.toml"
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/tessera.service" ] || fail "purge left the enablement link"
[ ! -e "$root/etc/systemd/system/tessera.service" ] || fail "purge left a mask"

echo "package-test: ok ($(basename "$deb"))"
