//! Fault plans (`TESSERA_STANDIN_FAULTS`): make the Nth call of an NVML function fail.
//!
//! The plan is a comma-separated list of rules, `FUNCTION:N=ERROR` (the Nth call fails) or
//! `FUNCTION:N+=ERROR` (the Nth and every later call fail). `N` counts from 1, per function, over
//! the calls made since the library was initialised (a fresh `nvmlInit_v2` after the last
//! `nvmlShutdown` starts again at 1). `ERROR` is an NVML return code without its prefix
//! (`INSUFFICIENT_RESOURCES`, `IN_USE`, `GPU_IS_LOST`, …; `NVML_ERROR_…` is accepted too).
//! A faulted call returns the error before doing anything else, so it has no effect.
//!
//! A census (`TESSERA_STANDIN_CALLS=FILE`) appends each counted call's function name to a file,
//! one per line, counted as the rules count: so a test can list the calls a command makes, then
//! fail each of them in turn.

use std::collections::BTreeMap;
use std::fmt;

use crate::codes::{self, Ret};

/// One rule of a fault plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// The exported function, e.g. `nvmlDeviceCreateGpuInstanceWithPlacement`.
    pub function: String,
    /// Which call, from 1.
    pub nth: u64,
    /// Whether every later call fails too (`N+`).
    pub and_later: bool,
    /// The code the call returns.
    pub error: Ret,
}

impl FaultRule {
    fn matches(&self, function: &str, call: u64) -> bool {
        self.function == function && (call == self.nth || (self.and_later && call > self.nth))
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = codes::code_name(self.error).unwrap_or("UNKNOWN");
        write!(f, "{}:{}{}={name}", self.function, self.nth, if self.and_later { "+" } else { "" })
    }
}

/// A parsed fault plan and the per-function call counters it is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
    calls: BTreeMap<String, u64>,
    /// Where every counted call is written, when a census is taken.
    census: Option<std::path::PathBuf>,
}

impl FaultPlan {
    /// Parse a plan; `functions` are the names a rule may use (the library's exports).
    pub fn parse(text: &str, functions: &[&str]) -> Result<FaultPlan, String> {
        let mut rules = Vec::new();
        for raw in text.split(',') {
            let rule = raw.trim();
            if rule.is_empty() {
                continue;
            }
            let bad =
                |why: &str| format!("bad fault rule '{rule}': {why} (expected FUNCTION:N=ERROR or FUNCTION:N+=ERROR)");
            let Some((function, rest)) = rule.split_once(':') else {
                return Err(bad("no ':' after the function name"));
            };
            let function = function.trim();
            if !functions.contains(&function) {
                let known = tessera_mig::catalog::closest(function, functions);
                let hint =
                    if known.is_empty() { String::new() } else { format!("; did you mean {}?", known.join(" or ")) };
                return Err(bad(&format!("'{function}' is not a function of this library{hint}")));
            }
            let Some((count, error)) = rest.split_once('=') else {
                return Err(bad("no '=ERROR'"));
            };
            let count = count.trim();
            let (digits, and_later) = match count.strip_suffix('+') {
                Some(d) => (d.trim(), true),
                None => (count, false),
            };
            let nth: u64 = match digits.parse() {
                Ok(n) if n >= 1 => n,
                _ => return Err(bad(&format!("the call number '{digits}' is not a whole number from 1"))),
            };
            let Some(error) = codes::code_by_name(error) else {
                return Err(bad(&format!(
                    "'{}' is not an NVML error name (e.g. INSUFFICIENT_RESOURCES, IN_USE, NO_PERMISSION, GPU_IS_LOST, UNKNOWN)",
                    error.trim()
                )));
            };
            rules.push(FaultRule { function: function.to_string(), nth, and_later, error });
        }
        Ok(FaultPlan { rules, calls: BTreeMap::new(), census: None })
    }

    /// Take a census of the calls into `path` (see the module header).
    pub fn with_census(mut self, path: std::path::PathBuf) -> FaultPlan {
        self.census = Some(path);
        self
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Count a call of `function`; the error it must return when a rule says so.
    pub fn on_call(&mut self, function: &str) -> Option<Ret> {
        if let Some(path) = &self.census {
            use std::io::Write as _;
            // A census that cannot be written is a broken test setup: say so, keep going.
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{function}"));
            if let Err(e) = written {
                eprintln!("tessera-nvml-standin: cannot write the call census {}: {e}", path.display());
            }
        } else if self.rules.is_empty() {
            return None;
        }
        let n = self.calls.entry(function.to_string()).or_insert(0);
        *n += 1;
        let call = *n;
        self.rules.iter().find(|r| r.matches(function, call)).map(|r| r.error)
    }

    /// How many calls of `function` were counted.
    pub fn calls(&self, function: &str) -> u64 {
        self.calls.get(function).copied().unwrap_or(0)
    }
}

/// The return codes a fault sweep tries on `function`: the codes nvml.h documents for its family
/// of calls that a real driver may plausibly give. Every call may fail unknowably or find the GPU
/// gone; creating takes resources and privileges; destroying finds instances in use; a MIG mode
/// change may be refused; queries may be unsupported or refuse an argument.
pub fn plausible_codes(function: &str) -> Vec<&'static str> {
    let mut codes = vec!["UNKNOWN", "GPU_IS_LOST"];
    if function.contains("Create") {
        codes.extend(["INSUFFICIENT_RESOURCES", "NO_PERMISSION", "INVALID_ARGUMENT"]);
    } else if function.contains("Destroy") {
        codes.extend(["IN_USE", "NO_PERMISSION"]);
    } else if function.contains("SetMigMode") {
        codes.extend(["IN_USE", "NO_PERMISSION", "NOT_SUPPORTED"]);
    } else if function.contains("Get") {
        codes.extend(["NOT_SUPPORTED", "INVALID_ARGUMENT"]);
    }
    codes
}

