//! NVIDIA's device-plugin config file (`version: v1`), read by hand from a located YAML tree
//! (`tessera_migparted::node`) so every error names `file:line:column`, as `tessera-migparted`'s
//! do. Every field NVIDIA's file format has is accepted (those that do not concern names,
//! sharing or allocation are read and left alone); a field it does not have is an error with the
//! closest name, so a typo does not silently change what is advertised.

use std::collections::BTreeMap;

use tessera_mig::catalog::closest;
use tessera_migparted::Pos;
use tessera_migparted::node::{self, Key, Located, Node};

use crate::naming::{
    DeviceListStrategy, MigStrategy, PluginConfig, ReplicatedResource, ReplicatedResources, ResourceName, SharingConfig,
};

/// An error in a device-plugin config file. Displays as `{origin}:{line}:{column}: {kind}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {kind}")]
pub struct ConfigError {
    /// The file the config came from.
    pub origin: String,
    pub line: u32,
    pub column: u32,
    /// Boxed to keep `Result<_, ConfigError>` small.
    pub kind: Box<ConfigErrorKind>,
}

/// What is wrong in a device-plugin config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("invalid YAML: {detail}")]
    Yaml { detail: String },
    #[error("unsupported version '{found}'; NVIDIA's device-plugin config is 'version: v1'")]
    UnsupportedVersion { found: String },
    #[error("unknown field '{field}' {place}{}; allowed fields: {}", did_you_mean(suggestion), allowed.join(", "))]
    UnknownField { field: String, place: String, allowed: Vec<String>, suggestion: Option<String> },
    #[error("'{field}' must be {expected}, not {found}")]
    WrongType { field: String, expected: String, found: String },
    #[error("'{field}' is '{found}'; allowed: {}", allowed.join(", "))]
    BadValue { field: String, found: String, allowed: Vec<String> },
    #[error("missing required field '{field}' {place}")]
    MissingField { field: String, place: String },
    #[error("duplicate key '{key}' (first at {first})")]
    DuplicateKey { key: String, first: Pos },
    #[error("'{field}': {message}")]
    Invalid { field: String, message: String },
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
}

const TOP: &[&str] = &["version", "flags", "resources", "sharing", "imex"];
const FLAGS: &[&str] = &[
    "migStrategy",
    "failOnInitError",
    "mpsRoot",
    "nvidiaDriverRoot",
    "nvidiaDevRoot",
    "gdrcopyEnabled",
    "gdsEnabled",
    "mofedEnabled",
    "useNodeFeatureAPI",
    "deviceDiscoveryStrategy",
    "plugin",
    "gfd",
];
const PLUGIN: &[&str] = &[
    "passDeviceSpecs",
    "deviceListStrategy",
    "deviceIDStrategy",
    "cdiAnnotationPrefix",
    "nvidiaCTKPath",
    "containerDriverRoot",
    "sharedDevicesAllocationPolicy",
];
const GFD: &[&str] = &["oneshot", "noTimestamp", "sleepInterval", "outputFile", "machineTypeFile"];
const SHARING: &[&str] = &["timeSlicing", "mps"];
const REPLICATED: &[&str] = &["renameByDefault", "failRequestsGreaterThanOne", "resources"];
const RESOURCE: &[&str] = &["name", "rename", "devices", "replicas"];

pub(crate) fn parse(text: &str, origin: &str) -> Result<PluginConfig, ConfigError> {
    let root = node::load(text).map_err(|p| ConfigError {
        origin: origin.to_string(),
        line: p.pos.line,
        column: p.pos.column,
        kind: Box::new(ConfigErrorKind::Yaml { detail: p.detail }),
    })?;
    Parser { origin }.file(&root)
}

type Fields<'n> = BTreeMap<&'n str, (&'n Key, &'n Located)>;

struct Parser<'a> {
    origin: &'a str,
}

