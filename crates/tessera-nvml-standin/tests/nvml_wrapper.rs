//! The stand-in under `nvml-wrapper` 0.13, the crate Tessera's NVML backend is written against:
//! its safe `Device` methods must work unchanged, and its raw `nvml.lib()` path must reach the
//! MIG calls the wrapper does not cover.
//!
//! One test function: the library's state is process-global and configured from the environment.
#![allow(unsafe_code)] // Setting the environment, and the raw MIG calls.

use std::ffi::OsStr;
use std::io::Write;
use std::ptr;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::*;
use tessera_gpu::SimBackend;
use tessera_nvml_standin::config::*;

#[test]
fn nvml_wrapper_drives_the_stand_in() {
    let path = tessera_nvml_standin::library_path()
        .expect("the stand-in library is not built; run `cargo build -p tessera-nvml-standin`");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node.json");
    let xids = dir.path().join("xids");
    for (name, value) in [
        (ENV_SPEC, "1xH100-80GB+1xH100-80GB:0x16C110DE,numa=2,cpus=64"),
        (ENV_STATE, state.to_str().unwrap()),
        (ENV_XIDS, xids.to_str().unwrap()),
    ] {
        // SAFETY: this binary has a single test, so no other thread reads the environment.
        unsafe { std::env::set_var(name, value) };
    }

    let nvml = Nvml::builder().lib_path(OsStr::new(&path)).init().unwrap();
    assert_eq!(nvml.device_count().unwrap(), 2);
    assert_eq!(nvml.sys_driver_version().unwrap(), "580.65.06");
    assert_eq!(nvml.sys_nvml_version().unwrap(), "13.580.65.06");
    assert_eq!(nvml.sys_cuda_driver_version().unwrap(), 13000);

    let d = nvml.device_by_index(1).unwrap();
    let uuid = d.uuid().unwrap();
    assert_eq!(nvml.device_by_uuid(uuid.as_str()).unwrap().index().unwrap(), 1);
    assert_eq!(d.name().unwrap(), "NVIDIA H100 80GB HBM3");
    let pci = d.pci_info().unwrap();
    assert_eq!((pci.bus_id.as_str(), pci.bus, pci.pci_device_id), ("00000000:2A:00.0", 0x2a, 0x2330_10DE));
    // The board's subsystem id, as the spec names it (GPU 0 has the model's default).
    assert_eq!(pci.pci_sub_system_id, Some(0x16C1_10DE));
    assert_eq!(nvml.device_by_index(0).unwrap().pci_info().unwrap().pci_sub_system_id, Some(0x2330_10DE));
    assert_eq!(d.minor_number().unwrap(), 1);
    let mem = d.memory_info().unwrap();
    assert!(mem.total > 79 << 30 && mem.free == mem.total, "{mem:?}");
    assert_eq!(d.cpu_affinity(1).unwrap(), [0xFFFF_FFFF_0000_0000]);
    assert_eq!(d.memory_affinity(1, NVML_AFFINITY_SCOPE_NODE).unwrap(), [0b10]);
    assert_eq!(d.numa_node_id().unwrap(), 1);
    let mode = d.mig_mode().unwrap();
    assert_eq!((mode.current, mode.pending), (1, 1));
    assert_eq!(d.mig_device_count().unwrap(), 7);
    assert!(!d.mig_is_mig_device_handle().unwrap());
    assert_eq!(d.profile_info(NVML_GPU_INSTANCE_PROFILE_1_SLICE).unwrap().id, 19);
    assert!(matches!(d.profile_info(NVML_GPU_INSTANCE_PROFILE_8_SLICE), Err(NvmlError::NotSupported)));
    assert!(d.running_compute_processes().unwrap().is_empty());
    assert!(matches!(d.mig_device_by_index(0), Err(NvmlError::NotFound)));

    // GPU and compute instances through the raw functions, as the backend does.
    let lib = nvml.lib();
    // SAFETY: `d` is alive for the whole test.
    let raw = unsafe { d.handle() };
    let placement = nvmlGpuInstancePlacement_t { start: 4, size: 4 };
    let mut gi = ptr::null_mut();
    // SAFETY: valid handle and live locals of the types nvml.h asks for.
    assert_eq!(unsafe { lib.nvmlDeviceCreateGpuInstanceWithPlacement(raw, 9, &placement, &mut gi) }, 0);
    let mut ci = ptr::null_mut();
    // SAFETY: as above.
    assert_eq!(unsafe { lib.nvmlGpuInstanceCreateComputeInstance(gi, 2, &mut ci) }, 0);

    let mig = d.mig_device_by_index(0).unwrap();
    assert!(mig.mig_is_mig_device_handle().unwrap());
    let mig_uuid = mig.uuid().unwrap();
    assert!(mig_uuid.starts_with("MIG-"), "{mig_uuid}");
    assert_eq!(mig.name().unwrap(), "NVIDIA H100 80GB HBM3 MIG 3g.40gb");
    assert_eq!(mig.mig_parent_device().unwrap().uuid().unwrap(), uuid);
    assert!(mig.memory_info().unwrap().total > 39 << 30);
    assert_eq!(nvml.device_by_uuid(mig_uuid.as_str()).unwrap().uuid().unwrap(), mig_uuid);

    // A process started by another user of the node shows up with its instance ids.
    let other = SimBackend::open(&state, None).unwrap();
    other.attach_process(1, 2, 0, 31337, "python").unwrap();
    let procs = d.running_compute_processes().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!((procs[0].pid, procs[0].gpu_instance_id, procs[0].compute_instance_id), (31337, Some(2), Some(0)));
    assert_eq!(procs[0].used_gpu_memory, UsedGpuMemory::Used(0));
    assert_eq!(mig.running_compute_processes().unwrap().len(), 1);
    // SAFETY: valid handle.
    assert_eq!(unsafe { lib.nvmlComputeInstanceDestroy(ci) }, nvmlReturn_enum_NVML_ERROR_IN_USE);
    // Disabling MIG while instances exist: accepted, activation refused.
    assert_eq!(d.set_mig_mode(false).unwrap(), nvmlReturn_enum_NVML_ERROR_IN_USE);
    other.detach_process(1, 31337).unwrap();

    // Xid events through the wrapper's event set.
    let set = nvml.create_event_set().unwrap();
    assert!(d.supported_event_types().unwrap().contains(EventTypes::CRITICAL_XID_ERROR));
    let set = d.register_events(EventTypes::CRITICAL_XID_ERROR, set).unwrap();
    assert!(matches!(set.wait(0), Err(NvmlError::Timeout)));
    // (Xid 48 asks for a reset; an Xid 79 would take the GPU off the bus.)
    std::fs::File::create(&xids).unwrap().write_all(b"1 48\n").unwrap();
    let ev = set.wait(1000).unwrap();
    assert_eq!(ev.event_data, Some(XidError::Value(48)));
    assert_eq!(ev.device.uuid().unwrap(), uuid);
    assert!(ev.event_type.contains(EventTypes::CRITICAL_XID_ERROR));
    drop(set);

    // SAFETY: valid handles, destroyed in order.
    unsafe {
        assert_eq!(lib.nvmlComputeInstanceDestroy(ci), 0);
        assert_eq!(lib.nvmlGpuInstanceDestroy(gi), 0);
    }
    nvml.shutdown().unwrap();
}
