//! The opaque handles the library gives out (`nvmlDevice_t`, `nvmlGpuInstance_t`,
//! `nvmlComputeInstance_t`, `nvmlEventSet_t`, `nvmlGpmSample_t`), without ever dereferencing one.
//!
//! A handle is the address of a small heap box holding its [`HandleKey`], owned by a process-wide
//! table. A pointer that comes back from the caller is looked up by address; only an address the
//! table handed out resolves, and the key (not the pointer) is what the library then works with,
//! so a foreign or stale pointer is never read.
//!
//! **Lifetime (the choice):** device, GPU-instance, compute-instance and MIG-device boxes are
//! never freed: the same identity gets the same pointer for the life of the process, across
//! `nvmlShutdown`/`nvmlInit_v2`, as NVML's own device handles do. Memory stays bounded by the
//! number of distinct identities (GPUs × instance shapes, plus one per compute instance ever
//! created). Because boxes are never freed, an address is never reused for another identity,
//! so a stale handle can only ever name the instance it was made for; whether that instance still
//! exists is checked against the simulated node on every call. Event sets and GPM sample buffers
//! are the exception: `nvmlEventSetFree` and `nvmlGpmSampleFree` (or the last `nvmlShutdown`)
//! drop them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

/// What a handle stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HandleKey {
    /// A GPU, by NVML index.
    Device { gpu: u32 },
    /// A GPU instance. Profile and start are part of the identity, so a GPU instance destroyed
    /// and recreated elsewhere under the same id gets a new handle.
    GpuInstance { gpu: u32, gi: u32, profile_id: u32, start: u8 },
    /// A compute instance; its MIG UUID changes with every creation, so a recreated compute
    /// instance gets a new handle.
    ComputeInstance { gpu: u32, gi: u32, ci: u32, uuid: String },
    /// The MIG device of a compute instance (an `nvmlDevice_t`).
    MigDevice { gpu: u32, gi: u32, ci: u32, uuid: String },
    /// An event set.
    EventSet { serial: u64 },
    /// A GPM sample buffer (`nvmlGpmSampleAlloc`).
    GpmSample { serial: u64 },
}

/// A handle as a number: the address of its box.
pub type Handle = usize;

#[derive(Debug, Default)]
struct Table {
    by_addr: HashMap<Handle, Box<HandleKey>>,
    by_key: HashMap<HandleKey, Handle>,
    next_serial: u64,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| Mutex::new(Table::default()));

fn table() -> std::sync::MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle of `key`, made on first use and the same ever after.
pub fn intern(key: HandleKey) -> Handle {
    let mut t = table();
    if let Some(&h) = t.by_key.get(&key) {
        return h;
    }
    let boxed = Box::new(key.clone());
    let addr = std::ptr::from_ref::<HandleKey>(&boxed).expose_provenance();
    t.by_addr.insert(addr, boxed);
    t.by_key.insert(key, addr);
    addr
}

/// What the handle at `addr` stands for; `None` for an address the library never handed out
/// (or a freed event set).
pub fn resolve(addr: Handle) -> Option<HandleKey> {
    table().by_addr.get(&addr).map(|b| (**b).clone())
}

/// A new handle of a kind that is freed, made with the next serial number.
fn new_serial(make: fn(u64) -> HandleKey) -> Handle {
    let serial = {
        let mut t = table();
        t.next_serial += 1;
        t.next_serial
    };
    intern(make(serial))
}

/// Drop the handle at `addr` if `is_kind` says it is of the kind to free; false otherwise.
fn free_if(addr: Handle, is_kind: fn(&HandleKey) -> bool) -> bool {
    let mut t = table();
    match t.by_addr.get(&addr).map(|b| (**b).clone()) {
        Some(key) if is_kind(&key) => {
            t.by_key.remove(&key);
            t.by_addr.remove(&addr);
            true
        }
        _ => false,
    }
}

/// A new event set's handle.
pub fn new_event_set() -> Handle {
    new_serial(|serial| HandleKey::EventSet { serial })
}

/// Drop an event set's handle; false if it is not one.
pub fn free_event_set(addr: Handle) -> bool {
    free_if(addr, |k| matches!(k, HandleKey::EventSet { .. }))
}

/// A new GPM sample buffer's handle.
pub fn new_gpm_sample() -> Handle {
    new_serial(|serial| HandleKey::GpmSample { serial })
}

/// Drop a GPM sample buffer's handle; false if it is not one.
pub fn free_gpm_sample(addr: Handle) -> bool {
    free_if(addr, |k| matches!(k, HandleKey::GpmSample { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_handle() {
        let a = intern(HandleKey::Device { gpu: 900 });
        let b = intern(HandleKey::Device { gpu: 900 });
        let c = intern(HandleKey::Device { gpu: 901 });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, 0);
        assert_eq!(resolve(a), Some(HandleKey::Device { gpu: 900 }));
        let gi = intern(HandleKey::GpuInstance { gpu: 900, gi: 1, profile_id: 9, start: 0 });
        let moved = intern(HandleKey::GpuInstance { gpu: 900, gi: 1, profile_id: 9, start: 4 });
        assert_ne!(gi, moved);
        let ci = intern(HandleKey::ComputeInstance { gpu: 900, gi: 1, ci: 0, uuid: "MIG-a".into() });
        let mig = intern(HandleKey::MigDevice { gpu: 900, gi: 1, ci: 0, uuid: "MIG-a".into() });
        assert_ne!(ci, mig);
    }

    #[test]
    fn foreign_addresses_do_not_resolve() {
        let h = intern(HandleKey::Device { gpu: 902 });
        assert_eq!(resolve(0), None);
        assert_eq!(resolve(h + 1), None);
        let local = 5u64;
        assert_eq!(resolve(std::ptr::from_ref(&local).expose_provenance()), None);
    }

    #[test]
    fn event_sets_are_freed() {
        let a = new_event_set();
        let b = new_event_set();
        assert_ne!(a, b);
        assert!(matches!(resolve(a), Some(HandleKey::EventSet { .. })));
        assert!(free_event_set(a));
        assert_eq!(resolve(a), None);
        assert!(!free_event_set(a));
        let dev = intern(HandleKey::Device { gpu: 903 });
        assert!(!free_event_set(dev), "only event sets can be freed");
        assert!(resolve(dev).is_some());
        assert!(free_event_set(b));
    }

    #[test]
    fn gpm_samples_are_freed_and_are_not_event_sets() {
        let s = new_gpm_sample();
        let e = new_event_set();
        assert!(matches!(resolve(s), Some(HandleKey::GpmSample { .. })));
        assert!(!free_event_set(s), "a sample is not an event set");
        assert!(!free_gpm_sample(e), "an event set is not a sample");
        assert!(free_gpm_sample(s));
        assert_eq!(resolve(s), None);
        assert!(!free_gpm_sample(s));
        assert!(free_event_set(e));
    }
}
