//! cgroup isolation for a job's ranks: a memory limit (swap included), a cpuset, and which
//! GPU device nodes the job may open; and, because every process of the job is in its cgroup,
//! a way to kill all of them when the job ends, wherever they went (`setsid`, double forks).
//!
//! **Which hierarchy.** [`cgroup_support`] reads `/proc/self/mountinfo`: each of `memory`,
//! `cpuset` and `devices` is used through cgroup v1 where a v1 hierarchy has it mounted, else
//! through cgroup v2 when the v2 root offers it (devices on v2 need no controller: an eBPF
//! program does the job). So a pure v2 machine uses one directory, and a hybrid one (v1
//! controllers under `/sys/fs/cgroup/<ctrl>`, an empty cgroup2 at `/sys/fs/cgroup/unified`)
//! uses v1 for each controller mounted there.
//!
//! **Layout.** `<mount>/<parent>/<name>` in each hierarchy used ([`crate::Isolation`]); the parent
//! is created when missing (v1 cpuset: with `cpuset.cpus`/`cpuset.mems` copied from the root,
//! so children can be valid; v2: with `memory`/`cpuset` enabled in `cgroup.subtree_control`).
//! A leftover directory of the same name (a shim killed before it cleaned up) is emptied and
//! recreated. On v1 the memory cgroup is always created (it tracks the processes and counts OOM
//! kills); the cpuset and devices ones only when asked for.
//!
//! **Devices.** A character device whose major is guarded may be opened only if it is listed.
//! v1 cannot re-allow one minor inside a denied wildcard, so it gets an allow-list: `a` denied,
//! then `b *:* rwm`, `c M:* rwm` for every character major in `/proc/devices` except the guarded
//! ones, and `c M:m rwm` per allowed node (a driver loaded after the job started is therefore
//! denied on v1). v2 gets the eBPF program of `devfilter`.
//!
//! **Joining.** Each rank writes its own pid into every `cgroup.procs` between `fork` and
//! `exec` ([`crate::syscalls::apply_child_setup`]); the shim stays outside.
//!
//! **Ending.** After the last rank is reaped the shim kills whatever is still in the cgroup
//! (v2 `cgroup.kill` when there is one, else `SIGKILL` to each pid in `cgroup.procs` until it
//! is empty), reads the OOM counters (v2 `memory.events` `oom_kill`, v1 `memory.oom_control`
//! `oom_kill`, or `memory.failcnt`), and removes the directories.
//!
//! **Not available.** Not root, no cgroup file system, a controller missing or refusing a
//! value: with `required` the job fails before any rank starts, naming what is missing;
//! otherwise it runs without that part and the outcome's notes say so.
//!
//! Pure parts: [`parse_mountinfo`], [`decide`], [`v1_device_rules`], `/proc/devices` and counter
//! parsing, `dev_t` decoding. The rest is the file-system shell.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_host::{format_cpulist, parse_cpulist};

use crate::error::ExecError;
use crate::spec::{DeviceAccess, DeviceNumber, Isolation};
use crate::sys::{self, LinuxSyscalls};
use crate::syscalls::Syscalls;

/// How long the shim keeps killing what is left in a cgroup, and retrying its `rmdir`.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The NVIDIA driver's fixed character major (`/dev/nvidia0`…, `/dev/nvidiactl`).
pub const NVIDIA_MAJOR: u32 = 195;

/// `/proc/devices` names of NVIDIA character devices.
const NVIDIA_DEVICE_NAMES: [&str; 7] = [
    "nvidia-frontend",
    "nvidia",
    "nvidia-uvm",
    "nvidia-caps",
    "nvidia-nvlink",
    "nvidia-nvswitch",
    "nvidia-caps-imex-channels",
];

/// cgroup v1 or v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where one controller is used from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Controller {
    pub version: CgroupVersion,
    /// The hierarchy's mount point.
    pub mount: PathBuf,
}

/// What this machine offers for isolation (see the module docs), for the daemon to print at
/// start and for the shim to decide.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CgroupSupport {
    /// Whether this process is root (creating cgroups and moving processes needs it).
    pub root: bool,
    /// The cgroup2 mount, if any.
    pub unified: Option<PathBuf>,
    /// Controllers the cgroup2 root offers (`cgroup.controllers`).
    pub unified_controllers: Vec<String>,
    pub memory: Option<Controller>,
    pub cpuset: Option<Controller>,
    /// v2 means the eBPF device filter on the cgroup2 hierarchy.
    pub devices: Option<Controller>,
}

