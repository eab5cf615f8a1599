//! Which backend stands behind a command or the daemon: the one place the choice is made.
//!
//! The policy ([`open`]):
//! * a simulated-node spec without an explicit choice ([`BackendChoice::Auto`]) means the
//!   simulated node;
//! * [`BackendChoice::Nvml`] with a simulated-node spec is an error;
//! * [`BackendChoice::Auto`] uses NVML when the library loads and lists at least one GPU, the
//!   simulated node when there is no library or no GPU (saying why in the description), and is
//!   an error, not a silent fallback, when NVML loads but cannot list the GPUs.

use std::fmt;
use std::path::PathBuf;

#[cfg(test)]
use crate::backend::BackendKind;
use crate::backend::{BackendError, MigBackend};
use crate::nvml::{DEFAULT_LIBRARY, NvmlBackend};
use crate::sim::SimBackend;
use crate::spec::{NodeSpec, SpecError};

/// Which backend is asked for. Parsed from `auto`, `nvml` or `sim` by [`std::str::FromStr`] (the
/// command line) and by `serde` through it (configuration files), printed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// NVML when it loads and finds GPUs, otherwise the simulated node.
    #[default]
    Auto,
    /// Real GPUs through NVML; an error if NVML cannot be used.
    Nvml,
    /// The simulated node.
    Sim,
}

/// What [`open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    pub choice: BackendChoice,
    /// The NVML library to load; `None`: [`DEFAULT_LIBRARY`] from the loader's path.
    pub nvml_library: Option<PathBuf>,
    /// The simulated node's hardware (`8xH100-80GB,numa=2`); `None`: the state file's node, or
    /// the default node for a new file.
    pub sim_spec: Option<String>,
    /// The simulated node's state file.
    pub sim_state: PathBuf,
}

/// The backend chosen.
#[derive(Debug)]
pub enum Node {
    Sim(Box<SimBackend>),
    Nvml(Box<NvmlBackend>),
}

impl Node {
    pub fn backend(&self) -> &dyn MigBackend {
        match self {
            Node::Sim(s) => s.as_ref(),
            Node::Nvml(n) => n.as_ref(),
        }
    }

    /// The simulated node, for what only it can do (raise Xids, reset a GPU, reboot).
    pub fn sim(&self) -> Option<&SimBackend> {
        match self {
            Node::Sim(s) => Some(s.as_ref()),
            Node::Nvml(_) => None,
        }
    }

    #[cfg(test)]
    pub fn kind(&self) -> BackendKind {
        self.backend().kind()
    }
}

/// The backend, and one line saying what it is (and, for a fallback, why the simulated node).
#[derive(Debug)]
pub struct Opened {
    pub node: Node,
    /// `NVML, driver 580.65.06, 8 GPU(s)`, or `simulated node 8xH100-80GB,numa=2 (state …)`.
    pub description: String,
    /// Why `Auto` fell back to the simulated node.
    pub fallback: Option<Fallback>,
}

/// Why [`BackendChoice::Auto`] fell back to the simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// No NVML library could be loaded (a machine without NVIDIA's driver): the usual case.
    NoLibrary { library: String },
    /// NVML loaded but reports no GPU: a driver without GPUs, worth saying.
    NoGpu,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::NoLibrary { library } => write!(f, "no NVML: {library} cannot be loaded"),
            Fallback::NoGpu => f.write_str("NVML found no GPU"),
        }
    }
}

impl Opened {
    /// The description, followed by `; <why>` when `Auto` fell back to the simulated node: the
    /// line to show when the backend is announced.
    pub fn summary(&self) -> String {
        match &self.fallback {
            Some(why) => format!("{}; {why}", self.description),
            None => self.description.clone(),
        }
    }
}

