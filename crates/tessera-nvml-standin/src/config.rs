//! The stand-in's configuration, read from the environment when the library is initialised.
//!
//! | variable | meaning |
//! |---|---|
//! | `TESSERA_STANDIN_SPEC` | node spec (`NodeSpec::parse`); unset: the state file's node, else `NodeSpec::default()` |
//! | `TESSERA_STANDIN_STATE` | simulated-node state file shared with other processes; unset: in memory |
//! | `TESSERA_STANDIN_FAULTS` | fault plan, see [`crate::faults`] |
//! | `TESSERA_STANDIN_CALLS` | a file each counted call's function name is appended to (a census for fault tests), see [`crate::faults`] |
//! | `TESSERA_STANDIN_XIDS` | Xid injection file, see [`crate::xid`] |
//! | `TESSERA_STANDIN_ACTIVITY` | what the GPUs and GPU instances do, for GPM, see [`crate::activity`] |
//! | `TESSERA_STANDIN_DRIVER_VERSION` | driver version (default `580.65.06`); gates profiles by `min_driver` |
//! | `TESSERA_STANDIN_NO_MIG` | `I[,J]`: GPUs that are not MIG-capable |
//! | `TESSERA_STANDIN_LOST` | `I[,J]`: GPUs that fell off the bus |
//! | `TESSERA_STANDIN_NO_PERMISSION` | `1`: every mutating call fails with `NO_PERMISSION` |
//! | `TESSERA_STANDIN_NON_ROOT` | `1`: the caller is not root: `nvmlDeviceSetMigMode` and the aggregate process list of a GPU in MIG mode fail with `NO_PERMISSION` (nvml.h), a MIG device's own list still answers |
//! | `TESSERA_STANDIN_MIG_UUID` | `fail`: `nvmlDeviceGetUUID` on a MIG device fails with `UNKNOWN`; unset: `MIG-<uuid>`, or the pre-R470 `MIG-GPU-<uuid>/<gi>/<ci>` on a driver older than R470 |
//! | `TESSERA_STANDIN_REBIND` | `1`: a MIG mode change that takes effect rebinds the GPU: its minor number moves (nvml.h: "attributes … such as minor number, might change") |
//!
//! An empty value counts as unset. A malformed value makes `nvmlInit_v2` fail.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tessera_gpu::NodeSpec;

use crate::faults::FaultPlan;
use crate::profiles::driver_major;

pub const ENV_SPEC: &str = "TESSERA_STANDIN_SPEC";
pub const ENV_STATE: &str = "TESSERA_STANDIN_STATE";
pub const ENV_FAULTS: &str = "TESSERA_STANDIN_FAULTS";
pub const ENV_CALLS: &str = "TESSERA_STANDIN_CALLS";
pub const ENV_XIDS: &str = "TESSERA_STANDIN_XIDS";
pub const ENV_ACTIVITY: &str = "TESSERA_STANDIN_ACTIVITY";
pub const ENV_DRIVER_VERSION: &str = "TESSERA_STANDIN_DRIVER_VERSION";
pub const ENV_NO_MIG: &str = "TESSERA_STANDIN_NO_MIG";
pub const ENV_LOST: &str = "TESSERA_STANDIN_LOST";
pub const ENV_NO_PERMISSION: &str = "TESSERA_STANDIN_NO_PERMISSION";
pub const ENV_NON_ROOT: &str = "TESSERA_STANDIN_NON_ROOT";
pub const ENV_MIG_UUID: &str = "TESSERA_STANDIN_MIG_UUID";
pub const ENV_REBIND: &str = "TESSERA_STANDIN_REBIND";

/// Every variable the stand-in reads.
pub const ENV_VARS: &[&str] = &[
    ENV_SPEC,
    ENV_STATE,
    ENV_FAULTS,
    ENV_CALLS,
    ENV_XIDS,
    ENV_ACTIVITY,
    ENV_DRIVER_VERSION,
    ENV_NO_MIG,
    ENV_LOST,
    ENV_NO_PERMISSION,
    ENV_NON_ROOT,
    ENV_MIG_UUID,
    ENV_REBIND,
];

/// The driver version when `TESSERA_STANDIN_DRIVER_VERSION` is unset.
pub const DEFAULT_DRIVER_VERSION: &str = "580.65.06";