impl fmt::Display for CgroupSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (name, c) in [("memory", &self.memory), ("cpuset", &self.cpuset), ("devices", &self.devices)] {
            parts.push(match c {
                Some(Controller { version: CgroupVersion::V1, mount }) => format!("{name}: v1 at {}", mount.display()),
                Some(Controller { version: CgroupVersion::V2, mount }) if name == "devices" => {
                    format!("devices: v2 eBPF filter at {}", mount.display())
                }
                Some(Controller { version: CgroupVersion::V2, mount }) => format!("{name}: v2 at {}", mount.display()),
                None => format!("{name}: none"),
            });
        }
        if let Some(m) = &self.unified {
            let list = if self.unified_controllers.is_empty() {
                "none".to_owned()
            } else {
                self.unified_controllers.join(" ")
            };
            parts.push(format!("cgroup2 at {} (controllers: {list})", m.display()));
        }
        if !self.root {
            parts.push("not root: cgroups cannot be used".to_owned());
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// The cgroup mounts `/proc/self/mountinfo` lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CgroupMounts {
    /// v1 hierarchies: mount point and the controllers bound to it.
    pub v1: Vec<(PathBuf, Vec<String>)>,
    /// The cgroup2 mount point.
    pub v2: Option<PathBuf>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::try_from(d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'))).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the cgroup mounts in `/proc/self/mountinfo` text (the first mount of each hierarchy).
pub(crate) fn parse_mountinfo(text: &str) -> CgroupMounts {
    let mut mounts = CgroupMounts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) else { continue };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else { continue };
        let point = PathBuf::from(unescape(point));
        match *fstype {
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(point),
            "cgroup" => {
                let options = fields.get(dash + 3).copied().unwrap_or("");
                let controllers: Vec<String> = options
                    .split(',')
                    .filter(|o| {
                        matches!(
                            *o,
                            "memory"
                                | "cpuset"
                                | "devices"
                                | "cpu"
                                | "cpuacct"
                                | "pids"
                                | "freezer"
                                | "blkio"
                                | "hugetlb"
                                | "net_cls"
                                | "net_prio"
                                | "perf_event"
                                | "rdma"
                                | "misc"
                        )
                    })
                    .map(str::to_owned)
                    .collect();
                if !controllers.is_empty() && !mounts.v1.iter().any(|(_, c)| *c == controllers) {
                    mounts.v1.push((point, controllers));
                }
            }
            _ => {}
        }
    }
    mounts
}

/// Which hierarchy each controller is used from (rules in the module docs).
pub(crate) fn decide(mounts: &CgroupMounts, unified_controllers: Vec<String>, root: bool) -> CgroupSupport {
    let v1 = |name: &str| {
        mounts
            .v1
            .iter()
            .find(|(_, c)| c.iter().any(|c| c == name))
            .map(|(m, _)| Controller { version: CgroupVersion::V1, mount: m.clone() })
    };
    let v2 = |offered: bool| {
        mounts.v2.clone().filter(|_| offered).map(|mount| Controller { version: CgroupVersion::V2, mount })
    };
    let offers = |name: &str| unified_controllers.iter().any(|c| c == name);
    CgroupSupport {
        root,
        unified: mounts.v2.clone(),
        memory: v1("memory").or_else(|| v2(offers("memory"))),
        cpuset: v1("cpuset").or_else(|| v2(offers("cpuset"))),
        devices: v1("devices").or_else(|| v2(true)),
        unified_controllers,
    }
}

/// What this machine offers for isolation: hierarchies from `/proc/self/mountinfo`, the v2
/// root's controllers, and whether this process is root.
pub fn cgroup_support() -> CgroupSupport {
    let mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let controllers = mounts
        .v2
        .as_ref()
        .and_then(|m| fs::read_to_string(m.join("cgroup.controllers")).ok())
        .map(|t| t.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    decide(&mounts, controllers, tessera_host::effective_uid() == 0)
}

/// The character-device section of `/proc/devices`: (major, name).
pub(crate) fn parse_char_devices(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut in_char = false;
    for line in text.lines() {
        match line.trim() {
            "Character devices:" => in_char = true,
            "Block devices:" => in_char = false,
            entry if in_char => {
                if let Some((major, name)) = entry.split_once(char::is_whitespace)
                    && let Ok(major) = major.parse::<u32>()
                {
                    out.push((major, name.trim().to_owned()));
                }
            }
            _ => {}
        }
    }
    out
}

/// The NVIDIA majors in `/proc/devices` text, with [`NVIDIA_MAJOR`] always in, sorted.
pub(crate) fn nvidia_majors_in(proc_devices: &str) -> Vec<u32> {
    let mut majors: Vec<u32> = parse_char_devices(proc_devices)
        .into_iter()
        .filter(|(_, name)| NVIDIA_DEVICE_NAMES.contains(&name.as_str()))
        .map(|(m, _)| m)
        .chain([NVIDIA_MAJOR])
        .collect();
    majors.sort_unstable();
    majors.dedup();
    majors
}

/// The character majors of the NVIDIA driver on this machine (`nvidia-frontend`/`nvidia`,
/// `nvidia-uvm`, `nvidia-caps`, `nvidia-nvlink`, `nvidia-nvswitch`,
/// `nvidia-caps-imex-channels` in `/proc/devices`), always including 195, for
/// [`DeviceAccess::guarded_majors`].
pub fn nvidia_majors() -> Vec<u32> {
    nvidia_majors_in(&fs::read_to_string("/proc/devices").unwrap_or_default())
}

/// Linux's `dev_t` split (glibc's `major()`/`minor()`).
pub(crate) fn split_dev(dev: u64) -> DeviceNumber {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    DeviceNumber { major: major as u32, minor: minor as u32 }
}

/// The device number of the character device at `path` (its `st_rdev`; symlinks followed),
/// for [`DeviceAccess::allow`].
pub fn device_number(path: &Path) -> Result<DeviceNumber, ExecError> {
    let meta = fs::metadata(path).map_err(|e| ExecError::io("reading", path, e))?;
    if !meta.file_type().is_char_device() {
        return Err(ExecError::NotADevice { path: path.to_path_buf(), detail: format!("{:?}", meta.file_type()) });
    }
    Ok(split_dev(meta.rdev()))
}

/// The v1 `devices.allow` rules (after `a` is denied) for `access`, given the character majors
/// in `/proc/devices`.
pub(crate) fn v1_device_rules(char_majors: &[u32], access: &DeviceAccess) -> Vec<String> {
    let guarded: BTreeSet<u32> = access.guarded_majors.iter().copied().collect();
    let open: BTreeSet<u32> = char_majors.iter().copied().filter(|m| !guarded.contains(m)).collect();
    let allowed: BTreeSet<DeviceNumber> = access.allow.iter().copied().filter(|d| guarded.contains(&d.major)).collect();
    let mut rules = vec!["b *:* rwm".to_owned()];
    rules.extend(open.iter().map(|m| format!("c {m}:* rwm")));
    rules.extend(allowed.iter().map(|d| format!("c {}:{} rwm", d.major, d.minor)));
    rules
}

/// The value of `key N` in a flat keyed file (`memory.events`, `memory.oom_control`).
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

/// The pids a `cgroup.procs` file lists.
pub(crate) fn parse_pids(text: &str) -> Vec<u32> {
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// What the OOM counters said when the job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct OomReport {
    /// Processes the OOM killer killed in the job's cgroup (`oom_kill`), when the kernel says.
    pub kills: Option<u64>,
    /// v1 `memory.failcnt`: how often the limit was hit.
    pub failcnt: Option<u64>,
}

impl OomReport {
    /// Whether a rank that died of `SIGKILL` should be blamed on the OOM killer.
    pub fn blames_sigkill(&self) -> bool {
        match self.kills {
            Some(n) => n > 0,
            None => self.failcnt.is_some_and(|n| n > 0),
        }
    }
}

/// One directory of a job's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupDir {
    version: CgroupVersion,
    /// "memory", "cpuset", "devices" for v1; "unified" for v2.
    controller: &'static str,
    path: PathBuf,
}

