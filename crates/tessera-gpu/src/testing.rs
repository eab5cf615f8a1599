//! Test doubles: a backend wrapper that disguises devices or fails chosen calls, so the view and
//! the executor can be tested against GPUs the catalog does not know and against driver faults.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::{
    BackendError, BackendKind, ComputeInstanceInfo, DeviceInfo, GpmMetrics, GpuInstanceInfo, GpuInstanceProfileInfo,
    GpuObservation, MigBackend, MigMode, PlacementRange, ProcessInfo,
};
use crate::health::XidEvent;
use crate::sim::SimBackend;

/// Wraps a [`SimBackend`]; every call goes through unless a fault says otherwise.
#[derive(Debug)]
pub(crate) struct Wrapped {
    pub inner: SimBackend,
    /// Rewrite every device (e.g. to an unknown PCI id and name).
    pub disguise: Option<fn(&mut DeviceInfo)>,
    /// `create_gpu_instance` calls numbered from this one on (0-based) fail.
    pub fail_gi_creates_from: Mutex<Option<usize>>,
    /// `create_compute_instance` calls numbered from this one on fail.
    pub fail_ci_creates_from: Mutex<Option<usize>>,
    pub gi_creates: AtomicUsize,
    pub ci_creates: AtomicUsize,
    /// `gpu_instances` of this GPU fails (GPU lost).
    pub fail_gi_lists: Mutex<Option<u32>>,
}

impl Wrapped {
    pub fn new(inner: SimBackend) -> Self {
        Wrapped {
            inner,
            disguise: None,
            fail_gi_creates_from: Mutex::new(None),
            fail_ci_creates_from: Mutex::new(None),
            gi_creates: AtomicUsize::new(0),
            ci_creates: AtomicUsize::new(0),
            fail_gi_lists: Mutex::new(None),
        }
    }

    /// Fail `create_gpu_instance` from the `n`-th call made after this one.
    pub fn fail_gi_creates_after(&self, n: usize) {
        let base = self.gi_creates.load(Ordering::SeqCst);
        *self.fail_gi_creates_from.lock().unwrap() = Some(base + n);
    }

    /// Fail `create_compute_instance` from the `n`-th call made after this one.
    pub fn fail_ci_creates_after(&self, n: usize) {
        let base = self.ci_creates.load(Ordering::SeqCst);
        *self.fail_ci_creates_from.lock().unwrap() = Some(base + n);
    }

    fn lost(&self, gpu: u32) -> BackendError {
        BackendError::GpuLost { gpu: crate::backend::GpuRef::index(gpu) }
    }
}

impl MigBackend for Wrapped {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, BackendError> {
        let mut d = self.inner.devices()?;
        if let Some(f) = self.disguise {
            d.iter_mut().for_each(f);
        }
        Ok(d)
    }
    fn mig_mode(&self, gpu: u32) -> Result<MigMode, BackendError> {
        self.inner.mig_mode(gpu)
    }
    fn set_mig_mode(&self, gpu: u32, enabled: bool) -> Result<MigMode, BackendError> {
        self.inner.set_mig_mode(gpu, enabled)
    }
    fn gpu_instance_profiles(&self, gpu: u32) -> Result<Vec<GpuInstanceProfileInfo>, BackendError> {
        self.inner.gpu_instance_profiles(gpu)
    }
    fn possible_placements(&self, gpu: u32, profile_id: u32) -> Result<Vec<PlacementRange>, BackendError> {
        self.inner.possible_placements(gpu, profile_id)
    }
    fn create_gpu_instance(
        &self,
        gpu: u32,
        profile_id: u32,
        placement: Option<u8>,
    ) -> Result<GpuInstanceInfo, BackendError> {
        let n = self.gi_creates.fetch_add(1, Ordering::SeqCst);
        if self.fail_gi_creates_from.lock().unwrap().is_some_and(|from| n >= from) {
            return Err(self.lost(gpu));
        }
        self.inner.create_gpu_instance(gpu, profile_id, placement)
    }
    fn create_compute_instance(
        &self,
        gpu: u32,
        gpu_instance_id: u32,
        ci_profile_id: u32,
    ) -> Result<ComputeInstanceInfo, BackendError> {
        let n = self.ci_creates.fetch_add(1, Ordering::SeqCst);
        if self.fail_ci_creates_from.lock().unwrap().is_some_and(|from| n >= from) {
            return Err(self.lost(gpu));
        }
        self.inner.create_compute_instance(gpu, gpu_instance_id, ci_profile_id)
    }
    fn destroy_compute_instance(&self, gpu: u32, gi: u32, ci: u32) -> Result<(), BackendError> {
        self.inner.destroy_compute_instance(gpu, gi, ci)
    }
    fn destroy_gpu_instance(&self, gpu: u32, gi: u32) -> Result<(), BackendError> {
        self.inner.destroy_gpu_instance(gpu, gi)
    }
    fn gpu_instances(&self, gpu: u32) -> Result<Vec<GpuInstanceInfo>, BackendError> {
        if *self.fail_gi_lists.lock().unwrap() == Some(gpu) {
            return Err(self.lost(gpu));
        }
        self.inner.gpu_instances(gpu)
    }
    fn compute_instances(&self, gpu: u32, gi: u32) -> Result<Vec<ComputeInstanceInfo>, BackendError> {
        self.inner.compute_instances(gpu, gi)
    }
    fn processes(&self, gpu: u32) -> Result<Vec<ProcessInfo>, BackendError> {
        self.inner.processes(gpu)
    }
    fn wait_xid_events(&self, timeout_ms: u32) -> Result<Vec<XidEvent>, BackendError> {
        self.inner.wait_xid_events(timeout_ms)
    }
    fn observe(&self, gpu: u32) -> Result<GpuObservation, BackendError> {
        self.inner.observe(gpu)
    }
    fn reset_gpu(&self, gpu: u32) -> Result<(), BackendError> {
        self.inner.reset_gpu(gpu)
    }
    fn gpm_supported(&self, gpu: u32) -> Result<bool, BackendError> {
        self.inner.gpm_supported(gpu)
    }
    fn gpm_sample(&self, gpu: u32, gpu_instance_id: Option<u32>) -> Result<Option<GpmMetrics>, BackendError> {
        self.inner.gpm_sample(gpu, gpu_instance_id)
    }
}
