#![allow(unsafe_code)]
//! Users and groups as the system's name service knows them: `getpwuid_r`, `getpwnam_r` and
//! `getgrouplist` from the C library, which consult NSS (`/etc/nsswitch.conf`), so an LDAP or
//! SSSD user gets their own primary group and supplementary groups exactly as `id` shows them.
//! Nothing here reads `/etc/passwd` itself.
//!
//! Every caller that needs "who is uid N" (the daemon naming a socket peer, the token's user,
//! the supervisor switching to the job's user, MPS control daemons run as the user) asks here.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use libc::c_int;

/// A user as NSS describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
    /// Every group the user is in, primary first (what `initgroups` would set).
    pub groups: Vec<u32>,
}

/// A name-service lookup that failed (not "no such user": that is `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("looking up user {key}: {detail}")]
    Lookup { key: String, detail: String },
    #[error("user name {0:?} contains a NUL byte")]
    BadName(String),
    /// The user's supplementary groups could not be read (the user is then not remembered).
    #[error("reading the groups of user '{user}': {detail}")]
    Groups { user: String, detail: String },
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective gid of this process.
pub fn effective_gid() -> u32 {
    // SAFETY: getegid takes no arguments and cannot fail.
    unsafe { libc::getegid() }
}

/// What `getpw*_r` filled in, copied out of its buffer.
struct Entry {
    uid: u32,
    gid: u32,
    name: CString,
    home: PathBuf,
}

/// Calls a `getpw*_r` function with a buffer that grows on `ERANGE`.
fn lookup(
    key: &str,
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> c_int,
) -> Result<Option<Entry>, UserError> {
    let mut buf_len = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; buf_len];
        let mut pwd = MaybeUninit::<libc::passwd>::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(pwd.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && buf_len < (1 << 20) {
            buf_len *= 4;
            continue;
        }
        if rc != 0 {
            // ENOENT, ESRCH, EBADF and EPERM mean "not found" for some NSS modules.
            if matches!(rc, libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM) {
                return Ok(None);
            }
            return Err(UserError::Lookup {
                key: key.to_owned(),
                detail: std::io::Error::from_raw_os_error(rc).to_string(),
            });
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: the call succeeded and `result` points at `pwd`, which it filled.
        let pwd = unsafe { pwd.assume_init() };
        if pwd.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: pw_name is a NUL-terminated string inside `buf`, which is still alive.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_owned();
        let home = if pwd.pw_dir.is_null() {
            PathBuf::from("/")
        } else {
            // SAFETY: pw_dir is a NUL-terminated string inside `buf`, which is still alive.
            let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
            PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()))
        };
        return Ok(Some(Entry { uid: pwd.pw_uid, gid: pwd.pw_gid, name, home }));
    }
}

/// How many times `getgrouplist` is asked with a bigger buffer before giving up.
const GROUPLIST_TRIES: u32 = 10;

/// The groups of user `name` with primary group `gid` (`getgrouplist`), primary first.
fn groups_of(name: &CStr, gid: u32) -> Result<Vec<u32>, UserError> {
    groups_with(name, gid, |name, gid, groups, n| {
        // SAFETY: `name` is NUL-terminated; `groups` has room for `*n` entries and getgrouplist
        // writes at most that many, updating `*n` (to the number needed when it returns -1).
        unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), n) }
    })
}

/// [`groups_of`] over any `getgrouplist`-shaped call. A call that still wants more room after
/// [`GROUPLIST_TRIES`] tries is an error: dropping the supplementary groups would run the job
/// with fewer groups than `id` shows (and the user would be remembered that way).
fn groups_with(
    name: &CStr,
    gid: u32,
    mut call: impl FnMut(&CStr, libc::gid_t, &mut [libc::gid_t], &mut c_int) -> c_int,
) -> Result<Vec<u32>, UserError> {
    let mut count: c_int = 32;
    for _ in 0..GROUPLIST_TRIES {
        let mut groups = vec![0 as libc::gid_t; usize::try_from(count.max(1)).unwrap_or(1)];
        let mut n = c_int::try_from(groups.len()).unwrap_or(c_int::MAX);
        let rc = call(name, gid, &mut groups, &mut n);
        if rc >= 0 {
            groups.truncate(usize::try_from(n.max(0)).unwrap_or(0).min(groups.len()));
            groups.retain(|g| *g != gid);
            groups.insert(0, gid);
            let mut seen = std::collections::BTreeSet::new();
            groups.retain(|g| seen.insert(*g));
            return Ok(groups);
        }
        count = n.max(count.saturating_mul(2));
    }
    Err(UserError::Groups {
        user: name.to_string_lossy().into_owned(),
        detail: format!(
            "getgrouplist still wanted more room after {GROUPLIST_TRIES} tries (last asked for {count} groups)"
        ),
    })
}

