//! mig-parted's config file (`version: v1`): its types and a strict parser.
//!
//! The rules are those of mig-parted's own loader (`api/spec/v1/spec.go`): `version` must be
//! `v1`; unknown fields are errors; `devices` is `all` or a list of GPU indices; `device-filter`
//! is a string or a list of strings (`0x233010DE`: PCI device id then vendor `10DE`), each
//! optionally a board's subsystem id after a `:` (`0x233010DE:0x16C110DE`, mig-parted PR #435);
//! `mig-enabled` is required; `mig-devices` is required (possibly `{}`) when MIG is enabled and
//! must be absent or empty when it is not; counts are non-negative integers, not all 0; device
//! types are written as mig-parted writes them (`1g.10gb`, no upper case, no spaces). Each config name
//! maps to a non-empty list of entries. Every value keeps its location so that later checks
//! (unknown profiles, infeasible layouts) can point at it too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tessera_mig::catalog::closest;

use crate::error::{ConfigError, ConfigErrorKind, Pos};
use crate::node::{self, Key, Located, Node};

/// The only version of the format.
pub const VERSION: &str = "v1";

/// NVIDIA's PCI vendor id: the low half of every `device-filter` value.
pub const NVIDIA_VENDOR_ID: u16 = 0x10DE;

const TOP_FIELDS: &[&str] = &["version", "mig-configs"];
const ENTRY_FIELDS: &[&str] = &["devices", "device-filter", "mig-enabled", "mig-devices"];

/// A parsed mig-parted config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigConfigFile {
    /// Where the file came from (its path); errors name it.
    pub origin: String,
    /// Always `v1`.
    pub version: String,
    /// The `mig-configs` key: unknown config names are reported here.
    pub configs_pos: Pos,
    /// The named configs (`all-disabled`, `custom-config`, …), by name.
    pub configs: BTreeMap<String, NamedConfig>,
}

/// One named config: its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedConfig {
    /// The config's name in `mig-configs`.
    pub pos: Pos,
    pub entries: Vec<DeviceConfig>,
}

/// Which GPUs an entry selects by index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSelector {
    /// `devices: all`.
    All,
    /// `devices: [0, 1]`, as written (an empty list selects nothing).
    Indices(Vec<u32>),
}

impl DeviceSelector {
    /// Whether the GPU with this index is selected.
    pub fn selects(&self, index: u32) -> bool {
        match self {
            DeviceSelector::All => true,
            DeviceSelector::Indices(list) => list.contains(&index),
        }
    }
}

/// One entry of a config: which GPUs, and what MIG state they should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The entry itself (its first key).
    pub pos: Pos,
    pub devices: DeviceSelector,
    /// The value of `devices`.
    pub devices_pos: Pos,
    /// The PCI ids the entry is limited to; empty: no filter.
    pub device_filter: Vec<DeviceFilter>,
    /// Location of each `device_filter` value (same length).
    pub device_filter_pos: Vec<Pos>,
    pub mig_enabled: bool,
    /// `mig-devices` as written: device type (`3g.40gb`, `1c.3g.40gb`) and count, in file order.
    pub mig_devices: Vec<(String, u32)>,
    /// Location of each `mig_devices` key (same length).
    pub mig_devices_pos: Vec<Pos>,
}

impl DeviceConfig {
    /// An entry for `devices` with MIG disabled.
    pub fn disabled(devices: DeviceSelector) -> Self {
        DeviceConfig {
            pos: Pos::START,
            devices,
            devices_pos: Pos::START,
            device_filter: Vec::new(),
            device_filter_pos: Vec::new(),
            mig_enabled: false,
            mig_devices: Vec::new(),
            mig_devices_pos: Vec::new(),
        }
    }

