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
