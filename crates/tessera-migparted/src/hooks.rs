//! mig-parted's hooks file (`api/hooks/v1/hooks.go`): commands run around `apply` and `restore`.
//!
//! ```yaml
//! version: v1
//! hooks:
//!   apply-start:
//!   - command: /bin/bash
//!     args: ["-c", "echo $MIG_PARTED_SELECTED_CONFIG"]
//!     envs: {FOO: bar}
//!     workdir: /etc/nvidia-mig-manager
//! ```
//!
//! mig-parted reads this file leniently (unknown fields, unknown events and a missing version
//! are ignored); here it is read strictly, as the config file is, so a misspelt event or field
//! is an error at its `file:line:column` instead of a hook that silently never runs. Scalars
//! where text is expected (`args: [1]`) are read as their text, as mig-parted's YAML reader does.
//! [`hook_env`] is the exact environment a hook runs with.

use std::collections::BTreeMap;
use std::fmt;

use tessera_mig::catalog::closest;

use crate::error::{ConfigError, ConfigErrorKind, Pos};
use crate::node::{self, Key, Located, Node};
use crate::spec::{Parser, VERSION};

const TOP_FIELDS: &[&str] = &["version", "hooks"];
const HOOK_FIELDS: &[&str] = &["command", "args", "envs", "workdir"];

/// When a hook runs (mig-parted's event names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookEvent {
    /// Before anything else, every time.
    ApplyStart,
    /// Before the MIG mode is changed, only when it needs changing.
    PreApplyMode,
    /// Before MIG devices are changed, only when they need changing.
    PreApplyConfig,
    /// Last, every time, even after a failure.
    ApplyExit,
}

impl HookEvent {
    /// Every event, in the order an apply reaches them.
    pub const ALL: [HookEvent; 4] =
        [HookEvent::ApplyStart, HookEvent::PreApplyMode, HookEvent::PreApplyConfig, HookEvent::ApplyExit];

    /// The name in the hooks file (`apply-start`).
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::ApplyStart => "apply-start",
            HookEvent::PreApplyMode => "pre-apply-mode",
            HookEvent::PreApplyConfig => "pre-apply-config",
            HookEvent::ApplyExit => "apply-exit",
        }
    }

    /// The event of this name.
    pub fn from_name(name: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One hook: a command to run, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    /// The hook's entry in the file.
    pub pos: Pos,
    /// The program: a path, or a name looked up in the caller's `PATH` (as Go's `exec.Command`).
    pub command: String,
    pub args: Vec<String>,
    /// Variables of the hook's own; the caller's `MIG_PARTED_*` variables win over these.
    pub envs: BTreeMap<String, String>,
    /// The directory it runs in; empty: the caller's.
    pub workdir: String,
}

/// A parsed hooks file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HooksFile {
    /// Where the file came from (its path); errors name it.
    pub origin: String,
    /// The hooks of each event, in file order (events without hooks are absent).
    pub hooks: BTreeMap<HookEvent, Vec<HookSpec>>,
}

impl HooksFile {
    /// The hooks of one event, in the order they run.
    pub fn hooks_for(&self, event: HookEvent) -> &[HookSpec] {
        self.hooks.get(&event).map_or(&[], Vec::as_slice)
    }
}

