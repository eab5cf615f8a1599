//! The web view's login sessions on the TCP listener. A browser cannot send a bearer token by
//! itself, so `POST /ui/login` checks a token once ([`crate::config::Tokens::user_for`], constant
//! time) and opens a session: a random id from the OS (`/dev/urandom`), kept in memory with the
//! token's user and an expiry, sent back as an `HttpOnly; Secure; SameSite=Strict` cookie scoped
//! to `/ui`. Sessions are few (at most [`Sessions::MAX`]; the one nearest its end makes room) and
//! end at expiry, at logout, or with the daemon. Time is passed in, so expiry is tested without
//! waiting.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::TokenUser;

/// The cookie's name.
pub const COOKIE: &str = "tessera_session";

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The OS gave no random bytes for the id.
    #[error("reading random bytes for a session id from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
}

/// One open session.
#[derive(Debug, Clone)]
struct Session {
    user: TokenUser,
    expires: Instant,
}

/// The open sessions, by id.
#[derive(Debug)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(Sessions::LIFETIME)
    }
}

impl Sessions {
    /// How long a session lasts after its login.
    pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
    /// The most sessions open at once.
    pub const MAX: usize = 256;

    /// No sessions; each one opened lasts `lifetime`.
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions { open: Mutex::new(HashMap::new()), lifetime }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open a session for `user` at `now`; its id (64 hex digits, 256 random bits).
    pub fn create(&self, user: TokenUser, now: Instant) -> Result<String, SessionError> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).map_err(SessionError::Random)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.open();
        open.retain(|_, s| s.expires > now);
        while open.len() >= Sessions::MAX {
            let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone()) else { break };
            open.remove(&oldest);
        }
        open.insert(id.clone(), Session { user, expires: now + self.lifetime });
        Ok(id)
    }

    /// The user of the live session `id` at `now`; an expired one is forgotten.
    pub fn user(&self, id: &str, now: Instant) -> Option<TokenUser> {
        let mut open = self.open();
        match open.get(id) {
            Some(s) if s.expires > now => Some(s.user.clone()),
            Some(_) => {
                open.remove(id);
                None
            }
            None => None,
        }
    }

    /// End the session `id` (logout); whether it was open.
    pub fn end(&self, id: &str) -> bool {
        self.open().remove(id).is_some()
    }

    /// How many sessions are open (expired ones included until they are next looked at).
    pub fn len(&self) -> usize {
        self.open().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id a request's `Cookie` headers carry, if any: the value of [`COOKIE`], when it
/// looks like an id this module makes (64 lowercase hex digits).
pub fn cookie_id(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The `Set-Cookie` value that hands a browser session `id`.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age={}", Sessions::LIFETIME.as_secs())
}

/// The `Set-Cookie` value that makes a browser forget its session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> TokenUser {
        TokenUser { uid: 1000, gid: 1000, name: "alice".into() }
    }

    #[test]
    fn a_session_names_its_user_until_it_expires_or_ends() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = sessions.create(alice(), t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.user(&id, t0 + Duration::from_secs(59)).map(|u| u.name), Some("alice".into()));
        assert_eq!(sessions.user(&id, t0 + Duration::from_secs(60)), None, "expired at its lifetime");
        assert_eq!(sessions.len(), 0, "an expired session is forgotten");
        let id = sessions.create(alice(), t0).unwrap();
        assert!(sessions.end(&id));
        assert_eq!(sessions.user(&id, t0), None, "logged out");
        assert!(!sessions.end(&id));
    }

    #[test]
    fn ids_are_random_and_unknown_ones_are_nobody() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.create(alice(), now).unwrap();
        let b = sessions.create(alice(), now).unwrap();
        assert_ne!(a, b);
        let mut forged = a.clone();
        forged.replace_range(63.., if a.ends_with('0') { "1" } else { "0" });
        assert_eq!(sessions.user(&forged, now), None);
        assert_eq!(sessions.user("", now), None);
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_makes_room() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let first = sessions.create(alice(), t0).unwrap();
        for k in 1..=Sessions::MAX {
            sessions.create(alice(), t0 + Duration::from_millis(k as u64)).unwrap();
        }
        assert_eq!(sessions.len(), Sessions::MAX);
        assert_eq!(sessions.user(&first, t0), None, "the oldest session made room");
    }

    #[test]
    fn the_cookie_is_read_only_when_it_looks_like_an_id() {
        let id = "ab".repeat(32);
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, format!("theme=dark; {COOKIE}={id}; x=y").parse().unwrap());
        assert_eq!(cookie_id(&h), Some(id.clone()));
        for bad in ["short", &"AB".repeat(32), &format!("{id}0"), "<script>"] {
            let mut h = http::HeaderMap::new();
            h.append(http::header::COOKIE, format!("{COOKIE}={bad}").parse().unwrap());
            assert_eq!(cookie_id(&h), None, "{bad}");
        }
        let c = set_cookie(&id);
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
