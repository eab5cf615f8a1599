//! A read cache over the simulated node's state file.
//!
//! Every read of a file-backed [`tessera_gpu::SimBackend`] locks, reads and fully parses the state
//! file (spec and all), which in a debug build costs far more than the NVML call around it; and
//! NVML callers read a lot (a MIG device enumeration asks for the same instance lists again and
//! again). So read answers are kept, keyed by the exact bytes of the state file: the simulated
//! node replaces the file atomically on every change, so while its bytes are the same, every
//! answer is too. An answer is only stored when the file was byte-identical before and after it
//! was fetched, so a change made meanwhile by another process is never stored as current.
//! Mutations always go to the simulated node; an in-memory node is not cached.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

use tessera_gpu::{ComputeInstanceInfo, GpuInstanceInfo, GpuInstanceProfileInfo, GpuObservation, MigMode, ProcessInfo};

/// Answers valid for one content of the state file.
#[derive(Debug, Default)]
pub struct ReadCache {
    bytes: Vec<u8>,
    pub mig_mode: HashMap<u32, MigMode>,
    pub gpu_instances: HashMap<u32, Vec<GpuInstanceInfo>>,
    pub compute_instances: HashMap<(u32, u32), Vec<ComputeInstanceInfo>>,
    pub processes: HashMap<u32, Vec<ProcessInfo>>,
    pub profiles: HashMap<u32, Vec<GpuInstanceProfileInfo>>,
    pub lost: HashMap<(), Vec<u32>>,
    pub observations: HashMap<u32, GpuObservation>,
}

impl ReadCache {
    /// Keep the answers only if the state file still holds `bytes`.
    fn validate(&mut self, bytes: &[u8]) {
        if self.bytes != bytes {
            *self = ReadCache { bytes: bytes.to_vec(), ..ReadCache::default() };
        }
    }
}

/// The answer for `key`: cached while the state file at `state` is unchanged, else `fetch`ed.
/// With no state file (an in-memory node), or one that cannot be read, always `fetch`.
pub fn read<K: Hash + Eq, T: Clone, E>(
    cache: &RefCell<ReadCache>,
    state: Option<&Path>,
    slot: fn(&mut ReadCache) -> &mut HashMap<K, T>,
    key: K,
    fetch: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let Some(before) = state.and_then(|p| std::fs::read(p).ok()) else {
        return fetch();
    };
    {
        let mut c = cache.borrow_mut();
        c.validate(&before);
        if let Some(v) = slot(&mut c).get(&key) {
            return Ok(v.clone());
        }
    }
    let value = fetch()?;
    let unchanged = state.and_then(|p| std::fs::read(p).ok()).is_some_and(|after| after == before);
    if unchanged {
        let mut c = cache.borrow_mut();
        if c.bytes == before {
            slot(&mut c).insert(key, value.clone());
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn modes(c: &mut ReadCache) -> &mut HashMap<u32, MigMode> {
        &mut c.mig_mode
    }

    #[test]
    fn answers_are_kept_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, "one").unwrap();
        let cache = RefCell::new(ReadCache::default());
        let fetches = Cell::new(0);
        let on = MigMode { current: true, pending: true };
        let fetch = |m: MigMode| {
            fetches.set(fetches.get() + 1);
            Ok::<_, ()>(m)
        };
        assert_eq!(read(&cache, Some(&path), modes, 0, || fetch(on)), Ok(on));
        assert_eq!(read(&cache, Some(&path), modes, 0, || fetch(on)), Ok(on));
        assert_eq!(fetches.get(), 1);
        // Another key is fetched; errors are not kept.
        assert_eq!(read(&cache, Some(&path), modes, 1, || Err::<MigMode, _>(7)), Err(7));
        assert_eq!(read(&cache, Some(&path), modes, 1, || fetch(on)), Ok(on));
        assert_eq!(fetches.get(), 2);
        // A new file content drops everything.
        std::fs::write(&path, "two").unwrap();
        let off = MigMode { current: false, pending: false };
        assert_eq!(read(&cache, Some(&path), modes, 0, || fetch(off)), Ok(off));
        assert_eq!(fetches.get(), 3);
    }

    #[test]
    fn a_change_during_the_fetch_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, "one").unwrap();
        let cache = RefCell::new(ReadCache::default());
        let on = MigMode { current: true, pending: true };
        let r = read(&cache, Some(&path), modes, 0, || {
            std::fs::write(&path, "two").unwrap();
            Ok::<_, ()>(on)
        });
        assert_eq!(r, Ok(on));
        std::fs::write(&path, "one").unwrap();
        let off = MigMode { current: false, pending: false };
        assert_eq!(read(&cache, Some(&path), modes, 0, || Ok::<_, ()>(off)), Ok(off), "nothing was stored");
    }

    #[test]
    fn no_file_no_cache() {
        let cache = RefCell::new(ReadCache::default());
        let fetches = Cell::new(0);
        for _ in 0..2 {
            let r = read(&cache, None, modes, 0, || {
                fetches.set(fetches.get() + 1);
                Ok::<_, ()>(MigMode { current: true, pending: true })
            });
            assert!(r.is_ok());
        }
        assert_eq!(fetches.get(), 2);
    }
}
