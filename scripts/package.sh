#!/usr/bin/env bash
# Build the Debian package of Tessera with dpkg-deb alone (no cargo-deb, no debhelper):
#   /usr/bin/tessera, the systemd unit, /etc/tessera/tessera.toml (a conffile, from
#   examples/tessera.toml), man pages and shell completions generated from the CLI itself,
#   the copyright file, and maintainer scripts that do what debhelper's systemd snippets do.
#
#   scripts/package.sh [--profile release|dev] [--out DIR]
#
# The version is the workspace's (Cargo.toml), the architecture `dpkg --print-architecture`'s.
# Prints the path of the .deb. docs/operations.md says how to install and run it.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/package.sh [--profile release|dev] [--out DIR]" >&2
    echo "  --profile  the cargo profile to build and package (default: release)" >&2
    echo "  --out      where the .deb goes (default: \${CARGO_TARGET_DIR:-target}/debian)" >&2
}

target_dir=${CARGO_TARGET_DIR:-target}
profile=release
out=$target_dir/debian
while [ $# -gt 0 ]; do
    case $1 in
        --profile) [ $# -ge 2 ] || { usage; exit 2; }; profile=$2; shift 2 ;;
        --profile=*) profile=${1#*=}; shift ;;
        --out) [ $# -ge 2 ] || { usage; exit 2; }; out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "package.sh: unknown argument '$1'" >&2; usage; exit 2 ;;
    esac
done
case $profile in
    release) profile_dir=release ;;
    dev) profile_dir=debug ;;
    *) echo "package.sh: --profile must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
for tool in dpkg dpkg-deb gzip strip; do
    command -v "$tool" >/dev/null || { echo "package.sh: '$tool' is needed (Debian: apt-get install dpkg-dev binutils gzip)" >&2; exit 1; }
done
for f in examples/tessera.toml deploy/systemd/tessera.service docs/operations.md README.md; do
    [ -f "$f" ] || { echo "package.sh: $f is missing" >&2; exit 1; }
done

# The workspace version: the `version` line of [workspace.package].
version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "package.sh: no version in [workspace.package] of Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

cargo build --locked --profile "$profile" -p tessera
bin=$target_dir/$profile_dir/tessera

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
# debian/tessera/ is where dpkg-shlibdeps expects the package's files.
mkdir -p "$work/debian"
printf 'Source: tessera\n\nPackage: tessera\nArchitecture: any\n' >"$work/debian/control"
root=$work/debian/tessera
doc=$root/usr/share/doc/tessera

install -D -m 0755 "$bin" "$root/usr/bin/tessera"
strip --strip-unneeded "$root/usr/bin/tessera"
install -D -m 0644 deploy/systemd/tessera.service "$root/usr/lib/systemd/system/tessera.service"
install -D -m 0644 deploy/systemd/tessera-slurm-agent.service "$root/usr/lib/systemd/system/tessera-slurm-agent.service"
install -D -m 0644 examples/tessera.toml "$root/etc/tessera/tessera.toml"
# Slurm's Prolog=, Epilog= and TaskProlog= take a program without arguments: the binary picks
# the command from these names (docs/slurm.md).
mkdir -p "$root/usr/lib/tessera"
for s in prolog epilog task-prolog; do ln -s ../../bin/tessera "$root/usr/lib/tessera/tessera-slurm-$s"; done

# Man pages and completions from the binary being packaged, so they match its --help.
mkdir -p "$root/usr/share/man/man1"
"$root/usr/bin/tessera" generate-man "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1
"$root/usr/bin/tessera" completion bash | install -D -m 0644 /dev/stdin "$root/usr/share/bash-completion/completions/tessera"
"$root/usr/bin/tessera" completion zsh | install -D -m 0644 /dev/stdin "$root/usr/share/zsh/vendor-completions/_tessera"
"$root/usr/bin/tessera" completion fish | install -D -m 0644 /dev/stdin "$root/usr/share/fish/vendor_completions.d/tessera.fish"

install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 docs/operations.md "$doc/operations.md"
install -D -m 0644 docs/slurm.md "$doc/slurm.md"
install -D -m 0644 docs/observe.md "$doc/observe.md"
# Alert rules and the Grafana dashboard, for the operator's Prometheus and Grafana to load.
install -D -m 0644 deploy/prometheus/tessera-rules.yml "$root/usr/share/tessera/prometheus/tessera-rules.yml"
install -D -m 0644 deploy/grafana/tessera-dashboard.json "$root/usr/share/tessera/grafana/tessera-dashboard.json"
if [ -f docs/config.md ]; then install -D -m 0644 docs/config.md "$doc/config.md"; fi