/// A job's cgroup: the directories it has in each hierarchy, and what was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobCgroup {
    job_id: u64,
    dirs: Vec<CgroupDir>,
    memory_limit: Option<u64>,
    /// CPUs and memory nodes of the cpuset, when one was applied.
    cpus: Option<BTreeSet<u32>>,
    mems: Option<BTreeSet<u32>>,
}

fn cg_err(job_id: u64, action: impl Into<String>, path: &Path, source: io::Error) -> ExecError {
    ExecError::Cgroup { job_id, action: action.into(), path: path.to_path_buf(), source }
}

fn write_file(job_id: u64, dir: &Path, file: &str, value: &str) -> Result<(), ExecError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| cg_err(job_id, format!("writing {value:?} to"), &path, e))
}

fn read_file(job_id: u64, dir: &Path, file: &str) -> Result<String, ExecError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|e| cg_err(job_id, "reading", &path, e))
}

/// A cpuset file (`cpuset.cpus`, `cpuset.mems`) as a set; text that is not a CPU/node list is
/// an error, never an empty set.
fn read_list(job_id: u64, dir: &Path, file: &str) -> Result<BTreeSet<u32>, ExecError> {
    let text = read_file(job_id, dir, file)?;
    parse_cpulist(&text).map_err(|e| {
        cg_err(job_id, "parsing", &dir.join(file), io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    })
}

/// Writes the CPUs and memory nodes that are given to the cpuset in `dir` (`cpuset.cpus`,
/// `cpuset.mems`: the same files and format on v1 and v2), recording each one written in
/// `applied`, so that a failure half-way still says what holds.
fn write_cpuset(
    job_id: u64,
    dir: &Path,
    cpus: Option<BTreeSet<u32>>,
    mems: Option<BTreeSet<u32>>,
    applied: &mut (Option<BTreeSet<u32>>, Option<BTreeSet<u32>>),
) -> Result<(), ExecError> {
    if let Some(cpus) = cpus {
        write_file(job_id, dir, "cpuset.cpus", &format_cpulist(&cpus))?;
        applied.0 = Some(cpus);
    }
    if let Some(mems) = mems {
        write_file(job_id, dir, "cpuset.mems", &format_cpulist(&mems))?;
        applied.1 = Some(mems);
    }
    Ok(())
}

/// Creates `dir` unless it is there.
fn ensure_dir(job_id: u64, dir: &Path) -> Result<(), ExecError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(cg_err(job_id, "creating", dir, e)),
        _ => Ok(()),
    }
}

impl CgroupDir {
    fn procs(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    fn members(&self) -> Vec<u32> {
        let text = fs::read_to_string(self.procs())
            .or_else(|_| fs::read_to_string(self.path.join("tasks")))
            .unwrap_or_default();
        parse_pids(&text)
    }

    /// Kills everything in the directory until it is empty (or `deadline`); returns the pids
    /// signalled.
    fn kill_all(&self, deadline: Instant) -> Vec<u32> {
        let mut killed = BTreeSet::new();
        if self.version == CgroupVersion::V2 && self.path.join("cgroup.kill").exists() {
            let before = self.members();
            if fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
                killed.extend(before);
            }
        }
        loop {
            let pids = self.members();
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                if LinuxSyscalls.kill(pid, libc::SIGKILL).is_ok() {
                    killed.insert(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        killed.into_iter().collect()
    }

    /// `rmdir`, retried while the kernel still counts dying processes (`EBUSY`).
    fn remove(&self, job_id: u64, deadline: Instant) -> Result<(), ExecError> {
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(cg_err(job_id, "removing", &self.path, e)),
            }
        }
    }

    /// Creates the directory afresh: a leftover of the same name is emptied and removed first.
    fn create_fresh(&self, job_id: u64) -> Result<(), ExecError> {
        if self.path.exists() {
            let deadline = Instant::now() + CLEANUP_TIMEOUT;
            self.kill_all(deadline);
            self.remove(job_id, deadline)?;
        }
        fs::create_dir(&self.path).map_err(|e| cg_err(job_id, "creating", &self.path, e))
    }
}

/// What [`JobCgroup::create`] could not do: the parts asked for and missing.
#[derive(Debug, Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, part: &str, why: impl fmt::Display) {
        self.0.push(format!("{part}: {why}"));
    }
}