    /// An entry for `devices` with MIG enabled and these MIG devices.
    pub fn enabled(devices: DeviceSelector, mig_devices: Vec<(String, u32)>) -> Self {
        let n = mig_devices.len();
        DeviceConfig {
            mig_enabled: true,
            mig_devices,
            mig_devices_pos: vec![Pos::START; n],
            ..DeviceConfig::disabled(devices)
        }
    }

    /// Whether the entry applies to a GPU: its index is selected and, with a filter, one of the
    /// filter's values matches its PCI device id (and subsystem id, where the value has one).
    pub fn applies_to(&self, index: u32, pci_device_id: u16, pci_subsystem_id: u32) -> bool {
        self.devices.selects(index)
            && (self.device_filter.is_empty()
                || self.device_filter.iter().any(|f| f.matches(pci_device_id, pci_subsystem_id)))
    }

    /// Location of the `i`-th `mig-devices` key (the entry's, when unknown).
    pub fn mig_device_pos(&self, i: usize) -> Pos {
        self.mig_devices_pos.get(i).copied().unwrap_or(self.pos)
    }
}

/// One `device-filter` value: `0x233010DE` (a PCI device id with NVIDIA's vendor id) or
/// `0x233010DE:0x16C110DE` (the same, on one board: subsystem device `16C1`, subsystem vendor
/// `10DE`), as mig-parted's `types.DeviceID` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceFilter {
    /// The PCI device id (`0x2330`).
    pub device: u16,
    /// The board's subsystem id, `(subsystem device << 16) | subsystem vendor` as NVML's
    /// `pciSubSystemId` gives it; `None`: any board.
    pub subsystem: Option<u32>,
}

impl DeviceFilter {
    /// A filter on the PCI device id alone.
    pub fn device(device: u16) -> Self {
        DeviceFilter { device, subsystem: None }
    }

    /// Whether a GPU with this device id and subsystem id (0 when unknown) matches: the device id
    /// always, and with a subsystem in the filter, both of its halves too (mig-parted's
    /// `DeviceID.Matches`).
    pub fn matches(&self, pci_device_id: u16, pci_subsystem_id: u32) -> bool {
        self.device == pci_device_id && self.subsystem.is_none_or(|s| s == pci_subsystem_id)
    }
}

impl From<u16> for DeviceFilter {
    fn from(device: u16) -> Self {
        DeviceFilter::device(device)
    }
}

impl std::fmt::Display for DeviceFilter {
    /// `0x233010DE` or `0x233010DE:0x16C110DE`, as mig-parted writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&device_filter_string(self.device))?;
        match self.subsystem {
            Some(s) => write!(f, ":0x{s:08X}"),
            None => Ok(()),
        }
    }
}

impl MigConfigFile {
    /// The config names, sorted.
    pub fn config_names(&self) -> Vec<&str> {
        self.configs.keys().map(String::as_str).collect()
    }

    /// The config of this name.
    pub fn config(&self, name: &str) -> Option<&NamedConfig> {
        self.configs.get(name)
    }

    /// The file as mig-parted YAML (comments and locations are not kept).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "version: {}", plain_or_quoted(&self.version));
        out.push_str("mig-configs:\n");
        let mut first = true;
        for (name, config) in &self.configs {
            if !first {
                out.push('\n');
            }
            first = false;
            write_config(&mut out, name, &config.entries, &[]);
        }
        out
    }
}