/// Why no backend could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A simulated-node spec with the NVML backend.
    #[error("the simulated node's spec '{spec}' cannot be combined with the NVML backend")]
    SpecWithNvml { spec: String },
    /// The simulated node's spec does not parse.
    #[error("simulated node spec '{spec}': {source}")]
    Spec {
        spec: String,
        #[source]
        source: SpecError,
    },
    /// The simulated node cannot be opened (its state file).
    #[error(transparent)]
    Sim(BackendError),
    /// NVML was asked for and cannot be used.
    #[error("NVML ({library}): {source}")]
    Nvml {
        library: String,
        #[source]
        source: BackendError,
    },
    /// `Auto`: NVML loads but cannot list the GPUs (a driver fault worth seeing, not a reason to
    /// pretend with the simulated node).
    #[error("NVML ({library}) loaded but cannot list the GPUs: {source}")]
    NvmlCannotList {
        library: String,
        #[source]
        source: BackendError,
    },
}

impl OpenError {
    /// The backend error underneath, if any.
    #[cfg(test)]
    pub fn backend_error(&self) -> Option<&BackendError> {
        match self {
            OpenError::Sim(e) | OpenError::Nvml { source: e, .. } | OpenError::NvmlCannotList { source: e, .. } => {
                Some(e)
            }
            OpenError::SpecWithNvml { .. } | OpenError::Spec { .. } => None,
        }
    }
}

fn library_name(opts: &OpenOptions) -> String {
    opts.nvml_library.as_ref().map_or_else(|| DEFAULT_LIBRARY.to_string(), |p| p.display().to_string())
}

fn open_sim(opts: &OpenOptions) -> Result<(SimBackend, String), OpenError> {
    let spec = match &opts.sim_spec {
        Some(text) => Some(NodeSpec::parse(text).map_err(|source| OpenError::Spec { spec: text.clone(), source })?),
        None => None,
    };
    let sim = SimBackend::open(&opts.sim_state, spec.as_ref()).map_err(OpenError::Sim)?;
    let description = format!("simulated node {} (state {})", sim.spec(), opts.sim_state.display());
    Ok((sim, description))
}

fn open_nvml(opts: &OpenOptions) -> Result<NvmlBackend, BackendError> {
    NvmlBackend::open(opts.nvml_library.as_deref())
}

fn nvml_description(n: &NvmlBackend, gpus: usize) -> String {
    format!("NVML, driver {}, {gpus} GPU(s)", n.driver_version())
}