impl JobCgroup {
    fn dir(version: CgroupVersion, controller: &'static str, mount: &Path, iso: &Isolation) -> CgroupDir {
        CgroupDir { version, controller, path: mount.join(&iso.parent).join(&iso.name) }
    }

    /// The directories a job's cgroup has or would have here (for cleaning up after a shim that
    /// died): every v1 hierarchy of the three controllers, and the v2 one.
    pub(crate) fn locate(support: &CgroupSupport, iso: &Isolation, job_id: u64) -> JobCgroup {
        let mut dirs = Vec::new();
        for (name, c) in [("memory", &support.memory), ("cpuset", &support.cpuset), ("devices", &support.devices)] {
            if let Some(Controller { version: CgroupVersion::V1, mount }) = c {
                dirs.push(Self::dir(CgroupVersion::V1, name, mount, iso));
            }
        }
        if let Some(mount) = &support.unified {
            dirs.push(Self::dir(CgroupVersion::V2, "unified", mount, iso));
        }
        JobCgroup { job_id, dirs, memory_limit: iso.memory_limit_bytes, cpus: None, mems: None }
    }

    /// Creates the job's cgroup (rules in the module docs). Returns it with notes on what was
    /// not applied; fails with [`ExecError::IsolationUnavailable`] when `iso.required` and
    /// something asked for is missing (nothing is left behind then).
    pub(crate) fn create(
        support: &CgroupSupport,
        iso: &Isolation,
        job_id: u64,
    ) -> Result<(JobCgroup, Vec<String>), ExecError> {
        let mut cg = JobCgroup { job_id, dirs: Vec::new(), memory_limit: None, cpus: None, mems: None };
        let mut problems = Problems::default();
        if !support.root {
            problems.add("cgroups", format!("need root (this shim runs as uid {})", tessera_host::effective_uid()));
        } else {
            cg.setup(support, iso, &mut problems);
        }
        if problems.0.is_empty() {
            return Ok((cg, Vec::new()));
        }
        if iso.required {
            let _ = cg.cleanup();
            return Err(ExecError::IsolationUnavailable { job_id, missing: problems.0.join("; ") });
        }
        let notes = problems.0.into_iter().map(|p| format!("isolation not applied: {p}")).collect();
        Ok((cg, notes))
    }

    fn setup(&mut self, support: &CgroupSupport, iso: &Isolation, problems: &mut Problems) {
        let want_memory = iso.memory_limit_bytes.is_some();
        let want_cpuset = !iso.cpus.is_empty() || !iso.mems.is_empty();
        let want_devices = iso.devices.as_ref().filter(|d| !d.guarded_majors.is_empty());

        match &support.memory {
            Some(Controller { version: CgroupVersion::V1, mount }) => {
                if let Err(e) = self.memory_v1(mount, iso) {
                    problems.add("memory", e);
                }
            }
            Some(Controller { version: CgroupVersion::V2, mount }) if want_memory => {
                if let Err(e) = self.memory_v2(mount, iso) {
                    problems.add("memory", e);
                }
            }
            None if want_memory => problems.add("memory", "no memory controller (neither cgroup v1 nor v2)"),
            _ => {}
        }
        match &support.cpuset {
            Some(c) if want_cpuset => {
                let done = match c.version {
                    CgroupVersion::V1 => self.cpuset_v1(&c.mount, iso),
                    CgroupVersion::V2 => self.cpuset_v2(&c.mount, iso),
                };
                if let Err(e) = done {
                    problems.add("cpuset", e);
                }
            }
            None if want_cpuset => problems.add("cpuset", "no cpuset controller (neither cgroup v1 nor v2)"),
            _ => {}
        }
        match (&support.devices, want_devices) {
            (Some(c), Some(access)) => {
                let done = match c.version {
                    CgroupVersion::V1 => self.devices_v1(&c.mount, iso, access),
                    CgroupVersion::V2 => self.devices_v2(&c.mount, iso, access),
                };
                if let Err(e) = done {
                    problems.add("devices", e);
                }
            }
            (None, Some(_)) => problems.add("devices", "no devices controller and no cgroup2 for an eBPF filter"),
            _ => {}
        }
        // Something to track the job's processes by, even when nothing else was asked for.
        if self.dirs.is_empty()
            && let Some(mount) = &support.unified
            && let Err(e) = self.unified(mount, iso, &[])
        {
            problems.add("process tracking", e);
        }
    }

    /// Adds a fresh v1 directory for `controller`; on a later failure the caller removes it.
    fn add_v1(&mut self, controller: &'static str, mount: &Path, iso: &Isolation) -> Result<CgroupDir, ExecError> {
        ensure_dir(self.job_id, &mount.join(&iso.parent))?;
        let dir = Self::dir(CgroupVersion::V1, controller, mount, iso);
        dir.create_fresh(self.job_id)?;
        Ok(dir)
    }

    /// Runs `apply` on a new v1 directory; keeps it on success, removes it on failure (a
    /// half-configured devices cgroup must never be joined).
    fn with_v1(
        &mut self,
        controller: &'static str,
        mount: &Path,
        iso: &Isolation,
        apply: impl FnOnce(&Path) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let dir = self.add_v1(controller, mount, iso)?;
        match apply(&dir.path) {
            Ok(()) => {
                self.dirs.push(dir);
                Ok(())
            }
            Err(e) => {
                let _ = dir.remove(self.job_id, Instant::now() + CLEANUP_TIMEOUT);
                Err(e)
            }
        }
    }

