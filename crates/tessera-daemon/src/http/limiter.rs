//! Connection counting, so one local user (or one remote address) cannot take every connection
//! the daemon can hold. A [`Slot`] is held for a connection's whole life and released when it
//! is dropped, however the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::PeerInfo;

/// What connections are counted by: the uid on the Unix socket, the address on TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    Uid(u32),
    Ip(IpAddr),
}

impl PeerKey {
    pub(crate) fn of(peer: &PeerInfo) -> PeerKey {
        match peer {
            PeerInfo::Unix { uid, .. } => PeerKey::Uid(*uid),
            PeerInfo::Tcp { addr } => PeerKey::Ip(addr.ip().to_canonical()),
        }
    }
}

/// Which limit refused a connection, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    PerPeer(usize),
    Total(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<PeerKey, usize>,
}

/// Open connections, in total and per peer.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_total: usize,
    max_per_peer: usize,
    counts: Mutex<Counts>,
}

impl Limiter {
    pub(crate) fn new(max_total: usize, max_per_peer: usize) -> Arc<Limiter> {
        Arc::new(Limiter { max_total, max_per_peer, counts: Mutex::default() })
    }

    /// Count one more connection for `key`, unless a limit is reached.
    pub(crate) fn acquire(self: &Arc<Self>, key: PeerKey) -> Result<Slot, Refused> {
        // Nothing panics while the lock is held, so a poisoned lock still holds good counts.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let mine = counts.per_peer.entry(key).or_insert(0);
        if *mine >= self.max_per_peer {
            return Err(Refused::PerPeer(self.max_per_peer));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot { limiter: self.clone(), key })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (counts.total, counts.per_peer.len())
    }
}

/// One counted connection; dropping it releases the count.
#[derive(Debug)]
pub(crate) struct Slot {
    limiter: Arc<Limiter>,
    key: PeerKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_peer.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_peer.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_and_total_limits_and_release_on_drop() {
        let limiter = Limiter::new(3, 2);
        let a = PeerKey::Uid(1000);
        let b = PeerKey::Ip("::ffff:127.0.0.1".parse::<IpAddr>().unwrap().to_canonical());
        let a1 = limiter.acquire(a).unwrap();
        let a2 = limiter.acquire(a).unwrap();
        assert_eq!(limiter.acquire(a).unwrap_err(), Refused::PerPeer(2));
        let b1 = limiter.acquire(b).unwrap();
        assert_eq!(limiter.acquire(b).unwrap_err(), Refused::Total(3));
        drop(a1);
        let b2 = limiter.acquire(b).unwrap();
        assert_eq!(limiter.open(), (3, 2));
        drop((a2, b1, b2));
        assert_eq!(limiter.open(), (0, 0));
    }
}