/// Write one config (`  name:` and its entries); `comments[i]` goes above entry `i` when given.
pub(crate) fn write_config(out: &mut String, name: &str, entries: &[DeviceConfig], comments: &[String]) {
    let _ = writeln!(out, "  {}:", plain_or_quoted(name));
    for (i, e) in entries.iter().enumerate() {
        if let Some(c) = comments.get(i).filter(|c| !c.is_empty()) {
            let _ = writeln!(out, "    # {}", c.replace(['\n', '\r'], " "));
        }
        let mut lead = "    - ";
        if !e.device_filter.is_empty() {
            let ids: Vec<String> = e.device_filter.iter().map(|d| format!("\"{d}\"")).collect();
            let _ = writeln!(out, "{lead}device-filter: [{}]", ids.join(", "));
            lead = "      ";
        }
        let devices = match &e.devices {
            DeviceSelector::All => "all".to_string(),
            DeviceSelector::Indices(list) => {
                let parts: Vec<String> = list.iter().map(u32::to_string).collect();
                format!("[{}]", parts.join(", "))
            }
        };
        let _ = writeln!(out, "{lead}devices: {devices}");
        let _ = writeln!(out, "      mig-enabled: {}", e.mig_enabled);
        if e.mig_enabled {
            if e.mig_devices.is_empty() {
                out.push_str("      mig-devices: {}\n");
            } else {
                out.push_str("      mig-devices:\n");
                for (name, count) in &e.mig_devices {
                    let _ = writeln!(out, "        {}: {count}", double_quoted(name));
                }
            }
        }
    }
}

/// `0x233010DE`: how mig-parted writes a device filter.
pub fn device_filter_string(pci_device_id: u16) -> String {
    format!("0x{pci_device_id:04X}{NVIDIA_VENDOR_ID:04X}")
}

