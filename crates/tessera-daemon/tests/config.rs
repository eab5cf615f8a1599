//! The configuration as an operator meets it: every mistake refused at its file, line and
//! column (snapshots), and the reference (`docs/config.md`) and the shipped example
//! (`examples/tessera.toml`) naming exactly the fields `Config` has, with its defaults and
//! ranges, so neither can drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_daemon::config::{Config, QuotaConfig, TenantConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A 40-character token.
const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

/// A private token file with `text` (mode 0600 unless `mode` says otherwise).
fn token_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Every kind of mistake, each in a small file, with the error the daemon gives.
#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let open = token_file(d, "open-tokens", &format!("root {TOKEN}\n"), 0o644);
    let writable = token_file(d, "writable-tokens", &format!("root {TOKEN}\n"), 0o620);
    let empty = token_file(d, "empty-tokens", "# nobody yet\n", 0o600);
    let unknown =
        token_file(d, "unknown-user-tokens", &format!("root {TOKEN}\n\nno-such-user-tessera {TOKEN}x\n"), 0o600);
    let weak = token_file(d, "weak-tokens", "root hunter2\n", 0o600);
    let twice = token_file(d, "twice-tokens", &format!("root {TOKEN}\nnobody {TOKEN}\n"), 0o600);
    let tcp = |file: &Path| format!("[server]\ntcp = \"127.0.0.1:7373\"\ntoken_file = \"{}\"\n", file.display());
    let cases: Vec<(&str, String)> = vec![
        ("unknown field", "[server]\nsocket = \"/run/t.sock\"\nsockett = \"/x\"\n".into()),
        ("unknown section", "[schedular]\ntick_ms = 5\n".into()),
        ("removed token_user", "[server]\ntoken_user = \"nobody\"\n".into()),
        ("wrong type", "[scheduler]\nbackfill = \"yes\"\n".into()),
        ("out of range: 2^64-1", "[scheduler]\n\n\n\n\n\n\n\n\n\n\ntick_ms = 18446744073709551615\n".into()),
        ("out of range: zero", "[jobs]\noutput_limit_mib = 0\n".into()),
        ("out of range: limits", "[server.limits]\nmax_connections = 1000000\n".into()),
        (
            "out of range: quota",
            "[[tenants]]\nname = \"ml\"\nquota = { compute_slices = 7, memory_slices = 999999 }\n".into(),
        ),
        ("out of range: weight", "[[tenants]]\nname = \"ml\"\nweight = -1.5\n".into()),
        ("negative duration", "[health]\nstop_grace_ms = -1\n".into()),
        ("unknown tenant", "[[tenants]]\nname = \"research\"\n\n[users]\nroot = \"reserch\"\n".into()),
        ("tenant twice", "[[tenants]]\nname = \"ml\"\n[[tenants]]\nname = \"ml\"\n".into()),
        ("unknown admin", "admins = [\"root\", \"no-such-user-tessera\"]\n".into()),
        ("unknown user", "[users]\nno-such-user-tessera = \"default\"\n".into()),
        ("tcp without tokens", "[server]\ntcp = \"127.0.0.1:7373\"\n".into()),
        ("tcp not IP:PORT", "[server]\ntcp = \"localhost\"\ntoken_file = \"/etc/tessera/tokens\"\n".into()),
        ("relative path", "[jobs]\noutput_dir = \"output\"\n".into()),
        ("kubernetes: strategy", "[kubernetes]\ntenant = \"default\"\nmig_strategy = \"mix\"\n".into()),
        ("kubernetes: relative path", "[kubernetes]\ndevice_plugin_dir = \"kubelet/device-plugins\"\n".into()),
        ("kubernetes: unknown tenant", "[kubernetes]\ntenant = \"ml\"\n".into()),
        ("kubernetes: interval", "[kubernetes]\npod_resources_interval_ms = 0\n".into()),
        ("kubernetes: api server not a URL", "[kubernetes]\napi_server = \"10.0.0.1:6443\"\n".into()),
        ("kubernetes: empty ConfigMap name", "[kubernetes]\nmig_config_map = \" \"\n".into()),
        (
            "kubernetes: DRA driver not a DNS name",
            "[kubernetes.dra]\nenabled = true\ndriver = \"GPU_Tessera\"\n".into(),
        ),
        ("kubernetes: nothing given out", "[kubernetes]\ndevice_plugin = false\n".into()),
        ("kubernetes: DRA republish interval", "[kubernetes.dra]\nrepublish_interval_ms = 0\n".into()),
        ("kubernetes: DRA unknown key", "[kubernetes.dra]\nenable = true\n".into()),
        ("metrics port not IP:PORT", "[server]\nmetrics_tcp = \"localhost:9400\"\n".into()),
        ("slurm: file style", "[slurm]\nfiles = \"many\"\n".into()),
        ("slurm: empty restart command", "[slurm]\nrestart = [[\"systemctl\", \"restart\", \"slurmd\"], []]\n".into()),
        ("slurm: agent interval", "[slurm]\nagent_interval_ms = 10\n".into()),
        ("slurm: Gres= in node_params", "[slurm]\nnode_params = \"CPUs=8 Gres=gpu:2\"\n".into()),
        ("slurm: relative gres file", "[slurm]\ngres_file = \"tessera-gres.conf\"\n".into()),
        ("slurm: unknown tenant", "[slurm]\ntenant = \"hpc\"\n".into()),
        ("slurm: node name", "[slurm]\nnode_name = \"gpu 01\"\n".into()),
        ("token file: group and others read", tcp(&open)),
        ("token file: group writes", tcp(&writable)),
        ("token file: missing", tcp(&d.join("missing-tokens"))),
        ("token file: no tokens", tcp(&empty)),
        ("token file: unknown user", tcp(&unknown)),
        ("token file: weak token", tcp(&weak)),
        ("token file: one token twice", tcp(&twice)),
    ];
    let mut out = String::new();
    for (name, text) in &cases {
        let path = d.join("tessera.toml");
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path).expect_err(name).to_string();
        out.push_str(&format!("### {name}\n{text}--> {e}\n\n"));
    }
    let shown = d.display().to_string();
    insta::with_settings!({ filters => vec![(shown.as_str(), "[DIR]")] }, {
        insta::assert_snapshot!("config_errors", out);
    });
}