fn complete(e: Entry) -> Result<User, UserError> {
    let groups = groups_of(&e.name, e.gid)?;
    Ok(User { uid: e.uid, gid: e.gid, name: e.name.to_string_lossy().into_owned(), home: e.home, groups })
}

/// How long a user found by uid is remembered: the daemon asks for every request, and
/// `getgrouplist` reads the whole group database each time. A change to a user's groups
/// shows within this long (SSSD and nscd cache far longer).
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(5);
/// At most this many users are remembered.
const REMEMBER_MOST: usize = 1024;

type Remembered = std::collections::HashMap<u32, (std::time::Instant, User)>;

fn remembered() -> &'static std::sync::Mutex<Remembered> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Remembered>> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The user with this uid, `None` if NSS knows no such user. A user found is remembered for a
/// few seconds; one not found is asked for again each time.
pub fn user_by_uid(uid: u32) -> Result<Option<User>, UserError> {
    let now = std::time::Instant::now();
    {
        let cache = remembered().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, user)) = cache.get(&uid)
            && now.duration_since(*at) < REMEMBER
        {
            return Ok(Some(user.clone()));
        }
    }
    let found = user_by_uid_now(uid)?;
    if let Some(user) = &found {
        let mut cache = remembered().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= REMEMBER_MOST {
            cache.retain(|_, (at, _)| now.duration_since(*at) < REMEMBER);
            if cache.len() >= REMEMBER_MOST {
                cache.clear();
            }
        }
        cache.insert(uid, (now, user.clone()));
    }
    Ok(found)
}

/// [`user_by_uid`] without remembering: what NSS says now.
fn user_by_uid_now(uid: u32) -> Result<Option<User>, UserError> {
    let key = format!("uid {uid}");
    let entry = lookup(&key, |pwd, buf, len, result| {
        // SAFETY: every pointer refers to live, writable memory of the stated size (see
        // `lookup`); on success `result` points at `pwd`, whose strings point into `buf`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })?;
    entry.map(complete).transpose()
}

/// The user with this name, `None` if NSS knows no such user.
pub fn user_by_name(name: &str) -> Result<Option<User>, UserError> {
    let c_name = CString::new(name).map_err(|_| UserError::BadName(name.to_owned()))?;
    let key = format!("'{name}'");
    let entry = lookup(&key, |pwd, buf, len, result| {
        // SAFETY: `c_name` is NUL-terminated and outlives the call; the other pointers are as
        // for `getpwuid_r` above.
        unsafe { libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, result) }
    })?;
    entry.map(complete).transpose()
}

/// The name of a uid, `uid:N` when NSS has none (or the lookup fails).
pub fn user_name(uid: u32) -> String {
    match user_by_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid:{uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_by_uid_and_name() {
        let root = user_by_uid(0).unwrap().expect("uid 0 is in every user database");
        assert_eq!(root.name, "root");
        assert_eq!(root.gid, 0);
        assert_eq!(root.groups.first(), Some(&0));
        assert_eq!(user_by_name("root").unwrap(), Some(root));
        assert_eq!(user_name(0), "root");
    }

    #[test]
    fn unknown_users_are_none() {
        assert_eq!(user_by_uid(4_000_000_123).unwrap(), None);
        assert_eq!(user_by_name("no-such-user-tessera").unwrap(), None);
        assert_eq!(user_name(4_000_000_123), "uid:4000000123");
        assert!(matches!(user_by_name("a\0b"), Err(UserError::BadName(_))));
    }

    #[test]
    fn groups_that_never_fit_are_an_error_not_just_the_primary_group() {
        let name = CString::new("ada").unwrap();
        let mut calls = 0;
        let err = groups_with(&name, 100, |_, _, groups, n| {
            calls += 1;
            *n = c_int::try_from(groups.len()).unwrap() + 1;
            -1
        })
        .unwrap_err();
        assert_eq!(calls, GROUPLIST_TRIES);
        assert!(matches!(&err, UserError::Groups { user, .. } if user == "ada"), "{err:?}");
        assert!(err.to_string().contains("getgrouplist still wanted more room"), "{err}");
        // One that fits on a later try: primary first, no repeats.
        let ok = groups_with(&name, 100, |_, _, groups, n| {
            if groups.len() < 40 {
                *n = 40;
                return -1;
            }
            groups[..3].copy_from_slice(&[7, 100, 7]);
            *n = 3;
            3
        })
        .unwrap();
        assert_eq!(ok, vec![100, 7]);
    }

    #[test]
    fn nobody_has_its_own_primary_group() {
        // `nobody` exists on Debian and most systems; its primary group is not root's.
        if let Some(nobody) = user_by_name("nobody").unwrap() {
            assert_eq!(nobody.groups.first(), Some(&nobody.gid));
            assert_ne!(nobody.uid, 0);
        }
    }
}
