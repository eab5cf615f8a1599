//! Everything a submission must satisfy before it is queued: a valid request for a tenant the
//! caller may charge, a priority within the ceiling (admins excepted), processes `execve` and
//! `chdir` would accept as the user (names, NUL bytes, sizes, an existing working directory
//! and program the user may reach), and a node that could ever run it
//! (`tessera_sched::admit`). A request refused here gets a 4xx naming the field; nothing that
//! is accepted fails at start for a reason known now.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tessera_sched::JobRequest;
use tessera_store::{NewJob, ProcessWork, Work};

use super::{Caller, Engine, EngineError};
use crate::wire::{SubmitReply, SubmitRequest};

/// `execve` refuses any one argument or environment string longer than this (with its NUL).
pub const MAX_ARG_STRLEN: usize = 131_072;
/// Searched when the job's environment has no `PATH` (what the supervisor uses then).
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Who a job runs as, for permission checks.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// Whether this identity has `bit` (4 read, 2 write, 1 execute/search) on a file, by its
    /// mode bits (root has every bit but execute on files without any execute bit).
    fn may(&self, meta: &std::fs::Metadata, bit: u32) -> bool {
        let mode = meta.mode();
        if self.uid == 0 {
            return bit != 1 || meta.is_dir() || mode & 0o111 != 0;
        }
        let shift = if meta.uid() == self.uid {
            6
        } else if self.groups.contains(&meta.gid()) {
            3
        } else {
            0
        };
        (mode >> shift) & bit != 0
    }
}

/// Every directory from `/` down to `dir` must be searchable by `who`.
fn searchable(dir: &Path, who: &Identity) -> Result<(), String> {
    let mut at = PathBuf::from("/");
    for part in dir.components().skip(1) {
        let meta = std::fs::metadata(&at).map_err(|e| format!("{}: {e}", at.display()))?;
        if !who.may(&meta, 1) {
            return Err(format!("{} is not searchable by uid {}", at.display(), who.uid));
        }
        at.push(part);
    }
    Ok(())
}

/// The working directory as `chdir` would take it, as the user.
pub fn check_cwd(cwd: &str, who: &Identity) -> Result<(), String> {
    if !cwd.starts_with('/') {
        return Err(format!("'{cwd}' must be an absolute path"));
    }
    if cwd.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if cwd.len() >= 4096 {
        return Err(format!("is {} bytes; paths are at most 4095", cwd.len()));
    }
    let path = Path::new(cwd);
    let meta = std::fs::metadata(path).map_err(|e| format!("{cwd}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{cwd} is not a directory"));
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("{cwd}: {e}"))?;
    searchable(&real, who)?;
    if !who.may(&meta, 1) {
        return Err(format!("{cwd} is not searchable by uid {}", who.uid));
    }
    Ok(())
}

/// The program `argv[0]` names, as `execve` would find it for the user: a path (relative to
/// the working directory), or a name searched in the job's `PATH`.
pub fn find_program(argv0: &str, env_path: Option<&str>, cwd: &str, who: &Identity) -> Result<PathBuf, String> {
    let runnable = |p: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", p.display()));
        }
        let real = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if let Some(parent) = real.parent() {
            searchable(parent, who)?;
            let pm = std::fs::metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            if !who.may(&pm, 1) {
                return Err(format!("{} is not searchable by uid {}", parent.display(), who.uid));
            }
        }
        if !who.may(&meta, 1) {
            return Err(format!("{} is not executable by uid {}", p.display(), who.uid));
        }
        Ok(())
    };
    if argv0.contains('/') {
        let p = if argv0.starts_with('/') { PathBuf::from(argv0) } else { Path::new(cwd).join(argv0) };
        runnable(&p)?;
        return Ok(p);
    }
    let path = env_path.unwrap_or(DEFAULT_PATH);
    let mut why = Vec::new();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(argv0);
        if !p.exists() {
            continue;
        }
        match runnable(&p) {
            Ok(()) => return Ok(p),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        Err(format!("'{argv0}' is not in the job's PATH ({path})"))
    } else {
        Err(format!("'{argv0}' cannot be run: {}", why.join("; ")))
    }
}