/// The token file's owner must be the daemon's user (root here, the test's user otherwise).
#[test]
fn a_token_file_another_user_owns_is_refused() {
    if tessera_host::effective_uid() != 0 {
        eprintln!("skipped: needs root to give the file away");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "tokens", &format!("root {TOKEN}\n"), 0o600);
    std::os::unix::fs::chown(&tokens, Some(65534), None).unwrap();
    let text = format!("[server]\ntcp = \"127.0.0.1:7373\"\ntoken_file = \"{}\"\n", tokens.display());
    let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.starts_with("t.toml:3:14: server.token_file "), "{e}");
    assert!(e.contains("belongs to nobody, but the daemon runs as root") && e.contains("`chown root "), "{e}");
}

/// A valid file with tenants, admins and two token users.
#[test]
fn a_valid_file_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(
        dir.path(),
        "tokens",
        &format!("# who may use TCP\nroot {TOKEN}\nnobody {TOKEN}x\nnobody {TOKEN}y\n"),
        0o600,
    );
    let text = format!(
        "admins = [\"nobody\"]\n[server]\ntcp = \"127.0.0.1:7373\"\ntoken_file = \"{}\"\n[[tenants]]\nname = \"ml\"\nweight = 2\n[users]\nnobody = \"ml\"\n",
        tokens.display()
    );
    let loaded = Config::parse(&text, "t.toml").unwrap();
    assert_eq!(loaded.tokens.len(), 3);
    assert_eq!(loaded.tokens.users(), ["nobody", "root"]);
    let who = |t: String| loaded.tokens.user_for(t.as_bytes()).map(|u| (u.name.clone(), u.uid));
    assert_eq!(who(TOKEN.to_string()), Some(("root".into(), 0)));
    assert_eq!(who(format!("{TOKEN}y")), Some(("nobody".into(), 65534)));
    assert_eq!(who(format!("{TOKEN}z")), None);
    assert_eq!(loaded.config.tenant_of("nobody"), "ml");
}