    /// The v2 directory, created (with `controllers` enabled on the way down) on first use.
    fn unified(&mut self, mount: &Path, iso: &Isolation, controllers: &[&str]) -> Result<PathBuf, ExecError> {
        let job_id = self.job_id;
        let parent = mount.join(&iso.parent);
        ensure_dir(job_id, &parent)?;
        for ctrl in controllers {
            for level in [mount, parent.as_path()] {
                let current = read_file(job_id, level, "cgroup.subtree_control")?;
                if !current.split_whitespace().any(|c| c == *ctrl) {
                    write_file(job_id, level, "cgroup.subtree_control", &format!("+{ctrl}"))?;
                }
            }
        }
        if let Some(dir) = self.dirs.iter().find(|d| d.version == CgroupVersion::V2) {
            return Ok(dir.path.clone());
        }
        let dir = Self::dir(CgroupVersion::V2, "unified", mount, iso);
        dir.create_fresh(job_id)?;
        let path = dir.path.clone();
        self.dirs.push(dir);
        Ok(path)
    }

    fn memory_v1(&mut self, mount: &Path, iso: &Isolation) -> Result<(), ExecError> {
        let job_id = self.job_id;
        let limit = iso.memory_limit_bytes;
        self.with_v1("memory", mount, iso, |dir| {
            if let Some(limit) = limit {
                write_file(job_id, dir, "memory.limit_in_bytes", &limit.to_string())?;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write_file(job_id, dir, "memory.memsw.limit_in_bytes", &limit.to_string())?;
                }
            }
            Ok(())
        })?;
        self.memory_limit = limit;
        Ok(())
    }

    fn memory_v2(&mut self, mount: &Path, iso: &Isolation) -> Result<(), ExecError> {
        let dir = self.unified(mount, iso, &["memory"])?;
        if let Some(limit) = iso.memory_limit_bytes {
            write_file(self.job_id, &dir, "memory.max", &limit.to_string())?;
            if dir.join("memory.swap.max").exists() {
                write_file(self.job_id, &dir, "memory.swap.max", "0")?;
            }
            self.memory_limit = Some(limit);
        }
        Ok(())
    }

    fn cpuset_v1(&mut self, mount: &Path, iso: &Isolation) -> Result<(), ExecError> {
        let job_id = self.job_id;
        // The parent must have CPUs and nodes before a child can, and a child with none cannot
        // take processes: copy the root's down where they are empty.
        let parent = mount.join(&iso.parent);
        ensure_dir(job_id, &parent)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read_file(job_id, &parent, file)?.trim().is_empty() {
                let root = read_file(job_id, mount, file)?;
                write_file(job_id, &parent, file, root.trim())?;
            }
        }
        // A v1 cpuset needs both files set: what the job does not ask for comes from the parent.
        let (cpus, mems) = (set_or_inherit(&iso.cpus), set_or_inherit(&iso.mems));
        let mut applied = (None, None);
        self.with_v1("cpuset", mount, iso, |dir| {
            let cpus = match cpus {
                Some(cpus) => cpus,
                None => read_list(job_id, &parent, "cpuset.cpus")?,
            };
            let mems = match mems {
                Some(mems) => mems,
                None => read_list(job_id, &parent, "cpuset.mems")?,
            };
            write_cpuset(job_id, dir, Some(cpus), Some(mems), &mut applied)
        })?;
        (self.cpus, self.mems) = applied;
        Ok(())
    }

    fn cpuset_v2(&mut self, mount: &Path, iso: &Isolation) -> Result<(), ExecError> {
        let dir = self.unified(mount, iso, &["cpuset"])?;
        // v2 inherits what is not written.
        let mut applied = (None, None);
        let written =
            write_cpuset(self.job_id, &dir, set_or_inherit(&iso.cpus), set_or_inherit(&iso.mems), &mut applied);
        (self.cpus, self.mems) = applied;
        written
    }

    fn devices_v1(&mut self, mount: &Path, iso: &Isolation, access: &DeviceAccess) -> Result<(), ExecError> {
        let job_id = self.job_id;
        let proc_devices = fs::read_to_string("/proc/devices")
            .map_err(|e| cg_err(job_id, "reading", Path::new("/proc/devices"), e))?;
        let majors: Vec<u32> = parse_char_devices(&proc_devices).into_iter().map(|(m, _)| m).collect();
        let rules = v1_device_rules(&majors, access);
        self.with_v1("devices", mount, iso, |dir| {
            write_file(job_id, dir, "devices.deny", "a")?;
            // One rule per write: the kernel parses one per call.
            rules.iter().try_for_each(|rule| write_file(job_id, dir, "devices.allow", rule))
        })
    }

    fn devices_v2(&mut self, mount: &Path, iso: &Isolation, access: &DeviceAccess) -> Result<(), ExecError> {
        let job_id = self.job_id;
        let dir = self.unified(mount, iso, &[])?;
        let insns = crate::devfilter::program(access).ok_or_else(|| {
            cg_err(job_id, "building the device filter for", &dir, io::Error::other("a jump does not fit"))
        })?;
        let bytes: Vec<[u8; 8]> = insns.iter().map(|i| i.encode()).collect();
        let prog = sys::load_device_filter(&bytes).map_err(|(source, verifier_log)| ExecError::Bpf {
            job_id,
            syscall: "bpf(BPF_PROG_LOAD)",
            path: dir.clone(),
            source,
            verifier_log,
        })?;
        let cgroup = fs::File::open(&dir).map_err(|e| cg_err(job_id, "opening", &dir, e))?;
        sys::attach_device_filter(cgroup.as_fd(), prog.as_fd()).map_err(|source| ExecError::Bpf {
            job_id,
            syscall: "bpf(BPF_PROG_ATTACH)",
            path: dir.clone(),
            source,
            verifier_log: String::new(),
        })
    }

    /// The `cgroup.procs` files a rank writes its pid into.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(CgroupDir::procs).collect()
    }

    /// The cpuset's CPUs and memory nodes, when one was applied.
    pub(crate) fn cpuset(&self) -> (Option<&BTreeSet<u32>>, Option<&BTreeSet<u32>>) {
        (self.cpus.as_ref(), self.mems.as_ref())
    }

    pub(crate) fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Live processes in the job's cgroup, sorted.
    pub(crate) fn members(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.dirs.iter().flat_map(CgroupDir::members).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process still in the job's cgroup; returns the pids signalled.
    pub(crate) fn kill_all(&self) -> Vec<u32> {
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        let mut pids: Vec<u32> = self.dirs.iter().flat_map(|d| d.kill_all(deadline)).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The OOM counters (read before [`JobCgroup::cleanup`]).
    pub(crate) fn oom(&self) -> OomReport {
        let mut report = OomReport::default();
        for dir in &self.dirs {
            // Where this directory keeps its `oom_kill` count, and (v1) its limit-hit count.
            let (events, failcnt) = match (dir.version, dir.controller) {
                (CgroupVersion::V2, _) => ("memory.events", None),
                (CgroupVersion::V1, "memory") => ("memory.oom_control", Some("memory.failcnt")),
                _ => continue,
            };
            let read = |file: &str| fs::read_to_string(dir.path.join(file)).ok();
            if let Some(n) = read(events).and_then(|t| keyed_value(&t, "oom_kill")) {
                report.kills = Some(report.kills.unwrap_or(0) + n);
            }
            if let Some(file) = failcnt {
                report.failcnt = read(file).and_then(|t| t.trim().parse().ok());
            }
        }
        report
    }

    /// Kills what is left and removes every directory. Returns the pids killed; the first
    /// directory that could not be removed is the error.
    pub(crate) fn cleanup(&self) -> Result<Vec<u32>, ExecError> {
        let killed = self.kill_all();
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        let mut first_err = None;
        for dir in &self.dirs {
            if let Err(e) = dir.remove(self.job_id, deadline) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(killed),
        }
    }

    /// The directories.
    #[cfg(test)]
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }
}