/// The processes' command line and environment as `execve` takes them.
pub fn check_exec(p: &ProcessWork, max_bytes: usize) -> Result<(), EngineError> {
    if p.command.is_empty() || p.command[0].is_empty() {
        return Err(EngineError::invalid("command", "is empty"));
    }
    let mut total = 0usize;
    for (i, a) in p.command.iter().enumerate() {
        if a.contains('\0') {
            return Err(EngineError::invalid(format!("command[{i}]"), "contains a NUL byte"));
        }
        if a.len() + 1 > MAX_ARG_STRLEN {
            return Err(EngineError::invalid(
                format!("command[{i}]"),
                format!("is {} bytes; execve takes at most {} per argument", a.len(), MAX_ARG_STRLEN - 1),
            ));
        }
        total += a.len() + 1;
    }
    for (k, v) in &p.env {
        if k.is_empty() {
            return Err(EngineError::invalid("env", "has an empty variable name"));
        }
        if k.contains('=') {
            return Err(EngineError::invalid(format!("env.{k}"), "a variable name cannot contain '='"));
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(EngineError::invalid(format!("env.{}", k.replace('\0', "\\0")), "contains a NUL byte"));
        }
        let len = k.len() + v.len() + 2;
        if len > MAX_ARG_STRLEN {
            return Err(EngineError::invalid(
                format!("env.{k}"),
                format!("is {} bytes; execve takes at most {} per variable", len - 1, MAX_ARG_STRLEN - 1),
            ));
        }
        total += len;
    }
    if total > max_bytes {
        return Err(EngineError::invalid(
            "env",
            format!("the command and environment are {total} bytes; at most {max_bytes} (jobs.max_exec_bytes)"),
        ));
    }
    Ok(())
}

/// The longest `PATH` searched for a job's program: each entry is a file-system lookup.
pub const MAX_PATH_ENTRIES: usize = 256;

/// A submission's processes as the API gives them: the request and the work.
pub fn process_work(body: SubmitRequest) -> Result<(JobRequest, Work), EngineError> {
    let preempt_signal = match &body.preempt_signal {
        Some(s) => Some(crate::signals::parse_signal(s).map_err(|e| EngineError::invalid("preempt_signal", e))?),
        None => None,
    };
    let work = Work::Process(ProcessWork {
        command: body.command,
        env: body.env.into_iter().collect(),
        cwd: body.cwd,
        preempt_signal,
    });
    Ok((body.resources, work))
}

/// What checking a submission's work found ([`check_work`]); only that function makes one.
#[derive(Debug)]
pub struct WorkCheck(Result<(), EngineError>);

/// The checks of a submission's work that touch the file system: the command line and
/// environment as `execve` takes them, the working directory and the program as the user
/// reaches them. They name paths the user chose (a hung mount, a long `PATH`), so the daemon
/// runs them without holding the engine; the result is reported in its place among the other
/// checks ([`Engine::submit_checked`]).
pub fn check_work(work: &Work, caller: &Caller, max_exec_bytes: usize) -> WorkCheck {
    WorkCheck(match work {
        Work::Process(p) => check_processes(p, caller, max_exec_bytes),
        Work::External(ext) if ext.door.is_empty() || ext.key.is_empty() => {
            Err(EngineError::invalid("work.external", "needs a door and a key"))
        }
        Work::External(_) => Ok(()),
    })
}

fn check_processes(p: &ProcessWork, caller: &Caller, max_exec_bytes: usize) -> Result<(), EngineError> {
    check_exec(p, max_exec_bytes)?;
    let who = Identity {
        uid: caller.uid,
        groups: tessera_host::user_by_uid(caller.uid).ok().flatten().map_or_else(|| vec![caller.gid], |u| u.groups),
    };
    check_cwd(&p.cwd, &who).map_err(|e| EngineError::invalid("cwd", e))?;
    let path = p.env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    if let Some(path) = path
        && path.split(':').filter(|d| !d.is_empty()).count() > MAX_PATH_ENTRIES
    {
        return Err(EngineError::invalid(
            "env.PATH",
            format!("has more than {MAX_PATH_ENTRIES} directories; the program is looked up in at most that many"),
        ));
    }
    find_program(&p.command[0], path, &p.cwd, &who).map_err(|e| EngineError::invalid("command[0]", e))?;
    Ok(())
}