/// A driver version and its major number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverVersion {
    pub text: String,
    pub major: u32,
}

impl DriverVersion {
    /// Parse `580.65.06`.
    pub fn parse(text: &str) -> Result<DriverVersion, String> {
        let text = text.trim();
        driver_major(text).map(|major| DriverVersion { text: text.to_string(), major }).ok_or_else(|| {
            format!("{ENV_DRIVER_VERSION}='{text}' is not a driver version like {DEFAULT_DRIVER_VERSION}")
        })
    }
}

impl Default for DriverVersion {
    fn default() -> Self {
        DriverVersion { text: DEFAULT_DRIVER_VERSION.to_string(), major: 580 }
    }
}

/// Everything the environment says.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `None`: the state file's node, or the default node.
    pub spec: Option<NodeSpec>,
    pub state: Option<PathBuf>,
    pub faults: FaultPlan,
    pub xids: Option<PathBuf>,
    pub activity: Option<PathBuf>,
    pub driver: DriverVersion,
    pub no_mig: BTreeSet<u32>,
    pub lost: BTreeSet<u32>,
    pub no_permission: bool,
    /// The caller is not root (`TESSERA_STANDIN_NON_ROOT`).
    pub non_root: bool,
    /// `nvmlDeviceGetUUID` fails on MIG devices (`TESSERA_STANDIN_MIG_UUID=fail`).
    pub mig_uuid_fails: bool,
    /// A MIG mode change moves the GPU's minor number (`TESSERA_STANDIN_REBIND`).
    pub rebind: bool,
}

impl Config {
    /// Read the process environment.
    pub fn from_env(functions: &[&str]) -> Result<Config, String> {
        Config::from_lookup(
            |name| match std::env::var(name) {
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
            },
            functions,
        )
    }

    /// Read the variables through `get` (unit tests pass a map); `functions` are the names a
    /// fault rule may use.
    pub fn from_lookup(
        get: impl Fn(&str) -> Result<Option<String>, String>,
        functions: &[&str],
    ) -> Result<Config, String> {
        let var = |name: &str| -> Result<Option<String>, String> { Ok(get(name)?.filter(|v| !v.trim().is_empty())) };
        let spec = match var(ENV_SPEC)? {
            Some(text) => Some(NodeSpec::parse(&text).map_err(|e| format!("{ENV_SPEC}: {e}"))?),
            None => None,
        };
        let faults = match var(ENV_FAULTS)? {
            Some(text) => FaultPlan::parse(&text, functions).map_err(|e| format!("{ENV_FAULTS}: {e}"))?,
            None => FaultPlan::default(),
        };
        let faults = match var(ENV_CALLS)? {
            Some(path) => faults.with_census(PathBuf::from(path)),
            None => faults,
        };
        let driver = match var(ENV_DRIVER_VERSION)? {
            Some(text) => DriverVersion::parse(&text)?,
            None => DriverVersion::default(),
        };
        let no_permission = flag(ENV_NO_PERMISSION, var(ENV_NO_PERMISSION)?)?;
        let non_root = flag(ENV_NON_ROOT, var(ENV_NON_ROOT)?)?;
        let rebind = flag(ENV_REBIND, var(ENV_REBIND)?)?;
        let mig_uuid_fails = match var(ENV_MIG_UUID)? {
            None => false,
            Some(v) if v.trim().eq_ignore_ascii_case("fail") => true,
            Some(v) => return Err(format!("{ENV_MIG_UUID}='{}': expected fail", v.trim())),
        };
        Ok(Config {
            spec,
            state: var(ENV_STATE)?.map(PathBuf::from),
            faults,
            xids: var(ENV_XIDS)?.map(PathBuf::from),
            activity: var(ENV_ACTIVITY)?.map(PathBuf::from),
            driver,
            no_mig: gpu_list(ENV_NO_MIG, var(ENV_NO_MIG)?)?,
            lost: gpu_list(ENV_LOST, var(ENV_LOST)?)?,
            no_permission,
            non_root,
            mig_uuid_fails,
            rebind,
        })
    }

    /// Check the GPU indices against the node's GPU count.
    pub fn check_gpus(&self, count: u32) -> Result<(), String> {
        for (name, set) in [(ENV_NO_MIG, &self.no_mig), (ENV_LOST, &self.lost)] {
            if let Some(bad) = set.iter().find(|&&i| i >= count) {
                return Err(format!("{name}: GPU {bad} does not exist; the node has {count} GPU(s)"));
            }
        }
        Ok(())
    }
}