impl Parser<'_> {
    fn err(&self, pos: Pos, kind: ConfigErrorKind) -> ConfigError {
        ConfigError { origin: self.origin.to_string(), line: pos.line, column: pos.column, kind: Box::new(kind) }
    }

    fn wrong(&self, at: &Located, field: &str, expected: &str) -> ConfigError {
        self.err(
            at.pos,
            ConfigErrorKind::WrongType {
                field: field.to_string(),
                expected: expected.to_string(),
                found: at.node.describe(),
            },
        )
    }

    /// A mapping's fields: unknown and repeated keys refused, null read as an empty mapping.
    fn fields<'n>(&self, at: &'n Located, field: &str, allowed: &[&str]) -> Result<Fields<'n>, ConfigError> {
        let entries: &[(Key, Located)] = match &at.node {
            Node::Map(e) => e,
            Node::Null => &[],
            _ => return Err(self.wrong(at, field, "a mapping")),
        };
        let mut out: Fields<'n> = BTreeMap::new();
        for (k, v) in entries {
            if !allowed.contains(&k.text.as_str()) {
                let place = if field.is_empty() { "at the top level".to_string() } else { format!("in '{field}'") };
                return Err(self.err(
                    k.pos,
                    ConfigErrorKind::UnknownField {
                        field: k.text.clone(),
                        place,
                        allowed: allowed.iter().map(ToString::to_string).collect(),
                        suggestion: closest(&k.text, allowed).into_iter().next(),
                    },
                ));
            }
            if let Some((first, _)) = out.get(k.text.as_str()) {
                return Err(self.err(k.pos, ConfigErrorKind::DuplicateKey { key: k.text.clone(), first: first.pos }));
            }
            out.insert(&k.text, (k, v));
        }
        Ok(out)
    }

    fn string(&self, at: &Located, field: &str) -> Result<String, ConfigError> {
        match &at.node {
            Node::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong(at, field, "a string")),
        }
    }

    fn boolean(&self, at: &Located, field: &str) -> Result<bool, ConfigError> {
        match &at.node {
            Node::Bool(b) => Ok(*b),
            _ => Err(self.wrong(at, field, "true or false")),
        }
    }

    fn choice<T: Copy>(&self, at: &Located, field: &str, table: &[(&str, T)]) -> Result<T, ConfigError> {
        let s = self.string(at, field)?;
        table.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
            self.err(
                at.pos,
                ConfigErrorKind::BadValue {
                    field: field.to_string(),
                    found: s,
                    allowed: table.iter().map(|(n, _)| n.to_string()).collect(),
                },
            )
        })
    }

    fn file(&self, root: &Located) -> Result<PluginConfig, ConfigError> {
        let top = self.fields(root, "", TOP)?;
        let mut config = PluginConfig::default();
        if let Some((_, v)) = top.get("version") {
            let found = v.node.scalar_text().unwrap_or_else(|| v.node.describe());
            if found != "v1" {
                return Err(self.err(v.pos, ConfigErrorKind::UnsupportedVersion { found }));
            }
        }
        if let Some((_, flags)) = top.get("flags") {
            self.flags(flags, &mut config)?;
        }
        if let Some((k, _)) = top.get("resources") {
            config.warnings.push(format!(
                "{}:{}:{}: 'resources' is ignored: resource names follow 'migStrategy', as NVIDIA's plugin \
                 ignores customised names too",
                self.origin, k.pos.line, k.pos.column
            ));
        }
        if let Some((_, sharing)) = top.get("sharing") {
            config.sharing = self.sharing(sharing, &mut config.warnings)?;
        }
        self.check(root, &config)?;
        Ok(config)
    }

    fn flags(&self, at: &Located, config: &mut PluginConfig) -> Result<(), ConfigError> {
        let f = self.fields(at, "flags", FLAGS)?;
        if let Some((_, v)) = f.get("migStrategy") {
            config.mig_strategy = self.choice(
                v,
                "flags.migStrategy",
                &[("none", MigStrategy::None), ("single", MigStrategy::Single), ("mixed", MigStrategy::Mixed)],
            )?;
        }
        if let Some((_, v)) = f.get("mpsRoot") {
            let root = self.string(v, "flags.mpsRoot")?;
            if !root.starts_with('/') {
                return Err(self.err(
                    v.pos,
                    ConfigErrorKind::Invalid {
                        field: "flags.mpsRoot".to_string(),
                        message: format!("'{root}' must be an absolute path"),
                    },
                ));
            }
            config.mps_root = root;
        }
        for b in ["failOnInitError", "gdrcopyEnabled", "gdsEnabled", "mofedEnabled", "useNodeFeatureAPI"] {
            if let Some((_, v)) = f.get(b) {
                self.boolean(v, &format!("flags.{b}"))?;
            }
        }
        for s in ["nvidiaDriverRoot", "nvidiaDevRoot", "deviceDiscoveryStrategy"] {
            if let Some((_, v)) = f.get(s) {
                self.string(v, &format!("flags.{s}"))?;
            }
        }
        if let Some((_, gfd)) = f.get("gfd") {
            self.fields(gfd, "flags.gfd", GFD)?;
        }
        if let Some((_, plugin)) = f.get("plugin") {
            self.plugin(plugin, config)?;
        }
        Ok(())
    }

    fn plugin(&self, at: &Located, config: &mut PluginConfig) -> Result<(), ConfigError> {
        let p = self.fields(at, "flags.plugin", PLUGIN)?;
        if let Some((_, v)) = p.get("passDeviceSpecs") {
            config.pass_device_specs = self.boolean(v, "flags.plugin.passDeviceSpecs")?;
        }
        if let Some((_, v)) = p.get("deviceListStrategy") {
            let field = "flags.plugin.deviceListStrategy";
            let table = [
                ("envvar", DeviceListStrategy::EnvVar),
                ("volume-mounts", DeviceListStrategy::VolumeMounts),
                ("cdi-annotations", DeviceListStrategy::CdiAnnotations),
                ("cdi-cri", DeviceListStrategy::CdiCri),
            ];
            let mut list = match &v.node {
                Node::Seq(items) => {
                    items.iter().map(|i| self.choice(i, field, &table)).collect::<Result<Vec<_>, _>>()?
                }
                _ => vec![self.choice(v, field, &table)?],
            };
            list.sort();
            list.dedup();
            if list.is_empty() {
                return Err(self.err(
                    v.pos,
                    ConfigErrorKind::Invalid {
                        field: field.to_string(),
                        message: "names no strategy; give at least one, such as 'envvar'".to_string(),
                    },
                ));
            }
            config.device_list_strategy = list;
        }
        if let Some((_, v)) = p.get("deviceIDStrategy") {
            let field = "flags.plugin.deviceIDStrategy";
            if self.string(v, field)? != "uuid" {
                return Err(self.err(
                    v.pos,
                    ConfigErrorKind::BadValue {
                        field: field.to_string(),
                        found: self.string(v, field)?,
                        allowed: vec![
                            "uuid (Tessera names devices by UUID only: indices change when MIG devices are recreated)"
                                .to_string(),
                        ],
                    },
                ));
            }
        }
        if let Some((_, v)) = p.get("cdiAnnotationPrefix") {
            config.cdi_annotation_prefix = self.string(v, "flags.plugin.cdiAnnotationPrefix")?;
        }
        for s in ["nvidiaCTKPath", "containerDriverRoot"] {
            if let Some((_, v)) = p.get(s) {
                self.string(v, &format!("flags.plugin.{s}"))?;
            }
        }
        if let Some((_, v)) = p.get("sharedDevicesAllocationPolicy") {
            self.choice(v, "flags.plugin.sharedDevicesAllocationPolicy", &[("distributed", ()), ("packed", ())])?;
        }
        Ok(())
    }

    fn sharing(&self, at: &Located, warnings: &mut Vec<String>) -> Result<SharingConfig, ConfigError> {
        let s = self.fields(at, "sharing", SHARING)?;
        let time_slicing = match s.get("timeSlicing") {
            Some((_, v)) => Some(self.replicated(v, "sharing.timeSlicing", false, warnings)?),
            None => None,
        };
        let mps = match s.get("mps") {
            Some((_, v)) => Some(self.replicated(v, "sharing.mps", true, warnings)?),
            None => None,
        };
        Ok(SharingConfig { time_slicing, mps })
    }

    fn replicated(
        &self,
        at: &Located,
        field: &str,
        fail_default: bool,
        warnings: &mut Vec<String>,
    ) -> Result<ReplicatedResources, ConfigError> {
        let f = self.fields(at, field, REPLICATED)?;
        let rename_by_default = match f.get("renameByDefault") {
            Some((_, v)) => self.boolean(v, &format!("{field}.renameByDefault"))?,
            None => false,
        };
        let fail_requests_greater_than_one = match f.get("failRequestsGreaterThanOne") {
            Some((_, v)) => self.boolean(v, &format!("{field}.failRequestsGreaterThanOne"))?,
            None => fail_default,
        };
        let rfield = format!("{field}.resources");
        let Some((_, list)) = f.get("resources") else {
            return Err(self.err(
                at.pos,
                ConfigErrorKind::MissingField { field: "resources".to_string(), place: format!("in '{field}'") },
            ));
        };
        let items = match &list.node {
            Node::Seq(items) if !items.is_empty() => items,
            Node::Seq(_) | Node::Null => {
                return Err(self.err(
                    list.pos,
                    ConfigErrorKind::Invalid {
                        field: rfield,
                        message: "lists no resources; give at least one, such as '- name: nvidia.com/gpu'".to_string(),
                    },
                ));
            }
            _ => return Err(self.wrong(list, &rfield, "a list of resources")),
        };
        let mut resources: Vec<ReplicatedResource> = Vec::new();
        for item in items {
            let r = self.fields(item, &rfield, RESOURCE)?;
            let Some((_, name_at)) = r.get("name") else {
                return Err(self.err(
                    item.pos,
                    ConfigErrorKind::MissingField {
                        field: "name".to_string(),
                        place: format!("in an entry of '{rfield}'"),
                    },
                ));
            };
            let name = self.resource_name(name_at, &format!("{rfield}.name"))?;
            if let Some(first) = resources.iter().find(|x| x.name == name) {
                return Err(self.err(
                    name_at.pos,
                    ConfigErrorKind::Invalid {
                        field: format!("{rfield}.name"),
                        message: format!("'{}' is listed twice", first.name),
                    },
                ));
            }
            let Some((_, replicas_at)) = r.get("replicas") else {
                return Err(self.err(
                    item.pos,
                    ConfigErrorKind::MissingField {
                        field: "replicas".to_string(),
                        place: format!("in the entry for '{name}'"),
                    },
                ));
            };
            let replicas = match &replicas_at.node {
                Node::Int(n) if *n >= 2 => u32::try_from(*n).map_err(|_| {
                    self.err(
                        replicas_at.pos,
                        ConfigErrorKind::Invalid {
                            field: format!("{rfield}.replicas"),
                            message: format!("{n} is more than {}", u32::MAX),
                        },
                    )
                })?,
                Node::Int(n) => {
                    return Err(self.err(
                        replicas_at.pos,
                        ConfigErrorKind::Invalid {
                            field: format!("{rfield}.replicas"),
                            message: format!("{n} replicas: the number of replicas must be >= 2"),
                        },
                    ));
                }
                _ => return Err(self.wrong(replicas_at, &format!("{rfield}.replicas"), "an integer >= 2")),
            };
            let default_rename = if rename_by_default {
                Some(name.shared().map_err(|e| {
                    self.err(
                        name_at.pos,
                        ConfigErrorKind::Invalid { field: format!("{rfield}.name"), message: e.to_string() },
                    )
                })?)
            } else {
                None
            };
            if let Some((k, v)) = r.get("rename") {
                let rename = self.resource_name(v, &format!("{rfield}.rename"))?;
                if Some(&rename) != default_rename.as_ref() {
                    warnings.push(format!(
                        "{}:{}:{}: 'rename' is ignored, as NVIDIA's plugin ignores it: replicas are advertised as {}",
                        self.origin,
                        k.pos.line,
                        k.pos.column,
                        default_rename.as_ref().unwrap_or(&name)
                    ));
                }
            }
            if let Some((k, v)) = r.get("devices")
                && !matches!(&v.node, Node::Str(s) if s == "all")
            {
                if !matches!(&v.node, Node::Int(_) | Node::Seq(_) | Node::Str(_)) {
                    return Err(self.wrong(v, &format!("{rfield}.devices"), "'all', a count or a list of devices"));
                }
                warnings.push(format!(
                    "{}:{}:{}: 'devices' is ignored, as NVIDIA's plugin ignores it: every device of {name} is shared",
                    self.origin, k.pos.line, k.pos.column
                ));
            }
            resources.push(ReplicatedResource { name, rename: default_rename, replicas });
        }
        Ok(ReplicatedResources { rename_by_default, fail_requests_greater_than_one, resources })
    }

    fn resource_name(&self, at: &Located, field: &str) -> Result<ResourceName, ConfigError> {
        let s = self.string(at, field)?;
        ResourceName::qualified(&s).map_err(|e| {
            self.err(at.pos, ConfigErrorKind::Invalid { field: field.to_string(), message: e.to_string() })
        })
    }

    /// The combinations NVIDIA's `validateFlags` refuses.
    fn check(&self, root: &Located, config: &PluginConfig) -> Result<(), ConfigError> {
        if config.sharing.strategy() == crate::naming::SharingStrategy::Mps && config.mig_strategy == MigStrategy::Mixed
        {
            return Err(self.err(
                root.pos,
                ConfigErrorKind::Invalid {
                    field: "sharing.mps".to_string(),
                    message:
                        "MPS sharing is not supported with 'migStrategy: mixed' (nor for MIG devices at all, as in \
                              NVIDIA's plugin)"
                            .to_string(),
                },
            ));
        }
        Ok(())
    }
}
