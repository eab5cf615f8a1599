# Sourced by the scripts that start real servers for a test (slurm-test.sh, prometheus-test.sh):
# how they report and wait. Set `check_name` before sourcing.

# Says a step, prefixed with the script's name.
step() { echo "$check_name: $*"; }
# Says why the check failed and exits (the script's EXIT trap cleans up).
fail() { echo "$check_name: FAIL: $*" >&2; exit 1; }
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local t=$1; shift
    local end=$((SECONDS + t))
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.3
    done
}
# Installs Debian packages $2… unless the test `$1` (a command line, evaluated) already passes;
# where they cannot be installed (not root, no apt-get), says SKIPPED and exits 0.
need_packages() {
    local have=$1; shift
    eval "$have" && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing $*"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
    else
        echo "$check_name: SKIPPED ($* not installed and cannot be: not root, or no apt-get)" >&2
        exit 0
    fi
}
# Sets TESSERA to the binary under test: $TESSERA when given, else a dev build of this checkout.
tessera_binary() {
    if [ -z "${TESSERA:-}" ]; then
        cargo build --locked -q -p tessera
        TESSERA=$repo/target/debug/tessera
    fi
}