/// A yes/no variable: `1`/`0` (or true/false, yes/no, on/off); unset is no.
fn flag(name: &str, value: Option<String>) -> Result<bool, String> {
    let Some(v) = value else {
        return Ok(false);
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("{name}='{other}': expected 1 or 0")),
    }
}

/// `0,3` → {0, 3}.
fn gpu_list(name: &str, value: Option<String>) -> Result<BTreeSet<u32>, String> {
    let Some(value) = value else {
        return Ok(BTreeSet::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| format!("{name}='{value}': '{s}' is not a GPU index")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| Ok(map.get(name).cloned()), &["nvmlShutdown"])
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert!(c.spec.is_none() && c.state.is_none() && c.xids.is_none() && c.activity.is_none());
        assert_eq!(c.driver, DriverVersion { text: "580.65.06".into(), major: 580 });
        assert!(c.no_mig.is_empty() && c.lost.is_empty() && !c.no_permission);
        assert!(c.faults.rules().is_empty());
        // Empty counts as unset.
        assert!(config(&[(ENV_SPEC, " "), (ENV_NO_PERMISSION, "")]).unwrap().spec.is_none());
    }

    #[test]
    fn everything_set() {
        let c = config(&[
            (ENV_SPEC, "2xA100-40GB"),
            (ENV_STATE, "/tmp/node.json"),
            (ENV_FAULTS, "nvmlShutdown:1=UNKNOWN"),
            (ENV_XIDS, "/tmp/xids"),
            (ENV_ACTIVITY, "/tmp/activity"),
            (ENV_DRIVER_VERSION, "470.82.01"),
            (ENV_NO_MIG, "1"),
            (ENV_LOST, "0, 1"),
            (ENV_NO_PERMISSION, "1"),
        ])
        .unwrap();
        assert_eq!(c.spec.unwrap().to_string(), "2xA100-40GB,numa=1");
        assert_eq!(c.state, Some(PathBuf::from("/tmp/node.json")));
        assert_eq!(c.faults.rules().len(), 1);
        assert_eq!(c.activity, Some(PathBuf::from("/tmp/activity")));
        assert_eq!(c.driver.major, 470);
        assert_eq!(c.no_mig.into_iter().collect::<Vec<_>>(), [1]);
        assert_eq!(c.lost.iter().copied().collect::<Vec<_>>(), [0, 1]);
        assert!(c.no_permission);
        let c = config(&[(ENV_NON_ROOT, "1"), (ENV_MIG_UUID, "FAIL"), (ENV_REBIND, "yes")]).unwrap();
        assert!(c.non_root && c.mig_uuid_fails && c.rebind);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let table: &[(&str, &str, &str)] = &[
            (ENV_SPEC, "8xH101", "TESSERA_STANDIN_SPEC: unknown GPU model"),
            (ENV_FAULTS, "nvmlShutdown:1", "TESSERA_STANDIN_FAULTS: bad fault rule"),
            (ENV_DRIVER_VERSION, "new", "TESSERA_STANDIN_DRIVER_VERSION='new'"),
            (ENV_NO_MIG, "0,x", "TESSERA_STANDIN_NO_MIG='0,x': 'x'"),
            (ENV_LOST, "-1", "TESSERA_STANDIN_LOST"),
            (ENV_NO_PERMISSION, "maybe", "TESSERA_STANDIN_NO_PERMISSION='maybe'"),
            (ENV_NON_ROOT, "maybe", "TESSERA_STANDIN_NON_ROOT='maybe'"),
            (ENV_REBIND, "2", "TESSERA_STANDIN_REBIND='2'"),
            (ENV_MIG_UUID, "legacy", "TESSERA_STANDIN_MIG_UUID='legacy'"),
        ];
        for (name, value, needle) in table {
            let e = config(&[(name, value)]).expect_err(value);
            assert!(e.contains(needle), "{name}={value}: {e}");
        }
        let c = config(&[(ENV_LOST, "8")]).unwrap();
        assert!(c.check_gpus(8).unwrap_err().contains("GPU 8 does not exist"));
        assert!(c.check_gpus(9).is_ok());
    }
}