impl Engine {
    /// `POST /v1/jobs`: processes for the caller (checked here, under the engine).
    pub(crate) fn submit(&mut self, caller: &Caller, body: SubmitRequest) -> Result<SubmitReply, EngineError> {
        let (request, work) = process_work(body)?;
        self.submit_work(caller, request, work)
    }

    /// Any front door's submission: checked, then queued.
    pub(crate) fn submit_work(
        &mut self,
        caller: &Caller,
        request: JobRequest,
        work: Work,
    ) -> Result<SubmitReply, EngineError> {
        let checked = check_work(&work, caller, self.config.jobs.max_exec_bytes);
        self.submit_checked(caller, request, work, checked)
    }

    /// A submission whose work was checked ([`check_work`]): the checks that need the node and
    /// the configuration, then the job is queued. Errors come in one order, whoever checked.
    pub fn submit_checked(
        &mut self,
        caller: &Caller,
        request: JobRequest,
        work: Work,
        checked: WorkCheck,
    ) -> Result<SubmitReply, EngineError> {
        let (request, work) = self.admitted(caller, request, work, checked)?;
        let job = NewJob {
            user_uid: caller.uid,
            user_name: caller.user.clone(),
            request,
            work,
            submitted_ms: tessera_host::now_ms(),
        };
        let id = self.store.insert_job(&job)?;
        Ok(SubmitReply { id })
    }