/// Whether `function` changes the GPU (creates, destroys, switches MIG mode).
pub fn changes_the_gpu(function: &str) -> bool {
    ["Create", "Destroy", "SetMigMode"].iter().any(|w| function.contains(w))
}

/// The codes a bounded sweep tries: every plausible code on the calls that change the GPU, and
/// `UNKNOWN` and `GPU_IS_LOST` on the queries unless `full` (then every plausible code there too).
pub fn sweep_codes(function: &str, full: bool) -> Vec<&'static str> {
    if full || changes_the_gpu(function) { plausible_codes(function) } else { vec!["UNKNOWN", "GPU_IS_LOST"] }
}

/// A census file (`TESSERA_STANDIN_CALLS`) read back: how many times each function was called.
pub fn census_counts(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for function in text.lines().filter(|l| !l.is_empty()) {
        *counts.entry(function.to_owned()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::*;

    const FUNCS: &[&str] = &["nvmlDeviceCreateGpuInstance", "nvmlGpuInstanceDestroy", "nvmlShutdown"];

    #[test]
    fn parses_rules() {
        let p = FaultPlan::parse(
            " nvmlDeviceCreateGpuInstance:2=INSUFFICIENT_RESOURCES , nvmlGpuInstanceDestroy:1+=nvml_error_in_use,",
            FUNCS,
        )
        .unwrap();
        assert_eq!(
            p.rules(),
            [
                FaultRule {
                    function: "nvmlDeviceCreateGpuInstance".into(),
                    nth: 2,
                    and_later: false,
                    error: INSUFFICIENT_RESOURCES
                },
                FaultRule { function: "nvmlGpuInstanceDestroy".into(), nth: 1, and_later: true, error: IN_USE },
            ]
        );
        assert_eq!(p.rules()[1].to_string(), "nvmlGpuInstanceDestroy:1+=IN_USE");
        assert!(FaultPlan::parse("", FUNCS).unwrap().rules().is_empty());
    }

    #[test]
    fn counts_calls_per_function() {
        let mut p = FaultPlan::parse(
            "nvmlDeviceCreateGpuInstance:2=INSUFFICIENT_RESOURCES,nvmlGpuInstanceDestroy:3+=GPU_IS_LOST",
            FUNCS,
        )
        .unwrap();
        let create: Vec<Option<Ret>> = (0..4).map(|_| p.on_call("nvmlDeviceCreateGpuInstance")).collect();
        assert_eq!(create, [None, Some(INSUFFICIENT_RESOURCES), None, None]);
        let destroy: Vec<Option<Ret>> = (0..5).map(|_| p.on_call("nvmlGpuInstanceDestroy")).collect();
        assert_eq!(destroy, [None, None, Some(GPU_IS_LOST), Some(GPU_IS_LOST), Some(GPU_IS_LOST)]);
        assert_eq!(p.on_call("nvmlShutdown"), None);
        assert_eq!(p.calls("nvmlDeviceCreateGpuInstance"), 4);
        assert_eq!(p.calls("nvmlShutdown"), 1);
    }

    #[test]
    fn malformed_plans_say_why() {
        let table: &[(&str, &[&str])] = &[
            ("nvmlDeviceCreateGpuInstance", &["no ':'"]),
            ("nvmlDeviceCreateGpuInstance:1", &["no '=ERROR'"]),
            ("nvmlDeviceCreateGpuInstance:0=IN_USE", &["'0'", "from 1"]),
            ("nvmlDeviceCreateGpuInstance:x=IN_USE", &["'x'"]),
            ("nvmlDeviceCreateGpuInstance:1=WHATEVER", &["'WHATEVER'", "not an NVML error name"]),
            ("nvmlDeviceCreateGpuInstance:1=SUCCESS", &["'SUCCESS'"]),
            ("nvmlDeviceCreateGPUInstance:1=IN_USE", &["not a function", "did you mean nvmlDeviceCreateGpuInstance"]),
        ];
        for (text, needles) in table {
            let e = FaultPlan::parse(text, FUNCS).expect_err(text);
            for n in *needles {
                assert!(e.contains(n), "{text}: {e} lacks {n}");
            }
        }
    }
}