/// The environment a hook runs with, and nothing else (mig-parted sets `cmd.Env`, which replaces
/// the caller's environment): the hook's `envs`, then `flags` (one `MIG_PARTED_*` variable per
/// flag of the command that has one), which win where both name a variable.
pub fn hook_env(hook: &HookSpec, flags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = hook.envs.clone();
    env.extend(flags.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Parse a hooks file. `origin` (the file's path) is used in error messages.
pub fn parse_hooks(text: &str, origin: &str) -> Result<HooksFile, ConfigError> {
    let root =
        node::load(text).map_err(|p| ConfigError::new(origin, p.pos, ConfigErrorKind::Yaml { detail: p.detail }))?;
    HooksParser(Parser { origin }).file(&root)
}

/// The config reader's checks ([`Parser`]) with the hooks file's shape on top.
struct HooksParser<'a>(Parser<'a>);

impl<'a> std::ops::Deref for HooksParser<'a> {
    type Target = Parser<'a>;
    fn deref(&self) -> &Parser<'a> {
        &self.0
    }
}

impl HooksParser<'_> {
    fn file(&self, root: &Located) -> Result<HooksFile, ConfigError> {
        const EXPECTED: &str = "a mapping with 'version: v1' and 'hooks:'";
        let entries = match &root.node {
            Node::Map(entries) if !entries.is_empty() => entries,
            _ => return Err(self.wrong_type(root, "", "the hooks file", EXPECTED)),
        };
        let fields = self.fields(entries, TOP_FIELDS, "at the top level of the hooks file")?;
        let Some((_, version)) = fields.get("version") else {
            return Err(self.err(root.pos, ConfigErrorKind::MissingVersion));
        };
        match &version.node {
            Node::Str(v) if v == VERSION => {}
            other => {
                let found = other.scalar_text().unwrap_or_else(|| other.describe());
                return Err(self.err(version.pos, ConfigErrorKind::UnsupportedVersion { found }));
            }
        }
        let mut hooks = BTreeMap::new();
        let event_entries: &[(Key, Located)] = match fields.get("hooks").map(|(_, v)| &v.node) {
            None | Some(Node::Null) => &[],
            Some(Node::Map(entries)) => entries,
            Some(_) => {
                let (_, value) = fields["hooks"];
                return Err(self.wrong_type(value, "hooks", "", "a mapping of event names to lists of hooks"));
            }
        };
        let names: Vec<&str> = HookEvent::ALL.iter().map(|e| e.name()).collect();
        for (name, (key, value)) in self.unique(event_entries)? {
            let Some(event) = HookEvent::from_name(name) else {
                return Err(self.err(
                    key.pos,
                    ConfigErrorKind::UnknownHookEvent {
                        name: name.to_string(),
                        known: names.iter().map(ToString::to_string).collect(),
                        suggestions: closest(name, &names).into_iter().take(1).collect(),
                    },
                ));
            };
            let list = match &value.node {
                Node::Null => Vec::new(),
                Node::Seq(items) => items.iter().map(|item| self.hook(event, item)).collect::<Result<_, _>>()?,
                _ => {
                    return Err(self.wrong_type(
                        value,
                        name,
                        "in 'hooks'",
                        "a list of hooks, each starting with '- command:'",
                    ));
                }
            };
            if !list.is_empty() {
                hooks.insert(event, list);
            }
        }
        Ok(HooksFile { origin: self.origin.to_string(), hooks })
    }

    fn hook(&self, event: HookEvent, item: &Located) -> Result<HookSpec, ConfigError> {
        let place = format!("in a hook of '{event}'");
        let Node::Map(entries) = &item.node else {
            return Err(self.wrong_type(
                item,
                "",
                &format!("each hook of '{event}'"),
                "a mapping with 'command' (and 'args', 'envs', 'workdir')",
            ));
        };
        let fields = self.fields(entries, HOOK_FIELDS, &place)?;
        let Some((_, command)) = fields.get("command") else {
            return Err(self.err(
                item.used,
                ConfigErrorKind::MissingField {
                    field: "command".to_string(),
                    place,
                    hint: " (the program to run, such as '/bin/bash')".to_string(),
                },
            ));
        };
        let command = self.text(command, "command", &place)?;
        if command.is_empty() {
            let (_, at) = fields["command"];
            return Err(self.wrong_type(at, "command", &place, "the program to run, such as '/bin/bash'"));
        }
        let args = match fields.get("args").map(|(_, v)| *v) {
            None => Vec::new(),
            Some(Located { node: Node::Null, .. }) => Vec::new(),
            Some(Located { node: Node::Seq(items), .. }) => {
                items.iter().map(|a| self.text(a, "args", &place)).collect::<Result<_, _>>()?
            }
            Some(other) => return Err(self.wrong_type(other, "args", &place, "a list of strings")),
        };
        let envs = match fields.get("envs").map(|(_, v)| *v) {
            None => BTreeMap::new(),
            Some(Located { node: Node::Null, .. }) => BTreeMap::new(),
            Some(Located { node: Node::Map(entries), .. }) => self.envs(entries, &place)?,
            Some(other) => {
                return Err(self.wrong_type(other, "envs", &place, "a mapping of variable names to values"));
            }
        };
        let workdir = match fields.get("workdir").map(|(_, v)| *v) {
            None => String::new(),
            Some(v) => self.text(v, "workdir", &place)?,
        };
        Ok(HookSpec { pos: item.used, command, args, envs, workdir })
    }

    fn envs(&self, entries: &[(Key, Located)], place: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        let mut first: BTreeMap<&str, Pos> = BTreeMap::new();
        for (key, value) in entries {
            if let Some(pos) = first.get(key.text.as_str()) {
                return Err(self.err(key.pos, ConfigErrorKind::DuplicateKey { key: key.text.clone(), first: *pos }));
            }
            if key.text.is_empty() || key.text.contains(['=', '\0']) {
                return Err(self.err(
                    key.pos,
                    ConfigErrorKind::WrongType {
                        field: String::new(),
                        place: format!("each name in 'envs' {place}"),
                        expected: "a variable name without '='".to_string(),
                        found: format!("'{}'", key.text.replace('\0', "\\0")),
                    },
                ));
            }
            first.insert(&key.text, key.pos);
            out.insert(key.text.clone(), self.text(value, &key.text, &format!("in 'envs' {place}"))?);
        }
        Ok(out)
    }

    /// A scalar as text (`1` → "1", as mig-parted reads a number where it expects a string).
    fn text(&self, at: &Located, field: &str, place: &str) -> Result<String, ConfigError> {
        match at.node.scalar_text() {
            Some(t) if !t.contains('\0') => Ok(t),
            Some(_) => Err(self.err(
                at.pos,
                ConfigErrorKind::WrongType {
                    field: field.to_string(),
                    place: place.to_string(),
                    expected: "text without a NUL character".to_string(),
                    found: "a NUL character".to_string(),
                },
            )),
            None => Err(self.wrong_type(at, field, place, "a string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_hooks(text, "hooks.yaml").unwrap_err().to_string()
    }

    #[test]
    fn nvidia_default_hooks_file() {
        // deployments/systemd/hooks-default.yaml of mig-parted, shortened.
        let text = r#"version: v1
hooks:
    apply-start:
    - workdir: "/etc/nvidia-mig-manager"
      command: "/bin/bash"
      args: ["-x", "-c", "source hooks.sh; apply-start ${MIG_PARTED_SELECTED_CONFIG}"]
    apply-exit:
    - workdir: "/etc/nvidia-mig-manager"
      command: "/bin/bash"
      args: ["-x", "-c", "source hooks.sh; apply-exit"]
    - command: "/bin/true"
      envs: {A: 1, B: x}
"#;
        let h = parse_hooks(text, "hooks.yaml").unwrap();
        assert_eq!(h.hooks.len(), 2);
        let start = h.hooks_for(HookEvent::ApplyStart);
        assert_eq!(start[0].command, "/bin/bash");
        assert_eq!(start[0].workdir, "/etc/nvidia-mig-manager");
        assert_eq!(start[0].args[2], "source hooks.sh; apply-start ${MIG_PARTED_SELECTED_CONFIG}");
        assert_eq!(start[0].pos, Pos::new(4, 7));
        let exit = h.hooks_for(HookEvent::ApplyExit);
        assert_eq!(exit.len(), 2);
        assert_eq!(exit[1].envs["A"], "1");
        assert!(h.hooks_for(HookEvent::PreApplyMode).is_empty());
    }

    #[test]
    fn empty_lists_and_version_only() {
        assert!(parse_hooks("version: v1\n", "h").unwrap().hooks.is_empty());
        assert!(parse_hooks("version: v1\nhooks: {apply-start: [], apply-exit:}\n", "h").unwrap().hooks.is_empty());
    }

    #[test]
    fn errors_name_the_place() {
        let cases = [
            (
                "",
                "hooks.yaml:1:1: the hooks file must be a mapping with 'version: v1' and 'hooks:', not nothing (null)",
            ),
            ("hooks: {}\n", "hooks.yaml:1:1: missing required field 'version'"),
            ("version: v2\n", "hooks.yaml:1:10: unsupported version 'v2'"),
            (
                "version: v1\nhook: {}\n",
                "hooks.yaml:2:1: unknown field 'hook' at the top level of the hooks file; allowed fields: version, hooks (did you mean 'hooks'?)",
            ),
            (
                "version: v1\nhooks:\n  pre-apply-configs: []\n",
                "hooks.yaml:3:3: unknown hook event 'pre-apply-configs' (did you mean 'pre-apply-config'?); the events are: apply-start, pre-apply-mode, pre-apply-config, apply-exit",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - args: [a]\n",
                "hooks.yaml:4:5: missing required field 'command' in a hook of 'apply-start'",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - command: x\n    arg: [a]\n",
                "hooks.yaml:5:5: unknown field 'arg' in a hook of 'apply-start'; allowed fields: command, args, envs, workdir (did you mean 'args'?)",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - command: x\n    args: a\n",
                "hooks.yaml:5:11: 'args' in a hook of 'apply-start' must be a list of strings, not the string 'a'",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - command: x\n    envs: [a]\n",
                "hooks.yaml:5:11: 'envs' in a hook of 'apply-start' must be a mapping",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - command: x\n    envs: {A=B: c}\n",
                "hooks.yaml:5:12: each name in 'envs' in a hook of 'apply-start' must be a variable name without '='",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - command: x\n    envs: {A: [1]}\n",
                "hooks.yaml:5:15: 'A' in 'envs' in a hook of 'apply-start' must be a string, not a list",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - command: ''\n",
                "hooks.yaml:4:14: 'command' in a hook of 'apply-start' must be the program to run",
            ),
            (
                "version: v1\nhooks:\n  apply-start: x\n",
                "hooks.yaml:3:16: 'apply-start' in 'hooks' must be a list of hooks",
            ),
            (
                "version: v1\nhooks:\n  apply-exit: []\n  apply-exit: []\n",
                "hooks.yaml:4:3: duplicate key 'apply-exit' (first at line 3, column 3)",
            ),
            (
                "version: v1\nhooks:\n  apply-start:\n  - x\n",
                "hooks.yaml:4:5: each hook of 'apply-start' must be a mapping with 'command'",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.starts_with(want), "for {text:?}:\n got  {got}\n want {want}");
        }
    }

    #[test]
    fn flags_win_over_the_hooks_own_variables() {
        let hook = HookSpec {
            pos: Pos::START,
            command: "x".into(),
            args: vec![],
            envs: [("MIG_PARTED_SELECTED_CONFIG".to_string(), "mine".to_string()), ("A".into(), "1".into())].into(),
            workdir: String::new(),
        };
        let flags = [("MIG_PARTED_SELECTED_CONFIG".to_string(), "all-disabled".to_string())].into();
        let env = hook_env(&hook, &flags);
        assert_eq!(env.len(), 2);
        assert_eq!(env["MIG_PARTED_SELECTED_CONFIG"], "all-disabled");
        assert_eq!(env["A"], "1");
    }
}