# Machine-readable copyright (DEP-5): Tessera itself, and every crate linked into the binary.
{
    cat <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tessera
Comment: The binary is statically linked with the Rust crates listed at the end, each under its
 own license as its crate declares it.

Files: *
Copyright: The Tessera developers
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file
 except in compliance with the License. You may obtain a copy of the License at
 http://www.apache.org/licenses/LICENSE-2.0
 .
 On Debian systems, the full text of the Apache License, Version 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.

Files: linked Rust crates
Copyright: their authors
License: various, per crate (SPDX expressions)
Comment: name, version and license of each crate in the binary:
EOF
    # Registry crates only: Tessera's own (path dependencies) are the `Files: *` above.
    cargo tree --locked -p tessera -e normal --prefix none -f '{p} {l}' | grep -v ' (/' | sort -u | sed 's/^/ /'
} >"$work/copyright"
install -D -m 0644 "$work/copyright" "$doc/copyright"

# Dependencies: from the binary's shared libraries (dpkg-shlibdeps), else glibc by hand. NVML
# (libnvidia-ml.so.1) is loaded at run time when present, so it is no dependency.
depends=
if command -v dpkg-shlibdeps >/dev/null; then
    depends=$(cd "$work" && dpkg-shlibdeps -O -e debian/tessera/usr/bin/tessera 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
[ -n "$depends" ] || depends="libc6 (>= 2.34), libgcc-s1"

mkdir -p "$root/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: tessera
Version: $version
Architecture: $arch
Maintainer: The Tessera developers <tessera@example.invalid>
Installed-Size: $installed_size
Depends: $depends
Suggests: nvidia-persistenced
Section: admin
Priority: optional
Homepage: https://example.invalid/tessera
Description: MIG partitioning and fair GPU job scheduling for NVIDIA GPUs
 Tessera decides how NVIDIA GPUs are cut into MIG instances and makes the hardware
 match (tessera mig, compatible with mig-parted's configs), and runs people's jobs on
 the slice that fits, next to the right CPUs, fairly among tenants (tessera serve,
 submit, jobs, logs). Without GPUs it runs on a simulated node.
 .
 The tessera service is enabled on installation but not started: edit
 /etc/tessera/tessera.toml, then run "systemctl start tessera".
EOF
echo /etc/tessera/tessera.toml >"$root/DEBIAN/conffiles"

# Maintainer scripts: debhelper's dh_installsystemd snippets (compat 13, --no-start): enable on
# installation, reload systemd, restart a running daemon after an upgrade (running jobs keep
# their supervisors: the unit has KillMode=process), stop it on removal. They start no daemon
# and no job, and honour DPKG_ROOT (installation into another root).
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	deb-systemd-helper unmask 'tessera.service' >/dev/null || true
	# was-enabled defaults to true, so a new installation enables the unit.
	if deb-systemd-helper --quiet was-enabled 'tessera.service'; then
		deb-systemd-helper enable 'tessera.service' >/dev/null || true
	else
		deb-systemd-helper update-state 'tessera.service' >/dev/null || true
	fi
	if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			# An upgrade: a running daemon restarts on the new binary; a stopped one stays stopped.
			deb-systemd-invoke try-restart 'tessera.service' >/dev/null || true
		else
			echo "tessera: enabled, not started; edit /etc/tessera/tessera.toml, then: systemctl start tessera"
		fi
	fi
fi
exit 0
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Stopping ends the daemon only; running jobs finish under their supervisors.
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop 'tessera.service' >/dev/null || true
fi
exit 0
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper mask 'tessera.service' >/dev/null || true
	fi
fi
if [ "$1" = "purge" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge 'tessera.service' >/dev/null || true
		deb-systemd-helper unmask 'tessera.service' >/dev/null || true
	fi
	# The state (/var/lib/tessera: the job database and outputs) is kept: remove it by hand.
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
# md5sums of every file but the conffiles (dpkg keeps theirs), as dh_md5sums writes it.
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

deb=$out/tessera_${version}_${arch}.deb
# The release package is compressed hard; the test's (dev) one quickly.
if [ "$profile" = release ]; then compression=(-Zxz); else compression=(-Zgzip -z1); fi
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