    /// Every check of [`Engine::submit_checked`], queueing nothing: the request as it would be
    /// queued (its tenant filled in), or the refusal a submission would get. A dry run
    /// (`submit --dry-run`) stops here.
    pub(crate) fn admitted(
        &mut self,
        caller: &Caller,
        mut request: JobRequest,
        work: Work,
        checked: WorkCheck,
    ) -> Result<(JobRequest, Work), EngineError> {
        // A tenant that is not configured is refused first, naming those that are, whoever asks.
        let configured = self.config.tenant_names();
        if !request.tenant.is_empty() && !configured.contains(&request.tenant.as_str()) {
            return Err(EngineError::invalid(
                "tenant",
                format!("no tenant '{}' is configured (tenants: {})", request.tenant, configured.join(", ")),
            ));
        }
        if request.tenant.is_empty() || (request.tenant == "default" && caller.tenant != "default") {
            request.tenant = caller.tenant.clone();
        } else if request.tenant != caller.tenant && !caller.admin {
            return Err(EngineError::Forbidden(format!(
                "user {} belongs to tenant '{}', not '{}'",
                caller.user, caller.tenant, request.tenant
            )));
        }
        if request.priority > self.config.jobs.max_priority && !caller.admin {
            return Err(EngineError::Forbidden(format!(
                "priority {} is above {}, the highest a non-admin may ask for (jobs.max_priority)",
                request.priority, self.config.jobs.max_priority
            )));
        }
        request.validate().map_err(|e| {
            // The field leads the message once: `resources.ranks: must be at least 1`.
            let message = match &e {
                tessera_sched::RequestError::Invalid { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            EngineError::invalid(format!("resources.{}", e.field()), message)
        })?;
        checked.0?;
        if let Work::External(_) = &work {
            // Another system runs it: Tessera cannot stop and restart it elsewhere.
            request.requeue = false;
        }
        if !request.pin.is_empty() && !matches!(work, Work::External(_)) {
            return Err(EngineError::invalid(
                "resources.pin",
                "only a front door's external work may pin instances (the kubelet's pods); ask by profile or size",
            ));
        }
        let mut capacity = self.facts.capacity(&self.mig_modes());
        if !request.pin.is_empty() {
            // A pin names instances as they are now: measured against the node as it is, with
            // the jobs that hold instances (`admit` names the holder of a pinned one).
            let live = tessera_gpu::view::node_view_partial(self.backend())
                .map_err(|e| EngineError::Internal(format!("reading the GPUs: {e}")))?;
            let running = self.running_jobs()?;
            capacity = self.cluster_view(&live, &running);
        } else if !self.config.scheduler.repartition {
            // Without repartitioning only the instances there are count.
            let read;
            let live = match &self.seen {
                Some(v) => Some(v),
                None => {
                    read = tessera_gpu::view::node_view_partial(self.backend()).ok();
                    read.as_ref()
                }
            };
            if let Some(live) = live {
                for g in capacity.gpus.iter_mut().filter(|g| g.mig) {
                    if let Some(v) = live.gpus.iter().find(|v| v.device.index == g.gpu) {
                        g.instances =
                            v.instances.iter().map(|i| tessera_sched::InstanceView::idle(i.instance)).collect();
                    }
                }
            }
        }
        tessera_sched::admit(&request, &capacity, self.scheduler.config())
            .map_err(|e| EngineError::cannot_run(format!("resources.{}", e.field), e.detail))?;
        Ok((request, work))
    }

    /// The MIG mode the driver reports on each GPU (as the last round saw it, unless something
    /// changed a GPU since; a GPU that did not answer then counts as MIG on, as when it fails
    /// to answer now). Whether MIG is in force is [`super::view::GpuFact::mig_in_force`]'s.
    pub(crate) fn mig_modes(&self) -> std::collections::BTreeMap<u32, bool> {
        self.facts
            .gpus
            .iter()
            .map(|g| {
                let current = match &self.seen {
                    Some(seen) => seen.gpus.iter().find(|v| v.device.index == g.index).is_none_or(|v| v.mig.current),
                    None => self.backend().mig_mode(g.index).map_or(true, |m| m.current),
                };
                (g.index, current)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(command: &[&str], env: &[(&str, &str)]) -> ProcessWork {
        ProcessWork {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cwd: "/".into(),
            preempt_signal: None,
        }
    }

    #[test]
    fn exec_checks_name_the_field() {
        let big = "x".repeat(MAX_ARG_STRLEN);
        let cases: Vec<(ProcessWork, &str)> = vec![
            (work(&[], &[]), "command: is empty"),
            (work(&["a\0b"], &[]), "command[0]: contains a NUL byte"),
            (work(&["true", &big], &[]), "command[1]: is 131072 bytes"),
            (work(&["true"], &[("", "x")]), "env: has an empty variable name"),
            (work(&["true"], &[("A=B", "x")]), "env.A=B: a variable name cannot contain '='"),
            (work(&["true"], &[("A\0", "x")]), "env.A\\0: contains a NUL byte"),
            (work(&["true"], &[("A", "x\0")]), "env.A: contains a NUL byte"),
            (work(&["true"], &[("A", &big)]), "env.A: is 131074 bytes"),
        ];
        for (w, want) in cases {
            let e = check_exec(&w, 1 << 20).unwrap_err().to_string();
            assert!(e.starts_with(want), "{want}: {e}");
        }
        let many: Vec<(String, String)> = (0..20).map(|i| (format!("V{i}"), "y".repeat(100_000))).collect();
        let w = ProcessWork { env: many, ..work(&["true"], &[]) };
        assert!(check_exec(&w, 1 << 20).unwrap_err().to_string().contains("jobs.max_exec_bytes"));
        assert!(check_exec(&work(&["true"], &[("PATH", "/bin")]), 1 << 20).is_ok());
    }

    #[test]
    fn cwd_and_program_as_the_user() {
        let root = Identity { uid: 0, groups: vec![0] };
        let nobody = Identity { uid: 65534, groups: vec![65534] };
        assert!(check_cwd("/", &root).is_ok());
        assert!(check_cwd("relative", &root).unwrap_err().contains("absolute"));
        assert!(check_cwd("/definitely/not/here", &root).unwrap_err().contains("No such file"));
        assert!(check_cwd("/etc/passwd", &root).unwrap_err().contains("not a directory"));
        let dir = std::env::temp_dir().join(format!("tessera-adm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("inner")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let inner = dir.join("inner").display().to_string();
        if tessera_host::effective_uid() == 0 {
            let e = check_cwd(&inner, &nobody).unwrap_err();
            assert!(e.contains("not searchable by uid 65534"), "{e}");
        }
        assert!(find_program("sh", Some("/usr/bin:/bin"), "/", &nobody).is_ok());
        assert!(
            find_program("no-such-program-x", Some("/bin"), "/", &nobody)
                .unwrap_err()
                .contains("not in the job's PATH")
        );
        assert!(find_program("/etc/passwd", None, "/", &nobody).unwrap_err().contains("not executable"));
        assert!(find_program("./x", None, "/nonexistent", &nobody).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