fn set_or_inherit(ids: &[u32]) -> Option<BTreeSet<u32>> {
    (!ids.is_empty()).then(|| ids.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:7 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE_V2: &str = "\
25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const COMBINED_V1: &str = "\
50 31 0:40 / /sys/fs/cgroup/cpu\\040set rw - cgroup cgroup rw,cpuset,memory
";

    #[test]
    fn mountinfo_finds_each_hierarchy() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v1: Vec<(&str, Vec<&str>)> =
            m.v1.iter().map(|(p, c)| (p.to_str().unwrap(), c.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            v1,
            vec![
                ("/sys/fs/cgroup/cpu", vec!["cpu"]),
                ("/sys/fs/cgroup/cpuset", vec!["cpuset"]),
                ("/sys/fs/cgroup/memory", vec!["memory"]),
                ("/sys/fs/cgroup/devices", vec!["devices"]),
            ]
        );
        assert_eq!(parse_mountinfo(PURE_V2), CgroupMounts { v1: vec![], v2: Some("/sys/fs/cgroup".into()) });
        let m = parse_mountinfo(COMBINED_V1);
        assert_eq!(m.v1, vec![(PathBuf::from("/sys/fs/cgroup/cpu set"), vec!["cpuset".into(), "memory".into()])]);
        assert_eq!(parse_mountinfo("garbage\n\n1 2 3"), CgroupMounts::default());
        // Escapes: a space, a backslash, and an out-of-range one kept as written.
        assert_eq!(unescape(r"/a\040b\134c\777d\04"), r"/a b\c\777d\04");
    }

    #[test]
    fn each_controller_comes_from_v1_when_mounted_there_else_v2() {
        let v1 = |m: &str| Some(Controller { version: CgroupVersion::V1, mount: m.into() });
        let v2 = |m: &str| Some(Controller { version: CgroupVersion::V2, mount: m.into() });
        // Hybrid: v1 wins for each controller mounted there; the empty cgroup2 offers nothing.
        let s = decide(&parse_mountinfo(HYBRID), vec![], true);
        assert_eq!(s.memory, v1("/sys/fs/cgroup/memory"));
        assert_eq!(s.cpuset, v1("/sys/fs/cgroup/cpuset"));
        assert_eq!(s.devices, v1("/sys/fs/cgroup/devices"));
        assert_eq!(s.unified, Some("/sys/fs/cgroup/unified".into()));
        // Pure v2: what the root offers; devices always (eBPF).
        let s = decide(&parse_mountinfo(PURE_V2), vec!["cpuset".into(), "memory".into()], true);
        assert_eq!(
            (s.memory, s.cpuset, s.devices.clone()),
            (v2("/sys/fs/cgroup"), v2("/sys/fs/cgroup"), v2("/sys/fs/cgroup"))
        );
        let s = decide(&parse_mountinfo(PURE_V2), vec!["memory".into()], false);
        assert_eq!(s.cpuset, None);
        assert!(s.to_string().contains("cpuset: none") && s.to_string().contains("not root"), "{s}");
        // Nothing mounted.
        let s = decide(&CgroupMounts::default(), vec![], true);
        assert_eq!((s.memory, s.cpuset, s.devices), (None, None, None));
        let s = decide(&parse_mountinfo(HYBRID), vec![], true);
        assert_eq!(
            s.to_string(),
            "memory: v1 at /sys/fs/cgroup/memory; cpuset: v1 at /sys/fs/cgroup/cpuset; devices: v1 at \
             /sys/fs/cgroup/devices; cgroup2 at /sys/fs/cgroup/unified (controllers: none)"
        );
    }

    const PROC_DEVICES: &str = "Character devices:
  1 mem
  5 /dev/tty
136 pts
195 nvidia-frontend
195 nvidia
234 nvidia-nvswitch
235 nvidia-caps-imex-channels
236 nvidia-caps
237 nvidia-uvm
240 nvidia-nvlink
241 nvidiafoo

Block devices:
  7 loop
195 notachar
";

    #[test]
    fn nvidia_majors_from_proc_devices() {
        assert_eq!(nvidia_majors_in(PROC_DEVICES), vec![195, 234, 235, 236, 237, 240]);
        assert_eq!(nvidia_majors_in("Character devices:\n  1 mem\n"), vec![195]);
        assert_eq!(nvidia_majors_in(""), vec![195]);
        let chars = parse_char_devices(PROC_DEVICES);
        assert_eq!(chars.first(), Some(&(1, "mem".to_owned())));
        assert!(!chars.iter().any(|(_, n)| n == "loop"));
    }

    #[test]
    fn dev_t_splits_like_glibc() {
        let cases = [
            (0x0000_0000_0000_0103, 1, 3),        // /dev/null
            (0x0000_0000_0000_c307, 195, 7),      // /dev/nvidia7
            (0x0000_0000_0000_c3ff, 195, 255),    // /dev/nvidiactl
            (0x0000_0000_0ed0_ed00, 237, 0xed00), // a minor above 255
            ((0x1000u64 << 32) | (0x5 << 8) | 0x9, 0x1005, 9),
        ];
        for (dev, major, minor) in cases {
            assert_eq!(split_dev(dev), DeviceNumber { major, minor }, "{dev:#x}");
        }
        assert_eq!(device_number(Path::new("/dev/null")).unwrap(), DeviceNumber { major: 1, minor: 3 });
        assert!(matches!(device_number(Path::new("/")), Err(ExecError::NotADevice { .. })));
        assert!(matches!(device_number(Path::new("/nonexistent/dev")), Err(ExecError::Io { .. })));
    }

    #[test]
    fn v1_rules_allow_everything_but_the_guarded_majors() {
        let access = DeviceAccess {
            guarded_majors: vec![195, 237],
            allow: vec![
                DeviceNumber { major: 195, minor: 255 },
                DeviceNumber { major: 195, minor: 7 },
                DeviceNumber { major: 1, minor: 3 },
            ],
        };
        assert_eq!(
            v1_device_rules(&[1, 5, 136, 195, 237, 5], &access),
            vec!["b *:* rwm", "c 1:* rwm", "c 5:* rwm", "c 136:* rwm", "c 195:7 rwm", "c 195:255 rwm"]
        );
    }

    #[test]
    fn counters_and_pids_parse() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(2));
        assert_eq!(keyed_value(events, "oom"), Some(3));
        assert_eq!(keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
        assert_eq!(parse_pids("12\n345\n\n"), vec![12, 345]);
        let r = OomReport { kills: Some(0), failcnt: Some(5) };
        assert!(!r.blames_sigkill(), "oom_kill is authoritative when present");
        assert!(OomReport { kills: None, failcnt: Some(5) }.blames_sigkill());
        assert!(OomReport { kills: Some(1), failcnt: None }.blames_sigkill());
        assert!(!OomReport::default().blames_sigkill());
    }

    #[test]
    fn not_root_or_nothing_mounted_is_a_note_or_a_refusal() {
        let iso = Isolation {
            parent: "tessera-test".into(),
            name: "job-1-run-1".into(),
            memory_limit_bytes: Some(1 << 20),
            cpus: vec![0],
            mems: vec![],
            devices: Some(DeviceAccess { guarded_majors: vec![195], allow: vec![] }),
            required: false,
        };
        let nothing = CgroupSupport { root: true, ..Default::default() };
        let (cg, notes) = JobCgroup::create(&nothing, &iso, 1).unwrap();
        assert!(cg.procs_files().is_empty());
        assert_eq!(
            notes,
            vec![
                "isolation not applied: memory: no memory controller (neither cgroup v1 nor v2)",
                "isolation not applied: cpuset: no cpuset controller (neither cgroup v1 nor v2)",
                "isolation not applied: devices: no devices controller and no cgroup2 for an eBPF filter",
            ]
        );
        let err = JobCgroup::create(&nothing, &Isolation { required: true, ..iso.clone() }, 1).unwrap_err();
        assert!(
            matches!(&err, ExecError::IsolationUnavailable { job_id: 1, missing } if missing.contains("memory")),
            "{err}"
        );
        let not_root = CgroupSupport { root: false, ..cgroup_support() };
        let err = JobCgroup::create(&not_root, &Isolation { required: true, ..iso }, 2).unwrap_err().to_string();
        assert!(err.contains("need root"), "{err}");
    }

    /// A v1 cpuset inherits what the job does not ask for from its parent; a parent whose list
    /// does not parse is an error naming the file, not an empty cpuset. (A plain directory
    /// stands in for the hierarchy: only files are read and written.)
    #[test]
    fn a_v1_cpuset_inherits_the_parent_lists_and_refuses_garbage() {
        let mount = tempfile::tempdir().unwrap();
        let parent = mount.path().join("tessera-test");
        fs::create_dir(&parent).unwrap();
        fs::write(parent.join("cpuset.cpus"), "0-3\n").unwrap();
        fs::write(parent.join("cpuset.mems"), "0\n").unwrap();
        let v1 = Controller { version: CgroupVersion::V1, mount: mount.path().to_path_buf() };
        let support = CgroupSupport { root: true, cpuset: Some(v1), ..Default::default() };
        let iso = Isolation {
            parent: "tessera-test".into(),
            name: "job-1-run-1".into(),
            memory_limit_bytes: None,
            cpus: vec![],
            mems: vec![0],
            devices: None,
            required: true,
        };
        let (cg, notes) = JobCgroup::create(&support, &iso, 1).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(cg.cpuset(), (Some(&BTreeSet::from([0, 1, 2, 3])), Some(&BTreeSet::from([0]))));
        let child = parent.join("job-1-run-1");
        assert_eq!(fs::read_to_string(child.join("cpuset.cpus")).unwrap(), "0-3");
        assert_eq!(fs::read_to_string(child.join("cpuset.mems")).unwrap(), "0");

        fs::write(parent.join("cpuset.cpus"), "0-3,junk\n").unwrap();
        let iso = Isolation { name: "job-2-run-1".into(), ..iso };
        let err = JobCgroup::create(&support, &iso, 2).unwrap_err().to_string();
        assert!(err.contains("parsing") && err.contains("cpuset.cpus") && err.contains("junk"), "{err}");
        assert!(!parent.join("job-2-run-1").exists(), "a half-made cpuset is removed");
    }

    #[test]
    fn oom_counters_come_from_each_version_s_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |version, controller, name: &str, files: &[(&str, &str)]| {
            let path = tmp.path().join(name);
            fs::create_dir(&path).unwrap();
            for (file, text) in files {
                fs::write(path.join(file), text).unwrap();
            }
            CgroupDir { version, controller, path }
        };
        let cg = |dirs| JobCgroup { job_id: 1, dirs, memory_limit: None, cpus: None, mems: None };
        let v2 = dir(CgroupVersion::V2, "unified", "v2", &[("memory.events", "oom 2\noom_kill 2\n")]);
        let v1 = dir(
            CgroupVersion::V1,
            "memory",
            "v1",
            &[("memory.oom_control", "oom_kill_disable 0\noom_kill 1\n"), ("memory.failcnt", "7\n")],
        );
        let cpuset = dir(CgroupVersion::V1, "cpuset", "cpuset", &[("memory.oom_control", "oom_kill 9\n")]);
        assert_eq!(cg(vec![v2.clone()]).oom(), OomReport { kills: Some(2), failcnt: None });
        assert_eq!(cg(vec![v1.clone(), cpuset.clone()]).oom(), OomReport { kills: Some(1), failcnt: Some(7) });
        assert_eq!(cg(vec![v1, v2, cpuset]).oom(), OomReport { kills: Some(3), failcnt: Some(7) });
        let empty = dir(CgroupVersion::V2, "unified", "empty", &[]);
        assert_eq!(cg(vec![empty]).oom(), OomReport::default());
    }

    /// The v2 eBPF device filter on whatever cgroup2 hierarchy is writable here (on a hybrid
    /// machine the empty one at `/sys/fs/cgroup/unified`, which the shim itself would not use
    /// for devices there): the allowed node opens as far as its missing driver (`ENXIO`), the
    /// other guarded one is refused (`EPERM`), an unguarded device opens.
    #[test]
    fn the_v2_device_filter_allows_only_the_listed_guarded_nodes() {
        let skip = |why: &str| eprintln!("skipped the_v2_device_filter_allows_only_the_listed_guarded_nodes: {why}");
        if tessera_host::effective_uid() != 0 {
            return skip("needs root");
        }
        let Some(unified) = cgroup_support().unified else { return skip("no cgroup2 hierarchy") };
        let parent = unified.join("tessera-test");
        if !parent.is_dir() && fs::create_dir(&parent).is_err() {
            return skip(&format!("{} is not writable", unified.display()));
        }
        let tmp = tempfile::tempdir().unwrap();
        let (allowed, denied) = (tmp.path().join("nvidia7"), tmp.path().join("nvidia8"));
        for (node, minor) in [(&allowed, "7"), (&denied, "8")] {
            let made = std::process::Command::new("mknod").arg(node).args(["c", "195", minor]).status();
            if !made.is_ok_and(|s| s.success()) {
                return skip("mknod failed");
            }
        }
        let v2 = Controller { version: CgroupVersion::V2, mount: unified.clone() };
        let support = CgroupSupport { root: true, unified: Some(unified), devices: Some(v2), ..Default::default() };
        let access = DeviceAccess { guarded_majors: vec![NVIDIA_MAJOR], allow: vec![device_number(&allowed).unwrap()] };
        let iso = Isolation {
            parent: "tessera-test".into(),
            name: format!("unit-bpf-{}", std::process::id()),
            memory_limit_bytes: None,
            cpus: vec![],
            mems: vec![],
            devices: Some(access),
            required: true,
        };
        let (cg, notes) = JobCgroup::create(&support, &iso, 1).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(cg.paths(), vec![parent.join(&iso.name)]);
        let procs = cg.procs_files()[0].display().to_string();
        let probe = format!(
            "import errno, os\nfor p in [{:?}, {:?}, '/dev/null']:\n    try:\n        os.close(os.open(p, os.O_RDWR))\n        print('ok')\n    except OSError as e:\n        print(errno.errorcode[e.errno])\n",
            allowed.display().to_string(),
            denied.display().to_string()
        );
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("echo $$ > {procs} && exec python3 -c \"$0\"",))
            .arg(&probe)
            .output()
            .unwrap();
        let cleaned = cg.cleanup();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ENXIO\nEPERM\nok\n", "{out:?}");
        cleaned.unwrap();
        assert!(!parent.join(&iso.name).exists());
    }
}
