//! Errors of the mig-parted config format.
//!
//! A mig-parted file is edited by hand, so every error names `origin:line:column` (the file and
//! the exact node) and says what is wrong in mig-parted's own words: the field, what was found,
//! what is allowed, and the closest valid name where one exists.

use std::fmt;

/// A 1-based line and column (in characters) in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    /// The start of a file: where errors about the whole file point.
    pub const START: Pos = Pos { line: 1, column: 1 };

    pub fn new(line: u32, column: u32) -> Self {
        Pos { line, column }
    }
}

impl Default for Pos {
    fn default() -> Self {
        Pos::START
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// An error in a mig-parted config file, or in applying one of its configs to a node.
///
/// Displays as `{origin}:{line}:{column}: {message}`. `kind` carries the structured details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file (path) the config came from.
    pub origin: String,
    pub line: u32,
    pub column: u32,
    /// What is wrong, in one sentence (the Display of `kind`).
    pub message: String,
    /// The structured problem (boxed to keep `Result<_, ConfigError>` small).
    pub kind: Box<ConfigErrorKind>,
}

impl ConfigError {
    pub fn new(origin: &str, pos: Pos, kind: ConfigErrorKind) -> Self {
        ConfigError {
            origin: origin.to_string(),
            line: pos.line,
            column: pos.column,
            message: kind.to_string(),
            kind: Box::new(kind),
        }
    }

    /// Where the error points.
    pub fn pos(&self) -> Pos {
        Pos::new(self.line, self.column)
    }
}

/// What is wrong, with its context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The text is not valid YAML.
    #[error("invalid YAML: {detail}")]
    Yaml { detail: String },
    /// The file holds no YAML at all.
    #[error("the file is empty; a mig-parted config starts with 'version: v1' and 'mig-configs:'")]
    EmptyFile,
    /// No `version` field.
    #[error("missing required field 'version'; mig-parted config files start with 'version: v1'")]
    MissingVersion,
    /// A `version` other than `v1`.
    #[error("unsupported version '{found}'; only mig-parted's 'version: v1' format exists")]
    UnsupportedVersion { found: String },
    /// A field the format does not have (mig-parted's loader rejects these too).
    #[error("unknown field '{field}' {place}; allowed fields: {}{}", allowed.join(", "), did_you_mean(suggestions))]
    UnknownField { field: String, place: String, allowed: Vec<String>, suggestions: Vec<String> },
    /// A required field is absent.
    #[error("missing required field '{field}' {place}{hint}")]
    MissingField { field: String, place: String, hint: String },
    /// A value of the wrong type or form.
    #[error("{} must be {expected}, not {found}", subject(field, place))]
    WrongType {
        /// The field (`devices`), or empty when the value is not a field's (an entry, the file).
        field: String,
        /// Where: `in an entry of config 'custom'`, or the whole subject when `field` is empty.
        place: String,
        expected: String,
        found: String,
    },
    /// The same key twice in one mapping.
    #[error("duplicate key '{key}' (first at {first})")]
    DuplicateKey { key: String, first: Pos },
    /// `mig-configs` is empty.
    #[error("'mig-configs' defines no configs; it needs at least one, such as 'all-disabled'")]
    NoConfigs,
    /// A config with an empty entry list.
    #[error("config '{name}' has no entries; it needs at least one, such as '- devices: all'")]
    EmptyConfig { name: String },
    /// `mig-devices` lists devices while `mig-enabled` is false.
    #[error("'mig-devices' lists MIG devices but 'mig-enabled' is false; remove them or set 'mig-enabled: true'")]
    MigDevicesWhileDisabled,
    /// `mig-devices` lists device types but every count is 0 (mig-parted refuses it too).
    #[error(
        "every count in 'mig-devices' is 0; give at least one MIG device a count above 0, or write 'mig-devices: {{}}' for none"
    )]
    AllCountsZero,
    /// A `mig-devices` key that is not written as mig-parted's device types are.
    #[error(
        "'{name}' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): {reason}{}",
        did_you_mean(suggestions)
    )]
    BadDeviceTypeFormat { name: String, reason: String, suggestions: Vec<String> },
    /// A `mig-devices` count that is not a non-negative integer.
    #[error("the count of '{name}' in 'mig-devices' must be a non-negative integer, not {found}")]
    BadCount { name: String, found: String },
    /// A `device-filter` entry that is not a PCI device id.
    #[error("device filter '{value}' {reason}")]
    BadDeviceFilter { value: String, reason: String },
    /// A hooks file's event that mig-parted does not have.
    #[error("unknown hook event '{name}'{}; the events are: {}", did_you_mean(suggestions), known.join(", "))]
    UnknownHookEvent { name: String, known: Vec<String>, suggestions: Vec<String> },
    /// The config name is not in the file.
    #[error("unknown config '{name}'{}; the file defines: {}", did_you_mean(suggestions), known.join(", "))]
    UnknownConfig { name: String, known: Vec<String>, suggestions: Vec<String> },
    /// One GPU is selected by two entries of the config.
    #[error(
        "GPU {index} is matched by two entries of config '{config}': the entry at {first} and the entry at {second}"
    )]
    OverlappingEntries { config: String, index: u32, first: Pos, second: Pos },
    /// MIG is to be enabled on a GPU whose model Tessera does not know.
    #[error(
        "GPU {index} (PCI device 0x{pci_device_id:04X}) is not a MIG-capable GPU model Tessera knows, so MIG cannot be enabled on it"
    )]
    UnknownModel { index: u32, pci_device_id: u16 },
    /// A `mig-devices` name that is not a profile of the GPU's model.
    #[error("GPU {index} ({model}) has no MIG device type '{name}'{}", did_you_mean(suggestions))]
    UnknownProfile { index: u32, model: String, name: String, suggestions: Vec<String> },
    /// `<C>c.<G>g.<GB>gb` with a compute-instance size the GPU instance does not offer.
    #[error(
        "GPU {index} ({model}): '{name}' asks for a compute instance of {slices} slice(s), but a {profile} GPU instance offers only {}",
        slice_list(offered)
    )]
    BadComputeSlices { index: u32, model: String, name: String, profile: String, slices: u32, offered: Vec<u8> },
    /// The MIG devices of an entry do not fit on the GPU together.
    #[error("GPU {index} ({model}): {detail}")]
    Infeasible { index: u32, model: String, detail: String },
}

pub(crate) fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => {
            format!(" (did you mean one of: {}?)", many.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", "))
        }
    }
}

fn subject(field: &str, place: &str) -> String {
    match (field.is_empty(), place.is_empty()) {
        (true, _) => place.to_string(),
        (false, true) => format!("'{field}'"),
        (false, false) => format!("'{field}' {place}"),
    }
}

fn slice_list(offered: &[u8]) -> String {
    let parts: Vec<String> = offered.iter().map(|c| format!("{c}c")).collect();
    parts.join(", ")
}
