#!/usr/bin/env bash
# Validate the Kubernetes manifests in deploy/kubernetes/ (docs/kubernetes.md):
#  1. every object against the official OpenAPI schemas of Kubernetes 1.34, 1.35, 1.36 and 1.37,
#     strictly (an unknown field fails, as `kubectl apply --validate=strict` does), with
#     kubernetes-validate from PyPI, installed once into a virtualenv under
#     ${XDG_CACHE_HOME:-~/.cache}/tessera/ and reused from there (also offline);
#  2. what the ConfigMaps carry, with Tessera's own parsers: the node agent's tessera.toml with
#     `tessera kube node-agent --check-config`, and every named config of the mig-parted ConfigMap planned
#     (`tessera mig apply --dry-run`) on simulated nodes of the models it is written for.
# Run by scripts/test.sh after the cargo tests; alone: `scripts/kube-validate.sh`. Needs python3
# (with its venv module) and, for step 2, the `tessera` binary (TESSERA_BIN, else target/debug/tessera,
# built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the release whose bundled schemas are the ones we validate against; a newer release
# is taken by changing this line (the cache keeps one virtualenv per version).
KV_VERSION=1.37.0
K8S_VERSIONS=(1.34 1.35 1.36 1.37)
manifests=(deploy/kubernetes/*.yaml deploy/kubernetes/dra-examples/*.yaml)

die() { echo "kube-validate: $*" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/tessera
venv=$cache/kubernetes-validate-$KV_VERSION
# A virtualenv is complete once `.installed` is written; one left half-made by an interrupted run
# is made again.
if [ ! -f "$venv/.installed" ]; then
    command -v python3 >/dev/null || die "python3 is needed to install kubernetes-validate"
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv" || die "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"
    echo "kube-validate: installing kubernetes-validate $KV_VERSION from PyPI into $venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 20 --retries 1 \
        "kubernetes-validate==$KV_VERSION"; then
        rm -rf "$venv"
        die "cannot install kubernetes-validate $KV_VERSION: PyPI is not reachable (or refused it) and there is no cached copy in $venv. Run this once with network access (or PIP_INDEX_URL naming a mirror); later runs reuse the cache offline."
    fi
    touch "$venv/.installed"
fi

# Which Kubernetes versions this release bundles schemas for; each one we need must be there.
read -r -a bundled <<<"$("$venv/bin/python" -c \
    'from kubernetes_validate.utils import all_versions; print(" ".join(all_versions()))')"
echo "kube-validate: kubernetes-validate $KV_VERSION bundles the schemas of Kubernetes ${bundled[0]} to ${bundled[${#bundled[@]}-1]} (newest ${bundled[${#bundled[@]}-1]})"
for v in "${K8S_VERSIONS[@]}"; do
    case " ${bundled[*]} " in
    *" $v.0 "*) ;;
    *) die "kubernetes-validate $KV_VERSION has no schema for Kubernetes $v (it has: ${bundled[*]}); change KV_VERSION in $0" ;;
    esac
done

# 1. The schemas. --quiet prints only failures; each names the file, the object and the field.
failed=0
for v in "${K8S_VERSIONS[@]}"; do
    if "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$v" "${manifests[@]}"; then
        echo "kube-validate: ${#manifests[@]} files valid against Kubernetes $v (strict)"
    else
        echo "kube-validate: deploy/kubernetes/ is not valid against Kubernetes $v (above)" >&2
        failed=1
    fi
done
[ "$failed" = 0 ] || exit 1

# 2. The ConfigMaps' contents, with the parsers that will read them.
tessera=${TESSERA_BIN:-target/debug/tessera}
if [ ! -x "$tessera" ]; then
    cargo build --locked --quiet -p tessera || die "cannot build the tessera binary for the ConfigMap checks"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Print the value of KEY in the ConfigMap NAME found among the manifests.
configmap_value() {
    "$venv/bin/python" - "$1" "$2" "${manifests[@]}" <<'EOF'
import sys, yaml
name, key, files = sys.argv[1], sys.argv[2], sys.argv[3:]
for f in files:
    for doc in yaml.safe_load_all(open(f)):
        if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
            if key not in doc.get("data", {}):
                sys.exit(f"{f}: ConfigMap {name} has no data key {key}")
            sys.stdout.write(doc["data"][key])
            sys.exit(0)
sys.exit(f"no ConfigMap {name} in deploy/kubernetes/")
EOF
}

configmap_value tessera-node-config tessera.toml >"$tmp/tessera.toml"
"$tessera" kube node-agent --check-config --config "$tmp/tessera.toml" >"$tmp/check.out" 2>&1 ||
    { cat "$tmp/check.out" >&2; die "ConfigMap tessera-node-config, key tessera.toml, is refused (above; line numbers count from the key's first line)"; }
echo "kube-validate: ConfigMap tessera-node-config's tessera.toml is valid (tessera kube node-agent --check-config)"

configmap_value tessera-mig-parted-config config.yaml >"$tmp/config.yaml"
names=$("$venv/bin/python" -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["mig-configs"]))' "$tmp/config.yaml")
# Every config on an H100-80GB (each one here is written for it, among others); all-balanced and
# all-1g.10gb on the other models their entries select, too.
plan() { # SPEC CONFIG
    "$tessera" --sim "$1" --sim-state "$tmp/sim-$RANDOM.json" mig apply --dry-run -f "$tmp/config.yaml" -c "$2" \
        >"$tmp/plan.out" 2>&1 ||
        { cat "$tmp/plan.out" >&2; die "ConfigMap tessera-mig-parted-config: config $2 cannot be applied to a simulated $1 (above; line numbers count from config.yaml's first line)"; }
}
for name in $names; do plan 1xH100-80GB "$name"; done
plan 1xH100-80GB+1xA100-40GB+1xA30+1xH200-141GB all-balanced
plan 1xA100-80GB+1xA100-40GB all-1g.10gb
echo "kube-validate: ConfigMap tessera-mig-parted-config: $(wc -w <<<"$names") configs parse and plan on simulated nodes"

# 3. The image, where an image builder runs offline: the Containerfile needs its base images from
# a registry, which this machine may not reach, so buildah assembles the same layout from scratch
# instead (the binary just built and the libraries `ldd` names, Debian 12's as in the
# Containerfile's run stage), in a storage of its own under $tmp, and runs `tessera --version` in
# it (chroot isolation: no container runtime or cgroups needed). buildah is installed from
# Debian when it is missing and we may (root, apt-get); otherwise the step is skipped, and says so.
if ! command -v buildah >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "kube-validate: installing buildah (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null 2>&1; } \
        || echo "kube-validate: buildah could not be installed"
fi
if command -v buildah >/dev/null && [ "$(id -u)" = 0 ]; then
    b() { buildah --root "$tmp/storage" --runroot "$tmp/run" --storage-driver vfs "$@"; }
    if ! ctr=$(b from scratch 2>"$tmp/buildah.err"); then
        # buildah itself cannot work in this sandbox (its storage, namespaces): not the image's fault.
        echo "kube-validate: image build skipped: buildah cannot start a container here: $(tail -1 "$tmp/buildah.err")"
        exit 0
    fi
    b copy "$ctr" "$tessera" /usr/bin/tessera >/dev/null
    # `ldd` lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
    for lib in $(ldd "$tessera" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        b copy "$ctr" "$(readlink -f "$lib")" "$lib" >/dev/null
    done
    b config --entrypoint '["/usr/bin/tessera"]' "$ctr"
    version=$(b run --isolation chroot "$ctr" -- /usr/bin/tessera --version 2>"$tmp/buildah.err") ||
        { cat "$tmp/buildah.err" >&2; die "the image assembled with buildah does not start tessera (above)"; }
    b commit --quiet "$ctr" localhost/tessera:kube-validate >/dev/null
    size=$(b images --format '{{.Size}}' localhost/tessera:kube-validate)
    b rm "$ctr" >/dev/null
    echo "kube-validate: image assembled offline with buildah from scratch ($size): '$version' runs in it"
else
    echo "kube-validate: image build skipped: needs buildah and root here (the Containerfile itself needs a registry; docs/kubernetes.md)"
fi
