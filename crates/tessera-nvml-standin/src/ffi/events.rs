//! Exports: event sets, fed by the Xid injection file (`TESSERA_STANDIN_XIDS`) and the Xids raised
//! on the simulated node (`tessera mig xid`).
//!
//! `unsafe` is allowed here because these are `#[unsafe(no_mangle)] extern "C"` exports that
//! write through the caller's pointers; see the parent module for the contract.
#![allow(unsafe_code)]
#![allow(non_snake_case)] // Parameter names are nvml.h's.

use std::os::raw::{c_uint, c_ulonglong};

use nvml_wrapper_sys::bindings::*;

use super::{handle, need, pointer, put};
use crate::node::{self, call, status};

/// A new, empty event set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    status(call("nvmlEventSetCreate", |node| {
        need(set)?;
        let h = node.event_set_create();
        // SAFETY: nvml.h: `set` is valid for a write (non-null checked).
        unsafe { put(set, pointer(h)) }
    }))
}

/// Record events of `eventTypes` on a GPU into `set` (only Xid critical errors are supported).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    eventTypes: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    status(call("nvmlDeviceRegisterEvents", |node| node.register_events(handle(device), eventTypes, handle(set))))
}

/// `nvmlEventTypeXidCriticalError` for a GPU; nothing for a MIG device.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    eventTypes: *mut c_ulonglong,
) -> nvmlReturn_t {
    status(call("nvmlDeviceGetSupportedEventTypes", |node| {
        need(eventTypes)?;
        let types = node.supported_event_types(handle(device))?;
        // SAFETY: nvml.h: `eventTypes` is valid for a write (non-null checked).
        unsafe { put(eventTypes, types) }
    }))
}

/// The next event of `set`, waiting up to `timeoutms` for a new line in the Xid file or an Xid
/// raised on the simulated node; `NVML_ERROR_TIMEOUT` when none comes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeoutms: c_uint,
) -> nvmlReturn_t {
    status(node::guard(|| {
        let ev = node::event_wait("nvmlEventSetWait_v2", handle(set), timeoutms, !data.is_null())?;
        let out = nvmlEventData_t {
            device: pointer(ev.device),
            eventType: ev.event_type,
            eventData: ev.data,
            gpuInstanceId: ev.gpu_instance_id,
            computeInstanceId: ev.compute_instance_id,
        };
        // SAFETY: nvml.h: `data` is valid for a write (checked non-null by `event_wait`).
        unsafe { put(data, out) }
    }))
}

/// Release an event set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    status(call("nvmlEventSetFree", |node| node.event_set_free(handle(set))))
}
