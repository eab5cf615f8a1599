//! The host machine, in one place for every shell crate: the wall clock ([`clock`]), the
//! kernel's cpulist format ([`cpulist`]), users and groups as NSS knows them ([`users`]),
//! host NUMA memory and memory sizes ([`memory`]), files written so no reader sees half of one
//! ([`files`]), and writes to a peer that may be gone without dying of `SIGPIPE` ([`signals`]).
//!
//! Each is a policy that used to exist twice (and the copies disagreed): the shell crates
//! (`tessera-gpu`, `tessera-exec`, `tessera-store`, `tessera-daemon`, the binary) use these and
//! nothing else. The pure crates (`tessera-mig`, `tessera-sched`) never read the clock or the
//! host: they take time and facts as arguments.
//!
//! `users` and `signals` are the modules with `unsafe`: the `getpwuid_r`, `getpwnam_r` and
//! `getgrouplist` calls of the C library (which go through NSS, so LDAP and SSSD users resolve as
//! they do for `id`), and the thread's signal mask.

pub mod clock;
pub mod cpulist;
pub mod files;
pub mod hostname;
pub mod memory;
pub mod signals;
pub mod text;
pub mod users;

pub use clock::now_ms;
pub use cpulist::{CpuListError, MAX_ID, format_cpulist, parse_cpulist};
pub use hostname::hostname;
pub use memory::{SizeError, format_mib, parse_size_mib};
pub use users::{User, UserError, effective_gid, effective_uid, user_by_name, user_by_uid};