/// A YAML double-quoted scalar.
pub(crate) fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{feff}' || c == '\u{85}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` as a plain scalar when YAML reads it back as that same string, else double-quoted.
pub(crate) fn plain_or_quoted(s: &str) -> String {
    let safe_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let has_letter = s.chars().any(|c| c.is_ascii_alphabetic());
    let lower = s.to_ascii_lowercase();
    let special = matches!(
        lower.as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "nan" | "inf" | "infinity"
    );
    let numeric = lower.parse::<f64>().is_ok()
        || lower.starts_with("0x")
        || lower.starts_with("0o")
        || lower.starts_with("0b")
        || lower.starts_with("+0x")
        || lower.starts_with("-0x");
    if safe_chars && first_ok && has_letter && !special && !numeric { s.to_string() } else { double_quoted(s) }
}

/// Parse a mig-parted config file. `origin` (the file's path) is used in error messages.
pub fn parse(text: &str, origin: &str) -> Result<MigConfigFile, ConfigError> {
    let root =
        node::load(text).map_err(|p| ConfigError::new(origin, p.pos, ConfigErrorKind::Yaml { detail: p.detail }))?;
    Parser { origin }.file(&root)
}

/// `mig-devices` as parsed: the devices with counts, and the location of each key.
type MigDevices = (Vec<(String, u32)>, Vec<Pos>);

/// The checks every strict reader of the crate shares (configs here, hooks in `hooks.rs`): errors
/// at their place in `origin`, a value of the wrong type, unknown and repeated keys.
pub(crate) struct Parser<'a> {
    pub(crate) origin: &'a str,
}

impl Parser<'_> {
    pub(crate) fn err(&self, pos: Pos, kind: ConfigErrorKind) -> ConfigError {
        ConfigError::new(self.origin, pos, kind)
    }

    pub(crate) fn wrong_type(&self, at: &Located, field: &str, place: &str, expected: &str) -> ConfigError {
        self.err(
            at.pos,
            ConfigErrorKind::WrongType {
                field: field.to_string(),
                place: place.to_string(),
                expected: expected.to_string(),
                found: at.node.describe(),
            },
        )
    }

    /// The entries of a mapping with known fields: rejects unknown and duplicate keys, in file
    /// order.
    pub(crate) fn fields<'n>(
        &self,
        entries: &'n [(Key, Located)],
        allowed: &[&str],
        place: &str,
    ) -> Result<BTreeMap<&'n str, (&'n Key, &'n Located)>, ConfigError> {
        if let Some((key, _)) = entries.iter().find(|(k, _)| !allowed.contains(&k.text.as_str())) {
            // Report a duplicate that comes before the unknown field first.
            let before = entries.iter().position(|(k, _)| std::ptr::eq(k, key)).unwrap_or(entries.len());
            self.unique(&entries[..before])?;
            return Err(self.err(
                key.pos,
                ConfigErrorKind::UnknownField {
                    field: key.text.clone(),
                    place: place.to_string(),
                    allowed: allowed.iter().map(ToString::to_string).collect(),
                    suggestions: closest(&key.text, allowed).into_iter().take(1).collect(),
                },
            ));
        }
        self.unique(entries)
    }

    /// The entries of a mapping by key; a repeated key is an error naming both places.
    pub(crate) fn unique<'n>(
        &self,
        entries: &'n [(Key, Located)],
    ) -> Result<BTreeMap<&'n str, (&'n Key, &'n Located)>, ConfigError> {
        let mut seen: BTreeMap<&str, (&Key, &Located)> = BTreeMap::new();
        for (key, value) in entries {
            if let Some((first, _)) = seen.get(key.text.as_str()) {
                return Err(
                    self.err(key.pos, ConfigErrorKind::DuplicateKey { key: key.text.clone(), first: first.pos })
                );
            }
            seen.insert(&key.text, (key, value));
        }
        Ok(seen)
    }

    fn file(&self, root: &Located) -> Result<MigConfigFile, ConfigError> {
        let entries = match &root.node {
            Node::Map(entries) => entries,
            Node::Null => return Err(self.err(Pos::START, ConfigErrorKind::EmptyFile)),
            _ => {
                return Err(self.wrong_type(root, "", "the file", "a mapping with 'version' and 'mig-configs'"));
            }
        };
        if entries.is_empty() {
            return Err(self.err(root.pos, ConfigErrorKind::EmptyFile));
        }
        let fields = self.fields(entries, TOP_FIELDS, "at the top level")?;
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
        let Some((configs_key, configs)) = fields.get("mig-configs") else {
            return Err(self.err(
                root.pos,
                ConfigErrorKind::MissingField {
                    field: "mig-configs".to_string(),
                    place: "at the top level".to_string(),
                    hint: String::new(),
                },
            ));
        };
        let config_entries: &[(Key, Located)] = match &configs.node {
            Node::Map(entries) => entries,
            Node::Null => &[],
            _ => {
                return Err(self.wrong_type(
                    configs,
                    "mig-configs",
                    "",
                    "a mapping of config names to lists of entries",
                ));
            }
        };
        if config_entries.is_empty() {
            return Err(self.err(configs_key.pos, ConfigErrorKind::NoConfigs));
        }
        let mut out = BTreeMap::new();
        for (name, (key, value)) in self.unique(config_entries)? {
            out.insert(name.to_string(), self.config(key, value)?);
        }
        Ok(MigConfigFile {
            origin: self.origin.to_string(),
            version: VERSION.to_string(),
            configs_pos: configs_key.pos,
            configs: out,
        })
    }

    fn config(&self, key: &Key, value: &Located) -> Result<NamedConfig, ConfigError> {
        let name = &key.text;
        let items = match &value.node {
            Node::Seq(items) => items,
            Node::Null => return Err(self.err(key.pos, ConfigErrorKind::EmptyConfig { name: name.clone() })),
            _ => {
                return Err(self.wrong_type(
                    value,
                    "",
                    &format!("config '{name}'"),
                    "a list of entries, each starting with '- devices:'",
                ));
            }
        };
        if items.is_empty() {
            return Err(self.err(key.pos, ConfigErrorKind::EmptyConfig { name: name.clone() }));
        }
        let entries = items.iter().map(|item| self.entry(name, item)).collect::<Result<Vec<_>, _>>()?;
        Ok(NamedConfig { pos: key.pos, entries })
    }

    fn entry(&self, config: &str, item: &Located) -> Result<DeviceConfig, ConfigError> {
        let place = format!("in an entry of config '{config}'");
        let Node::Map(entries) = &item.node else {
            return Err(self.err(
                item.pos,
                ConfigErrorKind::WrongType {
                    field: String::new(),
                    place: format!("each entry of config '{config}'"),
                    expected: "a mapping with 'devices' and 'mig-enabled'".to_string(),
                    found: item.node.describe(),
                },
            ));
        };
        let fields = self.fields(entries, ENTRY_FIELDS, &place)?;
        let entry_pos = item.used;
        let missing = |field: &str, hint: &str| {
            self.err(
                entry_pos,
                ConfigErrorKind::MissingField {
                    field: field.to_string(),
                    place: place.clone(),
                    hint: hint.to_string(),
                },
            )
        };

        let (_, devices_node) = fields
            .get("devices")
            .ok_or_else(|| missing("devices", " (write 'devices: all' or a list such as [0, 1])"))?;
        let devices = self.devices(devices_node, &place)?;

        let (device_filter, device_filter_pos) = match fields.get("device-filter") {
            None => (Vec::new(), Vec::new()),
            Some((_, v)) => self.device_filter(v, &place)?,
        };

        let (_, enabled_node) = fields.get("mig-enabled").ok_or_else(|| missing("mig-enabled", ""))?;
        let mig_enabled = match enabled_node.node {
            Node::Bool(b) => b,
            _ => return Err(self.wrong_type(enabled_node, "mig-enabled", &place, "true or false")),
        };

        let (mig_devices, mig_devices_pos) = match fields.get("mig-devices") {
            None if mig_enabled => {
                return Err(missing(
                    "mig-devices",
                    " (required when 'mig-enabled' is true; write 'mig-devices: {}' for no MIG devices)",
                ));
            }
            None => (Vec::new(), Vec::new()),
            Some((key, value)) => {
                let list = match &value.node {
                    Node::Map(entries) => self.mig_devices(entries)?,
                    Node::Null if !mig_enabled => (Vec::new(), Vec::new()),
                    _ => {
                        return Err(self.wrong_type(
                            value,
                            "mig-devices",
                            &place,
                            "a mapping of MIG device types to counts, such as {\"1g.10gb\": 2} (or {} for none)",
                        ));
                    }
                };
                if !list.0.is_empty() && list.0.iter().all(|(_, count)| *count == 0) {
                    return Err(self.err(key.pos, ConfigErrorKind::AllCountsZero));
                }
                if !mig_enabled && !list.0.is_empty() {
                    return Err(self.err(key.pos, ConfigErrorKind::MigDevicesWhileDisabled));
                }
                list
            }
        };

        Ok(DeviceConfig {
            pos: entry_pos,
            devices,
            devices_pos: devices_node.pos,
            device_filter,
            device_filter_pos,
            mig_enabled,
            mig_devices,
            mig_devices_pos,
        })
    }

    fn devices(&self, value: &Located, place: &str) -> Result<DeviceSelector, ConfigError> {
        const EXPECTED: &str = "'all' or a list of GPU indices such as [0, 1]";
        match &value.node {
            Node::Str(s) if s == "all" => Ok(DeviceSelector::All),
            Node::Seq(items) => {
                let mut indices = Vec::with_capacity(items.len());
                for item in items {
                    match item.node {
                        Node::Int(i) => match u32::try_from(i) {
                            Ok(i) => indices.push(i),
                            Err(_) => {
                                return Err(self.wrong_type(
                                    item,
                                    "devices",
                                    place,
                                    "a list of GPU indices (integers from 0)",
                                ));
                            }
                        },
                        _ => {
                            return Err(self.wrong_type(
                                item,
                                "devices",
                                place,
                                "a list of GPU indices (integers from 0)",
                            ));
                        }
                    }
                }
                Ok(DeviceSelector::Indices(indices))
            }
            Node::Int(i) => Err(self.err(
                value.pos,
                ConfigErrorKind::WrongType {
                    field: "devices".to_string(),
                    place: place.to_string(),
                    expected: format!("{EXPECTED} (write [{i}] for one GPU)"),
                    found: value.node.describe(),
                },
            )),
            _ => Err(self.wrong_type(value, "devices", place, EXPECTED)),
        }
    }

    fn device_filter(&self, value: &Located, place: &str) -> Result<(Vec<DeviceFilter>, Vec<Pos>), ConfigError> {
        const EXPECTED: &str = "a quoted PCI id such as \"0x233010DE\" or a list of them";
        let items: Vec<&Located> = match &value.node {
            Node::Str(s) if s.is_empty() => return Ok((Vec::new(), Vec::new())),
            Node::Str(_) | Node::Int(_) => vec![value],
            Node::Seq(items) => items.iter().collect(),
            _ => return Err(self.wrong_type(value, "device-filter", place, EXPECTED)),
        };
        let mut ids = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for item in items {
            let id = match &item.node {
                Node::Str(s) => parse_device_filter(s).map_err(|reason| {
                    self.err(item.pos, ConfigErrorKind::BadDeviceFilter { value: s.clone(), reason })
                })?,
                Node::Int(i) => {
                    let shown = u32::try_from(*i).map_or_else(|_| i.to_string(), |v| format!("0x{v:08X}"));
                    return Err(self.err(
                        item.pos,
                        ConfigErrorKind::BadDeviceFilter {
                            value: shown.clone(),
                            reason: format!(
                                "is read by YAML as a number; mig-parted needs device filters as strings, so quote it: \"{shown}\""
                            ),
                        },
                    ));
                }
                _ => return Err(self.wrong_type(item, "device-filter", place, EXPECTED)),
            };
            ids.push(id);
            positions.push(item.pos);
        }
        Ok((ids, positions))
    }

    fn mig_devices(&self, entries: &[(Key, Located)]) -> Result<MigDevices, ConfigError> {
        self.unique(entries)?;
        let mut list = Vec::with_capacity(entries.len());
        let mut positions = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if key.text.trim().is_empty() {
                return Err(self.err(
                    key.pos,
                    ConfigErrorKind::WrongType {
                        field: String::new(),
                        place: "each key of 'mig-devices'".to_string(),
                        expected: "a MIG device type such as '1g.10gb' or '1c.3g.40gb'".to_string(),
                        found: "an empty name".to_string(),
                    },
                ));
            }
            if let Err(reason) = check_device_type_format(&key.text) {
                let suggestions = repaired_device_type(&key.text).into_iter().collect();
                return Err(self.err(
                    key.pos,
                    ConfigErrorKind::BadDeviceTypeFormat { name: key.text.clone(), reason, suggestions },
                ));
            }
            let count = match value.node {
                Node::Int(i) => u32::try_from(i).ok(),
                _ => None,
            };
            let Some(count) = count else {
                return Err(self.err(
                    value.pos,
                    ConfigErrorKind::BadCount { name: key.text.clone(), found: value.node.describe() },
                ));
            };
            list.push((key.text.clone(), count));
            positions.push(key.pos);
        }
        Ok((list, positions))
    }
}

/// mig-parted's check of how a device type is written, before any GPU is looked at:
/// `[<C>c.]<G>g.<GB>gb` with lower-case unit letters and no spaces, then optionally `+attr,...`
/// or `-attr,...` (letters, digits and dots, not starting with a digit or a dot).
fn check_device_type_format(name: &str) -> Result<(), String> {
    let (base, attributes) = match (name.split_once('+'), name.split_once('-')) {
        (Some(_), Some(_)) => return Err("it has both '+' and '-' attributes".to_string()),
        (Some((base, attrs)), None) | (None, Some((base, attrs))) => (base, Some(attrs)),
        (None, None) => (name, None),
    };
    let fields: Vec<&str> = base.splitn(3, '.').collect();
    let units: &[&str] = match fields.len() {
        3 => &["c", "g", "gb"],
        2 => &["g", "gb"],
        _ => return Err("it needs 2 or 3 fields separated by '.'".to_string()),
    };
    for (field, unit) in fields.iter().zip(units) {
        if field.trim() != *field {
            return Err(format!("'{field}' has leading or trailing spaces"));
        }
        let Some(digits) = field.strip_suffix(unit) else {
            return Err(format!("'{field}' does not end in '{unit}' (lower case)"));
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("'{field}' does not start with a number"));
        }
    }
    let Some(attributes) = attributes else { return Ok(()) };
    let mut seen = Vec::new();
    for a in attributes.split(',') {
        let problem = if a.is_empty() {
            Some("an attribute is empty")
        } else if a.trim() != a {
            Some("an attribute has leading or trailing spaces")
        } else if a.starts_with(|c: char| c.is_ascii_digit()) {
            Some("an attribute starts with a digit")
        } else if a.starts_with('.') || a.ends_with('.') {
            Some("an attribute starts or ends with '.'")
        } else if !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            Some("an attribute has a character other than a letter, a digit or '.'")
        } else if seen.contains(&a) {
            Some("an attribute is listed twice")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!("{p} ('{a}')"));
        }
        seen.push(a);
    }
    Ok(())
}

/// The spelling a malformed device type most likely meant: without spaces, in lower case, each
/// field's unit completed (`3G.20g ` → `3g.20gb`); `None` when that is not well formed either.
fn repaired_device_type(name: &str) -> Option<String> {
    let flat: String = name.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    let (base, attributes) = match flat.find(['+', '-']) {
        Some(i) => flat.split_at(i),
        None => (flat.as_str(), ""),
    };
    let fields: Vec<&str> = base.splitn(3, '.').collect();
    let units: &[&str] = if fields.len() == 3 { &["c", "g", "gb"] } else { &["g", "gb"] };
    let mut parts = Vec::with_capacity(fields.len());
    for (field, unit) in fields.iter().zip(units) {
        let digits_end = field.find(|c: char| !c.is_ascii_digit()).unwrap_or(field.len());
        let (digits, rest) = field.split_at(digits_end);
        if digits.is_empty() || !unit.starts_with(rest) {
            return None;
        }
        parts.push(format!("{digits}{unit}"));
    }
    let repaired = format!("{}{attributes}", parts.join("."));
    (repaired != name && check_device_type_format(&repaired).is_ok()).then_some(repaired)
}

/// `0x233010DE` → device id `0x2330`; `0x233010DE:0x16C110DE` → the same on subsystem
/// `0x16C110DE`. Each half is read as Go's `strconv.ParseUint(s, 0, 32)` reads it (hex after
/// `0x`, or decimal). mig-parted's matcher treats a malformed value as matching nothing; it is
/// refused here, where it is written.
fn parse_device_filter(s: &str) -> Result<DeviceFilter, String> {
    let (primary, subsystem) = match s.split(':').collect::<Vec<_>>()[..] {
        [primary] => (primary, None),
        [primary, subsystem] => (primary, Some(subsystem)),
        _ => {
            return Err(format!(
                "has {} ':'; write the PCI id, optionally followed by one ':' and the board's subsystem id, such as \"0x233010DE:0x16C110DE\"",
                s.matches(':').count()
            ));
        }
    };
    let device = parse_primary(primary)?;
    let subsystem = match subsystem {
        None => None,
        Some(sub) => Some(parse_u32(sub).ok_or_else(|| {
            format!(
                "has subsystem id '{sub}' after ':', which is not a 32-bit number; write the subsystem device id followed by the subsystem vendor id, such as \"{}:0x16C110DE\"",
                device_filter_string(device)
            )
        })?),
    };
    Ok(DeviceFilter { device, subsystem })
}

/// A 32-bit number as Go's `strconv.ParseUint(s, 0, 32)` reads the forms mig-parted's files use:
/// hex after `0x`, or decimal.
fn parse_u32(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok().filter(|_| !hex.starts_with(['+', '-']))
    } else if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        t.parse::<u32>().ok()
    } else {
        None
    }
}

/// The part before any `:`: the device id, with NVIDIA's vendor id.
fn parse_primary(s: &str) -> Result<u16, String> {
    let Some(value) = parse_u32(s) else {
        return Err("is not a PCI id; write the device id followed by NVIDIA's vendor id 10DE, such as \"0x233010DE\""
            .to_string());
    };
    let device = (value >> 16) as u16;
    let vendor = (value & 0xFFFF) as u16;
    if vendor != NVIDIA_VENDOR_ID {
        return Err(format!(
            "has vendor id 0x{vendor:04X}, not NVIDIA's 0x10DE; write the device id followed by 10DE, such as \"{}\"",
            device_filter_string(if device == 0 { vendor } else { device })
        ));
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_filter_forms() {
        let dev = |d| Ok(DeviceFilter::device(d));
        assert_eq!(parse_device_filter("0x233010DE"), dev(0x2330));
        assert_eq!(parse_device_filter("0x20b010de"), dev(0x20B0));
        assert_eq!(parse_device_filter(&0x2330_10DEu32.to_string()), dev(0x2330));
        assert!(parse_device_filter("0x2330").unwrap_err().contains("vendor id 0x2330"));
        assert!(parse_device_filter("H100").unwrap_err().contains("not a PCI id"));
        let with_sub = DeviceFilter { device: 0x2330, subsystem: Some(0x16C1_10DE) };
        assert_eq!(parse_device_filter("0x233010DE:0x16C110DE"), Ok(with_sub));
        assert_eq!(with_sub.to_string(), "0x233010DE:0x16C110DE");
        // Another vendor may build the board: the subsystem vendor is not NVIDIA's (Dell, 0x1028).
        assert_eq!(parse_device_filter("0x233010DE:0x0BAD1028").map(|f| f.subsystem), Ok(Some(0x0BAD_1028)));
        assert!(parse_device_filter("0x233010DE:0x16C110DE:1").unwrap_err().contains("has 2 ':'"));
        assert!(parse_device_filter("0x233010DE:16C1").unwrap_err().contains("subsystem id '16C1'"));
        assert!(parse_device_filter("0x233010DE:").unwrap_err().contains("subsystem id ''"));
        assert!(parse_device_filter("0x233010DE:0x1_0000_0000").is_err());
        assert!(parse_device_filter(":0x16C110DE").unwrap_err().contains("not a PCI id"));
    }

    #[test]
    fn subsystem_filters_match_all_four_parts() {
        let any_board = DeviceFilter::device(0x2330);
        let one_board = DeviceFilter { device: 0x2330, subsystem: Some(0x16C1_10DE) };
        assert!(any_board.matches(0x2330, 0x16C0_10DE) && any_board.matches(0x2330, 0));
        assert!(one_board.matches(0x2330, 0x16C1_10DE));
        assert!(!one_board.matches(0x2330, 0x16C0_10DE), "sibling subsystem device");
        assert!(!one_board.matches(0x2330, 0x16C1_1028), "another subsystem vendor");
        assert!(!one_board.matches(0x2330, 0), "unknown subsystem");
        assert!(!one_board.matches(0x2324, 0x16C1_10DE), "another device");
        assert!(DeviceFilter { device: 0x2330, subsystem: Some(0) }.matches(0x2330, 0));
    }

    #[test]
    fn quoting() {
        assert_eq!(plain_or_quoted("all-1g.10gb"), "all-1g.10gb");
        assert_eq!(plain_or_quoted("custom"), "custom");
        for s in ["yes", "1", "1e5", "0x10", "", "a b", "-x", "null", "1.5", ".inf", "a:b", "é"] {
            assert!(plain_or_quoted(s).starts_with('"'), "{s}");
        }
        assert_eq!(double_quoted("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