/// Every leaf key of a JSON value, `a.b.c`; arrays of tables as `tenants.name`, the `users`
/// map as `users.*`.
fn leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if prefix == "users" => {
            out.insert("users.*".into(), m.values().next().cloned().unwrap_or(Value::Null));
        }
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(&key, v, out);
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            for item in items {
                leaves(prefix, item, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Every field of `Config`, with its default (`null` where it has none).
fn config_fields() -> BTreeMap<String, Value> {
    let mut config = Config::default();
    // The lists and maps are empty by default: one entry each shows their fields.
    config.tenants.push(TenantConfig {
        name: "t".into(),
        weight: 1.0,
        quota: Some(QuotaConfig { compute_slices: 1, memory_slices: 1 }),
    });
    config.users.insert("u".into(), "t".into());
    config.admins.push("a".into());
    let mut out = BTreeMap::new();
    leaves("", &serde_json::to_value(&config).unwrap(), &mut out);
    out
}

/// `examples/tessera.toml` with every commented-out setting (`#key = value`, `#[[table]]`)
/// uncommented; prose comments (`# text`) stay comments.
fn example_uncommented() -> String {
    let text = std::fs::read_to_string(repo().join("examples/tessera.toml")).unwrap();
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_parses_as_shipped_and_lists_every_field_with_its_default() {
    let path = repo().join("examples/tessera.toml");
    let shipped = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(shipped.tokens.is_empty());
    let uncommented = example_uncommented();
    // Uncommented, it is still a valid file (its users need not exist here: TOML's checks only).
    let typed: Result<Config, _> = toml::from_str(&uncommented);
    assert!(typed.is_ok(), "{:?}", typed.err());
    let value: toml::Value = toml::from_str(&uncommented).unwrap();
    let mut example = BTreeMap::new();
    leaves("", &serde_json::to_value(&value).unwrap(), &mut example);
    let fields = config_fields();
    let missing: Vec<&String> = fields.keys().filter(|k| !example.contains_key(*k)).collect();
    let extra: Vec<&String> = example.keys().filter(|k| !fields.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "example: missing {missing:?}, unknown {extra:?}");
    // Each field that has a default shows that default.
    let skip = ["tenants.", "users.", "admins"];
    for (k, default) in &fields {
        if default.is_null() || skip.iter().any(|s| k.starts_with(s)) {
            continue;
        }
        assert_eq!(&example[k], default, "examples/tessera.toml shows {k} = {}, the default is {default}", example[k]);
    }
}

/// The keys of the reference's tables (the first cell of each row, in backquotes), with the
/// row.
fn reference_rows() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    text.lines()
        .filter_map(|l| {
            let cell = l.strip_prefix("| `")?;
            let (key, _) = cell.split_once("` |")?;
            Some((key.to_string(), l.to_string()))
        })
        .collect()
}

#[test]
fn the_reference_documents_every_field_with_its_range() {
    let rows = reference_rows();
    let fields: BTreeSet<String> = config_fields().into_keys().collect();
    let documented: BTreeSet<String> = rows.keys().cloned().collect();
    let missing: Vec<&String> = fields.difference(&documented).collect();
    let extra: Vec<&String> = documented.difference(&fields).collect();
    assert!(missing.is_empty() && extra.is_empty(), "docs/config.md: missing {missing:?}, unknown {extra:?}");
    for (key, range) in Config::ranges() {
        let row = &rows[&key];
        // | key | type | default | range | what it does |
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells.get(3).copied(), Some(range.as_str()), "docs/config.md's range for {key}: {row}");
    }
}