/// Open the backend `opts` asks for (see the module header for the policy).
pub fn open(opts: &OpenOptions) -> Result<Opened, OpenError> {
    let choice = match (opts.choice, &opts.sim_spec) {
        (BackendChoice::Auto, Some(_)) => BackendChoice::Sim,
        (choice, _) => choice,
    };
    match choice {
        BackendChoice::Sim => {
            let (sim, description) = open_sim(opts)?;
            Ok(Opened { node: Node::Sim(Box::new(sim)), description, fallback: None })
        }
        BackendChoice::Nvml => {
            if let Some(spec) = &opts.sim_spec {
                return Err(OpenError::SpecWithNvml { spec: spec.clone() });
            }
            let n = open_nvml(opts).map_err(|source| OpenError::Nvml { library: library_name(opts), source })?;
            // A GPU that fails does not stop the count (nor the backend): commands see it.
            let gpus = n.devices_partial().map(|d| d.len()).unwrap_or(0);
            let description = nvml_description(&n, gpus);
            Ok(Opened { node: Node::Nvml(Box::new(n)), description, fallback: None })
        }
        BackendChoice::Auto => {
            let why = match open_nvml(opts) {
                Ok(n) => match n.devices_partial() {
                    Ok(d) if !d.is_empty() => {
                        let description = nvml_description(&n, d.len());
                        return Ok(Opened { node: Node::Nvml(Box::new(n)), description, fallback: None });
                    }
                    Ok(_) => Fallback::NoGpu,
                    Err(source) => return Err(OpenError::NvmlCannotList { library: library_name(opts), source }),
                },
                Err(BackendError::LibraryNotFound { library, .. }) => Fallback::NoLibrary { library },
                Err(source) => return Err(OpenError::Nvml { library: library_name(opts), source }),
            };
            let (sim, description) = open_sim(opts)?;
            Ok(Opened { node: Node::Sim(Box::new(sim)), description, fallback: Some(why) })
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Nvml => "nvml",
            BackendChoice::Sim => "sim",
        })
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    /// `auto`, `nvml` or `sim` (as configuration files write it).
    fn from_str(s: &str) -> Result<BackendChoice, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "nvml" => Ok(BackendChoice::Nvml),
            "sim" | "simulated" => Ok(BackendChoice::Sim),
            other => Err(format!("unknown backend '{other}': expected auto, nvml or sim")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for BackendChoice {
    /// A string, as [`std::str::FromStr`] reads it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BackendChoice, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &std::path::Path, choice: BackendChoice, spec: Option<&str>, library: Option<&str>) -> OpenOptions {
        OpenOptions {
            choice,
            nvml_library: library.map(PathBuf::from),
            sim_spec: spec.map(str::to_string),
            sim_state: dir.join("sim-node.json"),
        }
    }

    const NO_LIBRARY: Option<&str> = Some("/nonexistent/libnvidia-ml.so.1");

    #[test]
    fn the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A spec means the simulated node, without a word on why.
        let o = open(&opts(d, BackendChoice::Auto, Some("1xA30"), NO_LIBRARY)).unwrap();
        assert!(o.node.sim().is_some());
        assert_eq!(o.fallback, None);
        assert!(o.description.starts_with("simulated node 1xA30"), "{}", o.description);
        let o = open(&opts(d, BackendChoice::Sim, None, NO_LIBRARY)).unwrap();
        assert_eq!(o.node.kind(), BackendKind::Simulated);
        // Auto without a library: the simulated node, saying why.
        let o = open(&opts(d, BackendChoice::Auto, None, NO_LIBRARY)).unwrap();
        assert!(o.node.sim().is_some());
        assert_eq!(o.fallback, Some(Fallback::NoLibrary { library: "/nonexistent/libnvidia-ml.so.1".into() }));
        assert!(o.summary().ends_with("; no NVML: /nonexistent/libnvidia-ml.so.1 cannot be loaded"));
        assert!(!o.description.contains("NVML"), "the description is the simulated node's: {}", o.description);
        assert_eq!(o.summary(), format!("{}; no NVML: /nonexistent/libnvidia-ml.so.1 cannot be loaded", o.description));
        // NVML asked for: never a fallback.
        let e = open(&opts(d, BackendChoice::Nvml, None, NO_LIBRARY)).unwrap_err();
        assert!(matches!(&e, OpenError::Nvml { source: BackendError::LibraryNotFound { .. }, .. }), "{e}");
        assert_eq!(e.backend_error().map(BackendError::kind), Some("library_not_found"));
        let e = open(&opts(d, BackendChoice::Nvml, Some("1xA30"), NO_LIBRARY)).unwrap_err();
        assert!(matches!(e, OpenError::SpecWithNvml { .. }), "{e}");
        // A library that loads but is not NVML is "no NVML".
        let o = open(&opts(d, BackendChoice::Auto, None, Some("libc.so.6"))).unwrap();
        assert!(matches!(o.fallback, Some(Fallback::NoLibrary { .. })), "{:?}", o.fallback);
        // A bad spec names itself.
        let e = open(&opts(d, BackendChoice::Sim, Some("8xH101"), NO_LIBRARY)).unwrap_err();
        assert!(e.to_string().contains("'8xH101'"), "{e}");
        // The state file's errors come through.
        let e = open(&opts(d, BackendChoice::Sim, Some("2xA30"), NO_LIBRARY)).unwrap_err();
        assert!(e.to_string().contains("sim-node.json"), "{e}");
    }

    #[test]
    fn choices_parse_and_print() {
        for c in [BackendChoice::Auto, BackendChoice::Nvml, BackendChoice::Sim] {
            assert_eq!(c.to_string().parse::<BackendChoice>(), Ok(c));
            // Configuration files write it the same way.
            let json = serde_json::Value::String(c.to_string());
            assert_eq!(serde_json::from_value::<BackendChoice>(json).unwrap(), c);
        }
        assert!("gpu".parse::<BackendChoice>().is_err());
        let e = serde_json::from_value::<BackendChoice>("gpu".into()).unwrap_err();
        assert!(e.to_string().contains("unknown backend 'gpu': expected auto, nvml or sim"), "{e}");
        assert_eq!(serde_json::from_value::<BackendChoice>("simulated".into()).unwrap(), BackendChoice::Sim);
    }
}
