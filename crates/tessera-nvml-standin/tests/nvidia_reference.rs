//! The stand-in checked against data NVIDIA wrote, not against Tessera's own catalog:
//!
//! * `data/mig-user-guide-a100-40gb.txt`: the `nvidia-smi mig -lgip`, `-lgipp` and `-lcip` output
//!   NVIDIA publishes in the MIG user guide, verbatim; every row must come back through the C ABI
//!   (`nvmlDeviceGetGpuInstanceProfileInfoV`, `…RemainingCapacity`, `…PossiblePlacements_v2`,
//!   `nvmlGpuInstanceGetComputeInstanceProfileInfoV`, …): profile id, name, free/total, memory,
//!   SMs, copy engines, decoders, encoders, JPEG, OFA, placements;
//! * the simulated node itself (`SimBackend`), against the same rows without the C ABI;
//! * `data/go-nvml-dgxa100.json`: the GPU- and compute-instance profile tables of go-nvml's DGX A100
//!   mock ("real values"), with the places where go-nvml is wrong by NVIDIA's own output;
//! * `data/nvml-h-return-codes.txt`: the return codes nvml.h documents for every exported call;
//!   the stand-in is driven into every failure it models (uninitialised, bad and stale handles,
//!   null pointers, a GPU off the bus, a GPU without MIG, MIG off, no room, busy instances, no
//!   permission, a caller that is not root, bad struct versions) and must answer only codes the
//!   header documents for that call, less the deviations listed in [`DEVIATIONS`] with why.
//!
//! The library's state is process-global and configured from the environment, so every test
//! takes [`LOCK`] and shuts the library down fully before it starts.
#![allow(unsafe_code)] // Calling a C library through raw function pointers is the point.

use std::collections::{BTreeMap, BTreeSet};
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_ulonglong};
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use nvml_wrapper_sys::bindings::*;
use tessera_gpu::SimBackend;
use tessera_nvml_standin::codes::{self, Ret};
use tessera_nvml_standin::config::*;

const SUCCESS: Ret = codes::SUCCESS;
const GUIDE: &str = include_str!("data/mig-user-guide-a100-40gb.txt");
const GO_NVML: &str = include_str!("data/go-nvml-dgxa100.json");
const RETURN_CODES: &str = include_str!("data/nvml-h-return-codes.txt");

static LOCK: Mutex<()> = Mutex::new(());

/// Call a raw NVML function of the loaded library.
macro_rules! nv {
    ($lib:expr, $f:ident($($arg:expr),* $(,)?)) => {
        // SAFETY: the stand-in exports every function called here, and every pointer passed is
        // null on purpose, a handle the library handed out (live or stale: it never dereferences
        // them), or a live local of the type nvml.h asks for with its element count alongside.
        unsafe { $lib.$f($($arg),*) }
    };
}

fn lib() -> &'static NvmlLib {
    static LIB: OnceLock<NvmlLib> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = tessera_nvml_standin::library_path()
            .expect("the stand-in library is not built; run `cargo build -p tessera-nvml-standin`");
        // SAFETY: loading the stand-in runs no initialisation code beyond Rust's own statics.
        unsafe { NvmlLib::new(&path) }.unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    })
}

/// Take the lock, shut the library down completely and set exactly `vars`.
fn setup(vars: &[(&str, &str)]) -> MutexGuard<'static, ()> {
    let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    while nv!(lib(), nvmlShutdown()) == SUCCESS {}
    for name in ENV_VARS {
        // SAFETY: tests in this binary run one at a time under LOCK; no other thread touches the
        // environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    for (name, value) in vars {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
    guard
}

#[track_caller]
fn ok(r: Ret) {
    assert_eq!(r, SUCCESS, "NVML error {r} ({:?})", codes::code_name(r));
}

fn text(buf: &[c_char]) -> String {
    buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect()
}

fn device(index: u32) -> nvmlDevice_t {
    let mut d = ptr::null_mut();
    ok(nv!(lib(), nvmlDeviceGetHandleByIndex_v2(index, &mut d)));
    d
}

/// A zeroed NVML output struct (all of them are plain C data, for which zero is valid).
fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for nvml.h's C structs of integers, arrays and raw pointers.
    unsafe { std::mem::zeroed() }
}

fn version<T>(ver: u32) -> c_uint {
    (size_of::<T>() as c_uint) | (ver << 24)
}

fn gi_profile_v2(d: nvmlDevice_t, index: u32) -> Result<nvmlGpuInstanceProfileInfo_v2_t, Ret> {
    let mut info: nvmlGpuInstanceProfileInfo_v2_t = zeroed();
    info.version = version::<nvmlGpuInstanceProfileInfo_v2_t>(2);
    match nv!(lib(), nvmlDeviceGetGpuInstanceProfileInfoV(d, index, &mut info)) {
        SUCCESS => Ok(info),
        e => Err(e),
    }
}

fn ci_profile_v2(gi: nvmlGpuInstance_t, index: u32) -> Result<nvmlComputeInstanceProfileInfo_v2_t, Ret> {
    let mut info: nvmlComputeInstanceProfileInfo_v2_t = zeroed();
    info.version = version::<nvmlComputeInstanceProfileInfo_v2_t>(2);
    match nv!(
        lib(),
        nvmlGpuInstanceGetComputeInstanceProfileInfoV(
            gi,
            index,
            NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
            &mut info
        )
    ) {
        SUCCESS => Ok(info),
        e => Err(e),
    }
}

fn create_gi(d: nvmlDevice_t, profile_id: u32, start: u32, size: u32) -> nvmlGpuInstance_t {
    let placement = nvmlGpuInstancePlacement_t { start, size };
    let mut gi = ptr::null_mut();
    ok(nv!(lib(), nvmlDeviceCreateGpuInstanceWithPlacement(d, profile_id, &placement, &mut gi)));
    gi
}

fn create_ci(gi: nvmlGpuInstance_t, profile_id: u32) -> nvmlComputeInstance_t {
    let mut ci = ptr::null_mut();
    ok(nv!(lib(), nvmlGpuInstanceCreateComputeInstance(gi, profile_id, &mut ci)));
    ci
}

// ----- the MIG user guide's output, parsed -----

/// The lines of the command `cmd` in the guide's file (up to the next command).
fn section(cmd: &str) -> Vec<&'static str> {
    let mut lines = GUIDE.lines().skip_while(|l| !l.contains(cmd));
    assert!(lines.next().is_some(), "{cmd} is not in the guide's file");
    lines.take_while(|l| !l.starts_with('$')).filter(|l| !l.trim().is_empty()).collect()
}

/// The whitespace-separated cells of a box-table line.
fn cells(line: &str) -> Vec<&str> {
    line.trim().trim_matches('|').split_whitespace().collect()
}

fn num(s: &str) -> u32 {
    s.trim_end_matches('*').parse().unwrap_or_else(|_| panic!("'{s}' is not a number"))
}

fn free_total(s: &str) -> (u32, u32) {
    let (f, t) = s.split_once('/').unwrap();
    (num(f), num(t))
}

/// One `-lgip` row.
#[derive(Debug)]
struct Lgip {
    name: String,
    id: u32,
    free: u32,
    total: u32,
    gib: f64,
    p2p: bool,
    sm: u32,
    dec: u32,
    enc: u32,
    ce: u32,
    jpeg: u32,
    ofa: u32,
}

fn lgip() -> Vec<Lgip> {
    let lines = section("mig -lgip");
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let c = cells(line);
        if c.len() == 10 && c[1] == "MIG" {
            let next = cells(lines[i + 1]);
            let (free, total) = free_total(c[4]);
            rows.push(Lgip {
                name: format!("MIG {}", c[2]),
                id: num(c[3]),
                free,
                total,
                gib: c[5].parse().unwrap(),
                p2p: c[6] == "Yes",
                sm: num(c[7]),
                dec: num(c[8]),
                enc: num(c[9]),
                ce: num(next[0]),
                jpeg: num(next[1]),
                ofa: num(next[2]),
            });
        }
    }
    rows
}

/// `-lgipp`: profile id → (starts, size).
fn lgipp() -> BTreeMap<u32, (Vec<u32>, u32)> {
    section("mig -lgipp")
        .iter()
        .map(|line| {
            let id = num(line
                .split("Profile ID")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .trim()
                .split(' ')
                .next()
                .unwrap());
            let starts = line.split('{').nth(1).unwrap().split('}').next().unwrap();
            let starts: Vec<u32> = starts.split(',').map(num).collect();
            let size = num(line.rsplit(':').next().unwrap().trim());
            (id, (starts, size))
        })
        .collect()
}

/// One `-lcip` row.
#[derive(Debug)]
struct Lcip {
    name: String,
    id: u32,
    default: bool,
    free: u32,
    total: u32,
    sm: u32,
    dec: u32,
    enc: u32,
    ofa: u32,
    ce: u32,
    jpeg: u32,
}

fn lcip() -> Vec<Lcip> {
    let lines = section("mig -lcip");
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let c = cells(line);
        if c.len() == 10 && c[2] == "MIG" {
            let next = cells(lines[i + 1]);
            let (free, total) = free_total(c[5]);
            rows.push(Lcip {
                name: format!("MIG {}", c[3]),
                id: num(c[4]),
                default: c[4].ends_with('*'),
                free,
                total,
                sm: num(c[6]),
                dec: num(c[7]),
                enc: num(c[8]),
                ofa: num(c[9]),
                ce: num(next[0]),
                jpeg: num(next[1]),
            });
        }
    }
    rows
}

#[test]
fn the_guides_own_output_parses_completely() {
    assert_eq!(lgip().len(), 7);
    assert_eq!(lgipp().len(), 7);
    assert_eq!(lcip().len(), 3);
    assert!(lcip().iter().filter(|r| r.default).count() == 1);
}

fn a100() -> (MutexGuard<'static, ()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node.json").display().to_string();
    let g = setup(&[(ENV_SPEC, "1xA100-40GB"), (ENV_STATE, &state)]);
    ok(nv!(lib(), nvmlInit_v2()));
    let mut current = 0;
    let mut pending = 0;
    ok(nv!(lib(), nvmlDeviceGetMigMode(device(0), &mut current, &mut pending)));
    assert_eq!(current, NVML_DEVICE_MIG_ENABLE, "the simulated A100 starts in MIG mode");
    (g, dir)
}

/// Every GPU-instance profile the device answers for: id → (index, info).
fn gi_profiles(d: nvmlDevice_t) -> BTreeMap<u32, (u32, nvmlGpuInstanceProfileInfo_v2_t)> {
    (0..NVML_GPU_INSTANCE_PROFILE_COUNT).filter_map(|i| gi_profile_v2(d, i).ok().map(|p| (p.id, (i, p)))).collect()
}

#[test]
fn lgip_every_row_of_the_guide() {
    let (_g, _dir) = a100();
    let d = device(0);
    let ours = gi_profiles(d);
    let rows = lgip();
    let want: BTreeSet<u32> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ours.keys().copied().collect::<BTreeSet<_>>(), want, "the profile ids NVML lists");
    for r in &rows {
        let (_, p) = &ours[&r.id];
        let mut free = 0;
        ok(nv!(lib(), nvmlDeviceGetGpuInstanceRemainingCapacity(d, r.id, &mut free)));
        let got = (
            text(&p.name),
            free,
            p.instanceCount,
            p.isP2pSupported != 0,
            p.multiprocessorCount,
            p.decoderCount,
            p.encoderCount,
            p.copyEngineCount,
            p.jpegCount,
            p.ofaCount,
        );
        let want = (r.name.clone(), r.free, r.total, r.p2p, r.sm, r.dec, r.enc, r.ce, r.jpeg, r.ofa);
        assert_eq!(got, want, "profile {} (name, free, total, P2P, SM, DEC, ENC, CE, JPEG, OFA)", r.id);
        // nvidia-smi prints MiB / 1024 to two decimals.
        let gib = p.memorySizeMB as f64 / 1024.0;
        assert!((gib - r.gib).abs() <= 0.005 + 1e-9, "profile {}: {} MiB is not {} GiB", r.id, p.memorySizeMB, r.gib);
    }
}

#[test]
fn lgipp_every_placement_of_the_guide() {
    let (_g, _dir) = a100();
    let d = device(0);
    for (id, (starts, size)) in lgipp() {
        let mut count: c_uint = 0;
        ok(nv!(lib(), nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, id, ptr::null_mut(), &mut count)));
        let mut buf = vec![nvmlGpuInstancePlacement_t { start: 0, size: 0 }; count as usize];
        ok(nv!(lib(), nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, id, buf.as_mut_ptr(), &mut count)));
        let got: Vec<(u32, u32)> = buf.iter().map(|p| (p.start, p.size)).collect();
        let want: Vec<(u32, u32)> = starts.iter().map(|&s| (s, size)).collect();
        assert_eq!(got, want, "placements of profile {id}");
    }
}

#[test]
fn lcip_every_row_of_the_guide() {
    let (_g, _dir) = a100();
    let d = device(0);
    // `-cgi 9,3g.20gb -C` put GPU instance 1 at 4:4 with its default (full) compute instance.
    let gi = create_gi(d, 9, 4, 4);
    let rows = lcip();
    let default = rows.iter().find(|r| r.default).unwrap();
    create_ci(gi, default.id);
    let ours: BTreeMap<u32, nvmlComputeInstanceProfileInfo_v2_t> =
        (0..NVML_COMPUTE_INSTANCE_PROFILE_COUNT).filter_map(|i| ci_profile_v2(gi, i).ok().map(|p| (p.id, p))).collect();
    assert_eq!(ours.keys().copied().collect::<BTreeSet<_>>(), rows.iter().map(|r| r.id).collect::<BTreeSet<_>>());
    for r in &rows {
        let p = &ours[&r.id];
        let mut free = 0;
        ok(nv!(lib(), nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, r.id, &mut free)));
        let got = (
            text(&p.name),
            free,
            p.instanceCount,
            p.multiprocessorCount,
            p.sharedDecoderCount,
            p.sharedEncoderCount,
            p.sharedOfaCount,
            p.sharedCopyEngineCount,
            p.sharedJpegCount,
        );
        let want = (r.name.clone(), r.free, r.total, r.sm, r.dec, r.enc, r.ofa, r.ce, r.jpeg);
        assert_eq!(got, want, "compute profile {} (name, free, total, SM, DEC, ENC, OFA, CE, JPEG)", r.id);
    }
}

// ----- go-nvml's DGX A100 mock -----

fn go_nvml() -> serde_json::Value {
    serde_json::from_str(GO_NVML).expect("go-nvml-dgxa100.json")
}

fn field(v: &serde_json::Value, name: &str) -> u32 {
    v[name].as_u64().unwrap_or_else(|| panic!("{name} missing in {v}")) as u32
}

#[test]
fn go_nvml_dgxa100_profiles_where_they_are_right() {
    let (_g, _dir) = a100();
    let d = device(0);
    let doc = go_nvml();
    let guide: BTreeMap<u32, Lgip> = lgip().into_iter().map(|r| (r.id, r)).collect();
    for mock in doc["gpu_instance_profiles"].as_array().unwrap() {
        let index = field(mock, "index");
        let mut p: nvmlGpuInstanceProfileInfo_t = zeroed();
        ok(nv!(lib(), nvmlDeviceGetGpuInstanceProfileInfo(d, index, &mut p)));
        let got = (
            p.sliceCount,
            p.instanceCount,
            p.multiprocessorCount,
            p.copyEngineCount,
            p.decoderCount,
            p.encoderCount,
            p.jpegCount,
            p.ofaCount,
            p.memorySizeMB,
            p.isP2pSupported,
        );
        let want = (
            field(mock, "SliceCount"),
            field(mock, "InstanceCount"),
            field(mock, "MultiprocessorCount"),
            field(mock, "CopyEngineCount"),
            field(mock, "DecoderCount"),
            field(mock, "EncoderCount"),
            field(mock, "JpegCount"),
            field(mock, "OfaCount"),
            u64::from(field(mock, "MemorySizeMB")),
            field(mock, "IsP2pSupported"),
        );
        assert_eq!(got, want, "profile index {index}: go-nvml's values");
        // go-nvml's `Id` is the index (its error); NVML's id is the guide's.
        assert_eq!(field(mock, "Id"), index);
        assert!(guide.contains_key(&p.id), "index {index}: id {} is not one of the guide's", p.id);
        assert_eq!(guide[&p.id].sm, p.multiprocessorCount);
    }
    // Compute-instance profiles, inside a GPU instance of each profile.
    let cis = doc["compute_instance_profiles"].as_array().unwrap();
    for mock_gi in doc["gpu_instance_profiles"].as_array().unwrap() {
        let index = field(mock_gi, "index");
        let id = gi_profile_v2(d, index).unwrap().id;
        let (starts, size) = lgipp()[&id].clone();
        let gi = create_gi(d, id, starts[0], size);
        for mock in cis.iter().filter(|c| field(c, "gpu_instance_index") == index) {
            let ci_index = field(mock, "index");
            let mut p: nvmlComputeInstanceProfileInfo_t = zeroed();
            ok(nv!(
                lib(),
                nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi,
                    ci_index,
                    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                    &mut p
                )
            ));
            let got = (
                p.id,
                p.sliceCount,
                p.instanceCount,
                p.multiprocessorCount,
                p.sharedCopyEngineCount,
                p.sharedDecoderCount,
                p.sharedEncoderCount,
                p.sharedJpegCount,
                p.sharedOfaCount,
            );
            let want = (
                field(mock, "Id"),
                field(mock, "SliceCount"),
                field(mock, "InstanceCount"),
                field(mock, "MultiprocessorCount"),
                field(mock, "SharedCopyEngineCount"),
                field(mock, "SharedDecoderCount"),
                field(mock, "SharedEncoderCount"),
                field(mock, "SharedJpegCount"),
                field(mock, "SharedOfaCount"),
            );
            assert_eq!(got, want, "GPU instance profile index {index}, compute profile index {ci_index}");
        }
        // And no compute profile the mock lacks.
        let offered = (0..NVML_COMPUTE_INSTANCE_PROFILE_COUNT).filter(|&i| ci_profile_v2(gi, i).is_ok()).count();
        assert_eq!(offered, cis.iter().filter(|c| field(c, "gpu_instance_index") == index).count(), "index {index}");
        ok(nv!(lib(), nvmlGpuInstanceDestroy(gi)));
    }
}

#[test]
fn go_nvml_newer_mock_still_contradicts_the_guide() {
    let doc = go_nvml();
    let guide: BTreeMap<u32, Lgip> = lgip().into_iter().map(|r| (r.id, r)).collect();
    let placements = lgipp();
    let claims = doc["newer_mock_claims_contradicted"]["claims"].as_array().unwrap();
    assert!(!claims.is_empty());
    for c in claims {
        let id = field(c, "guide_profile_id");
        let contradicted = match c["field"].as_str().unwrap() {
            "placements" => {
                let mock: Vec<(u32, u32)> = c["mock"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_u64().unwrap() as u32))
                    .collect();
                let (starts, size) = &placements[&id];
                mock != starts.iter().map(|&s| (s, *size)).collect::<Vec<_>>()
            }
            "DecoderCount" => field(c, "mock") != guide[&id].dec,
            "MultiprocessorCount" => field(c, "mock") != guide[&id].sm,
            other => panic!("unknown field {other}"),
        };
        assert!(contradicted, "{c}: the guide agrees with it after all; move it to the checked facts");
    }
}

// ----- nvml.h's documented return codes -----

/// function → documented codes (`None`: any code).
fn documented() -> BTreeMap<&'static str, Option<BTreeSet<Ret>>> {
    RETURN_CODES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("version ") && !l.trim().is_empty())
        .map(|l| {
            let (f, rest) = l.split_once(':').unwrap();
            let codes = if rest.trim() == "ANY" {
                None
            } else {
                Some(
                    rest.split_whitespace()
                        .map(|c| codes::code_by_name(c).unwrap_or_else(|| panic!("{f}: unknown code {c}")))
                        .collect(),
                )
            };
            (f.trim(), codes)
        })
        .collect()
}

/// Codes the stand-in answers outside nvml.h's list, on purpose, with why.
const DEVIATIONS: &[(&str, &str, &str)] = &[
    (
        "*",
        "GPU_IS_LOST",
        "nvml.h documents GPU_IS_LOST for some calls only and says nothing of what the others answer for a GPU \
         off the bus; the stand-in answers the one code nvml.h defines for that, so the backend never mistakes a \
         lost GPU for a missing instance (INVALID_ARGUMENT)",
    ),
    (
        "*",
        "UNINITIALIZED",
        "a few calls (nvmlDeviceGetNumaNodeId, nvmlDeviceGetFieldValues, the GPM calls) do not list it, yet no \
         call can answer before nvmlInit",
    ),
];

fn allowed(doc: &BTreeMap<&str, Option<BTreeSet<Ret>>>, f: &str, code: Ret) -> bool {
    if code == SUCCESS {
        return true;
    }
    let name = codes::code_name(code).unwrap_or("?");
    if DEVIATIONS.iter().any(|(df, dc, _)| (*df == "*" || *df == f) && *dc == name) {
        return true;
    }
    match doc.get(f) {
        Some(None) => true,
        Some(Some(set)) => set.contains(&code),
        None => panic!("{f} is not in nvml-h-return-codes.txt"),
    }
}

/// Every call that takes a device handle, with live out-pointers.
fn device_calls(d: nvmlDevice_t, out: &mut Vec<(&'static str, Ret)>) {
    let l = lib();
    let mut u: c_uint = 0;
    let mut u2: c_uint = 0;
    let mut s = [0 as c_char; 96];
    let mut pci: nvmlPciInfo_t = zeroed();
    let mut mem: nvmlMemory_t = zeroed();
    let mut mem2: nvmlMemory_v2_t = zeroed();
    mem2.version = version::<nvmlMemory_v2_t>(2);
    let mut mask: [c_ulong; 2] = [0; 2];
    let mut h: nvmlDevice_t = ptr::null_mut();
    let mut gi: nvmlGpuInstance_t = ptr::null_mut();
    let mut gis = [ptr::null_mut(); 8];
    let mut ev: c_ulonglong = 0;
    let mut p1: nvmlGpuInstanceProfileInfo_t = zeroed();
    let mut p2: nvmlGpuInstanceProfileInfo_v2_t = zeroed();
    p2.version = version::<nvmlGpuInstanceProfileInfo_v2_t>(2);
    let mut p3: nvmlGpuInstanceProfileInfo_v3_t = zeroed();
    p3.version = version::<nvmlGpuInstanceProfileInfo_v3_t>(3);
    let mut placements = [nvmlGpuInstancePlacement_t { start: 0, size: 0 }; 8];
    let mut procs = [nvmlProcessInfo_t { pid: 0, usedGpuMemory: 0, gpuInstanceId: 0, computeInstanceId: 0 }; 16];
    let mut fields = [nvmlFieldValue_t { fieldId: 0, ..zeroed() }; 1];
    let placement = nvmlGpuInstancePlacement_t { start: 0, size: 8 };
    macro_rules! rec {
        ($f:ident($($a:expr),*)) => { out.push((stringify!($f), nv!(l, $f($($a),*)))) };
    }
    rec!(nvmlDeviceGetIndex(d, &mut u));
    rec!(nvmlDeviceGetUUID(d, s.as_mut_ptr(), 96));
    rec!(nvmlDeviceGetUUID(d, s.as_mut_ptr(), 4));
    rec!(nvmlDeviceGetName(d, s.as_mut_ptr(), 96));
    rec!(nvmlDeviceGetPciInfo_v3(d, &mut pci));
    rec!(nvmlDeviceGetMinorNumber(d, &mut u));
    rec!(nvmlDeviceGetMemoryInfo(d, &mut mem));
    rec!(nvmlDeviceGetMemoryInfo_v2(d, &mut mem2));
    rec!(nvmlDeviceGetCpuAffinity(d, 2, mask.as_mut_ptr()));
    rec!(nvmlDeviceGetCpuAffinityWithinScope(d, 2, mask.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE));
    rec!(nvmlDeviceGetMemoryAffinity(d, 2, mask.as_mut_ptr(), NVML_AFFINITY_SCOPE_NODE));
    rec!(nvmlDeviceGetNumaNodeId(d, &mut u));
    rec!(nvmlDeviceGetMigMode(d, &mut u, &mut u2));
    for index in [0, 4, 5, NVML_GPU_INSTANCE_PROFILE_COUNT] {
        rec!(nvmlDeviceGetGpuInstanceProfileInfo(d, index, &mut p1));
        rec!(nvmlDeviceGetGpuInstanceProfileInfoV(d, index, &mut p2));
        rec!(nvmlDeviceGetGpuInstanceProfileInfoV(d, index, (&raw mut p3).cast()));
    }
    for id in [19, 9, 0, 77] {
        let mut n: c_uint = 8;
        rec!(nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, id, placements.as_mut_ptr(), &mut n));
        let mut n: c_uint = 0;
        rec!(nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, id, ptr::null_mut(), &mut n));
        rec!(nvmlDeviceGetGpuInstanceRemainingCapacity(d, id, &mut u));
        let mut n: c_uint = 8;
        rec!(nvmlDeviceGetGpuInstances(d, id, gis.as_mut_ptr(), &mut n));
    }
    rec!(nvmlDeviceGetGpuInstanceById(d, 1, &mut gi));
    rec!(nvmlDeviceGetGpuInstanceById(d, 99, &mut gi));
    // A 7g where something already sits: no room (or not supported, or no permission).
    rec!(nvmlDeviceCreateGpuInstanceWithPlacement(d, 0, &placement, &mut gi));
    let bad = nvmlGpuInstancePlacement_t { start: 3, size: 4 };
    rec!(nvmlDeviceCreateGpuInstanceWithPlacement(d, 9, &bad, &mut gi));
    rec!(nvmlDeviceGetMaxMigDeviceCount(d, &mut u));
    rec!(nvmlDeviceGetMigDeviceHandleByIndex(d, 0, &mut h));
    rec!(nvmlDeviceGetMigDeviceHandleByIndex(d, 6, &mut h));
    rec!(nvmlDeviceGetMigDeviceHandleByIndex(d, 64, &mut h));
    rec!(nvmlDeviceGetDeviceHandleFromMigDeviceHandle(d, &mut h));
    rec!(nvmlDeviceIsMigDeviceHandle(d, &mut u));
    rec!(nvmlDeviceGetGpuInstanceId(d, &mut u));
    rec!(nvmlDeviceGetComputeInstanceId(d, &mut u));
    let mut n: c_uint = 16;
    rec!(nvmlDeviceGetComputeRunningProcesses_v3(d, &mut n, procs.as_mut_ptr()));
    let mut n: c_uint = 0;
    rec!(nvmlDeviceGetComputeRunningProcesses_v3(d, &mut n, ptr::null_mut()));
    fields[0].fieldId = nvml_wrapper_sys::bindings::field_id::NVML_FI_DEV_GET_GPU_RECOVERY_ACTION;
    rec!(nvmlDeviceGetFieldValues(d, 1, fields.as_mut_ptr()));
    rec!(nvmlDeviceGetSupportedEventTypes(d, &mut ev));
    let mut set: nvmlEventSet_t = ptr::null_mut();
    if nv!(l, nvmlEventSetCreate(&mut set)) == SUCCESS {
        rec!(nvmlDeviceRegisterEvents(d, nvmlEventTypeXidCriticalError as c_ulonglong, set));
        rec!(nvmlDeviceRegisterEvents(d, 1 << 40, set));
        let mut data: nvmlEventData_t = zeroed();
        rec!(nvmlEventSetWait_v2(set, &mut data, 0));
        rec!(nvmlEventSetFree(set));
    }
    rec!(nvmlDeviceSetMigMode(d, 7, &mut u));
}

/// Every call that takes a device handle, with null out-pointers.
fn null_out_calls(d: nvmlDevice_t, out: &mut Vec<(&'static str, Ret)>) {
    let l = lib();
    let mut u: c_uint = 0;
    macro_rules! rec {
        ($f:ident($($a:expr),*)) => { out.push((stringify!($f), nv!(l, $f($($a),*)))) };
    }
    rec!(nvmlDeviceGetIndex(d, ptr::null_mut()));
    rec!(nvmlDeviceGetUUID(d, ptr::null_mut(), 96));
    rec!(nvmlDeviceGetName(d, ptr::null_mut(), 96));
    rec!(nvmlDeviceGetPciInfo_v3(d, ptr::null_mut()));
    rec!(nvmlDeviceGetMinorNumber(d, ptr::null_mut()));
    rec!(nvmlDeviceGetMemoryInfo(d, ptr::null_mut()));
    rec!(nvmlDeviceGetMemoryInfo_v2(d, ptr::null_mut()));
    rec!(nvmlDeviceGetNumaNodeId(d, ptr::null_mut()));
    rec!(nvmlDeviceGetMigMode(d, ptr::null_mut(), &mut u));
    rec!(nvmlDeviceSetMigMode(d, 1, ptr::null_mut()));
    rec!(nvmlDeviceGetGpuInstanceProfileInfo(d, 0, ptr::null_mut()));
    rec!(nvmlDeviceGetGpuInstanceProfileInfoV(d, 0, ptr::null_mut()));
    rec!(nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, 19, ptr::null_mut(), ptr::null_mut()));
    rec!(nvmlDeviceGetGpuInstanceRemainingCapacity(d, 19, ptr::null_mut()));
    rec!(nvmlDeviceCreateGpuInstance(d, 19, ptr::null_mut()));
    rec!(nvmlDeviceCreateGpuInstanceWithPlacement(d, 19, ptr::null(), ptr::null_mut()));
    rec!(nvmlDeviceGetGpuInstances(d, 19, ptr::null_mut(), ptr::null_mut()));
    rec!(nvmlDeviceGetGpuInstanceById(d, 1, ptr::null_mut()));
    rec!(nvmlDeviceGetMaxMigDeviceCount(d, ptr::null_mut()));
    rec!(nvmlDeviceGetMigDeviceHandleByIndex(d, 0, ptr::null_mut()));
    rec!(nvmlDeviceIsMigDeviceHandle(d, ptr::null_mut()));
    rec!(nvmlDeviceGetComputeRunningProcesses_v3(d, ptr::null_mut(), ptr::null_mut()));
    rec!(nvmlDeviceGetFieldValues(d, 1, ptr::null_mut()));
    rec!(nvmlDeviceGetSupportedEventTypes(d, ptr::null_mut()));
}

/// Every call that takes a GPU-instance handle.
fn gi_calls(gi: nvmlGpuInstance_t, out: &mut Vec<(&'static str, Ret)>) {
    let l = lib();
    let mut u: c_uint = 0;
    let mut info: nvmlGpuInstanceInfo_t = zeroed();
    let mut p1: nvmlComputeInstanceProfileInfo_t = zeroed();
    let mut p2: nvmlComputeInstanceProfileInfo_v2_t = zeroed();
    p2.version = version::<nvmlComputeInstanceProfileInfo_v2_t>(2);
    let mut bad: nvmlComputeInstanceProfileInfo_v2_t = zeroed();
    bad.version = 2;
    let mut cis = [ptr::null_mut(); 8];
    let mut ci: nvmlComputeInstance_t = ptr::null_mut();
    let shared = NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED;
    macro_rules! rec {
        ($f:ident($($a:expr),*)) => { out.push((stringify!($f), nv!(l, $f($($a),*)))) };
    }
    rec!(nvmlGpuInstanceGetInfo(gi, &mut info));
    rec!(nvmlGpuInstanceGetInfo(gi, ptr::null_mut()));
    for index in [0, 2, 4, NVML_COMPUTE_INSTANCE_PROFILE_COUNT] {
        rec!(nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, shared, &mut p1));
        rec!(nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, index, 7, &mut p1));
        rec!(nvmlGpuInstanceGetComputeInstanceProfileInfoV(gi, index, shared, &mut p2));
        rec!(nvmlGpuInstanceGetComputeInstanceProfileInfoV(gi, index, shared, &mut bad));
        rec!(nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gi, index, &mut u));
        let mut n: c_uint = 8;
        rec!(nvmlGpuInstanceGetComputeInstances(gi, index, cis.as_mut_ptr(), &mut n));
    }
    rec!(nvmlGpuInstanceGetComputeInstanceById(gi, 0, &mut ci));
    rec!(nvmlGpuInstanceGetComputeInstanceById(gi, 9, &mut ci));
    rec!(nvmlGpuInstanceCreateComputeInstance(gi, 2, &mut ci));
    rec!(nvmlGpuInstanceCreateComputeInstance(gi, 6, &mut ci));
    rec!(nvmlGpuInstanceCreateComputeInstance(gi, 0, ptr::null_mut()));
    rec!(nvmlGpuInstanceDestroy(gi));
}

fn ci_calls(ci: nvmlComputeInstance_t, out: &mut Vec<(&'static str, Ret)>) {
    let l = lib();
    let mut info: nvmlComputeInstanceInfo_t = zeroed();
    out.push(("nvmlComputeInstanceGetInfo_v2", nv!(l, nvmlComputeInstanceGetInfo_v2(ci, &mut info))));
    out.push(("nvmlComputeInstanceGetInfo_v2", nv!(l, nvmlComputeInstanceGetInfo_v2(ci, ptr::null_mut()))));
    out.push(("nvmlComputeInstanceDestroy", nv!(l, nvmlComputeInstanceDestroy(ci))));
}

/// A MIG device handle's calls.
fn mig_calls(m: nvmlDevice_t, out: &mut Vec<(&'static str, Ret)>) {
    device_calls(m, out);
    let l = lib();
    let mut h: nvmlDevice_t = ptr::null_mut();
    out.push((
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        nv!(l, nvmlDeviceGetDeviceHandleFromMigDeviceHandle(m, &mut h)),
    ));
}

/// Drive every modelled failure of one configuration; the (function, code) pairs seen.
fn scenario(extra: &[(&str, &str)], lose_gpu_1: bool) -> Vec<(&'static str, Ret)> {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node.json");
    let state_s = state.display().to_string();
    let mut vars = vec![(ENV_SPEC, "1xA100-40GB+1xH100-80GB+1xA30"), (ENV_STATE, state_s.as_str()), (ENV_NO_MIG, "2")];
    vars.extend_from_slice(extra);
    let _g = setup(&vars);
    let l = lib();
    let mut out = Vec::new();

    // Before nvmlInit: every call with whatever arguments.
    let garbage: nvmlDevice_t = std::ptr::without_provenance_mut(0x1234);
    device_calls(garbage, &mut out);
    gi_calls(garbage.cast(), &mut out);
    ci_calls(garbage.cast(), &mut out);
    let mut n: c_uint = 0;
    out.push(("nvmlDeviceGetCount_v2", nv!(l, nvmlDeviceGetCount_v2(&mut n))));
    out.push(("nvmlShutdown", nv!(l, nvmlShutdown())));

    ok(nv!(l, nvmlInit_v2()));
    let (d0, d1, d2) = (device(0), device(1), device(2));
    // Some instances to be busy and in the way: a 3g (with a compute instance and a process) on each MIG GPU.
    let mut handles = Vec::new();
    for d in [d0, d1] {
        let placement = nvmlGpuInstancePlacement_t { start: 4, size: 4 };
        let mut gi = ptr::null_mut();
        let r = nv!(l, nvmlDeviceCreateGpuInstanceWithPlacement(d, 9, &placement, &mut gi));
        out.push(("nvmlDeviceCreateGpuInstanceWithPlacement", r));
        if r == SUCCESS {
            let mut ci = ptr::null_mut();
            let r = nv!(l, nvmlGpuInstanceCreateComputeInstance(gi, 2, &mut ci));
            out.push(("nvmlGpuInstanceCreateComputeInstance", r));
            handles.push((gi, (r == SUCCESS).then_some(ci)));
        }
    }
    if !handles.is_empty() {
        let sim = SimBackend::open(&state, None).unwrap();
        let mut info: nvmlGpuInstanceInfo_t = zeroed();
        ok(nv!(l, nvmlGpuInstanceGetInfo(handles[0].0, &mut info)));
        // A busy compute instance: IN_USE on destroy, then gone for the stale-handle calls.
        if handles[0].1.is_some() {
            sim.attach_process(0, info.id, 0, 4242, "python").unwrap();
        }
    }
    let mut mig = ptr::null_mut();
    if nv!(l, nvmlDeviceGetMigDeviceHandleByIndex(d0, 0, &mut mig)) == SUCCESS {
        mig_calls(mig, &mut out);
    }
    for d in [d0, d1, d2, ptr::null_mut(), garbage] {
        device_calls(d, &mut out);
        null_out_calls(d, &mut out);
    }
    for (gi, ci) in &handles {
        if let Some(ci) = ci {
            ci_calls(*ci, &mut out);
        }
        gi_calls(*gi, &mut out);
    }
    // The same handles once they are gone (stale).
    SimBackend::open(&state, None).unwrap().detach_process(0, 4242).ok();
    for (gi, ci) in &handles {
        if let Some(ci) = ci {
            out.push(("nvmlComputeInstanceDestroy", nv!(l, nvmlComputeInstanceDestroy(*ci))));
            ci_calls(*ci, &mut out);
        }
        out.push(("nvmlGpuInstanceDestroy", nv!(l, nvmlGpuInstanceDestroy(*gi))));
        gi_calls(*gi, &mut out);
    }
    // A GPU off the bus (Xid 79), with handles taken before.
    if lose_gpu_1 {
        let gi = create_gi(d1, 19, 0, 1);
        let ci = create_ci(gi, 0);
        let mut m = ptr::null_mut();
        ok(nv!(l, nvmlDeviceGetMigDeviceHandleByIndex(d1, 0, &mut m)));
        SimBackend::open(&state, None).unwrap().raise_xid(1, 79, None, None).unwrap();
        device_calls(d1, &mut out);
        mig_calls(m, &mut out);
        ci_calls(ci, &mut out);
        gi_calls(gi, &mut out);
        let mut h = ptr::null_mut();
        out.push(("nvmlDeviceGetHandleByIndex_v2", nv!(l, nvmlDeviceGetHandleByIndex_v2(1, &mut h))));
    }
    let mut h = ptr::null_mut();
    out.push(("nvmlDeviceGetHandleByIndex_v2", nv!(l, nvmlDeviceGetHandleByIndex_v2(9, &mut h))));
    out.push(("nvmlDeviceGetHandleByIndex_v2", nv!(l, nvmlDeviceGetHandleByIndex_v2(0, ptr::null_mut()))));
    out.push(("nvmlDeviceGetHandleByUUID", nv!(l, nvmlDeviceGetHandleByUUID(c"MIG-nope".as_ptr(), &mut h))));
    out.push(("nvmlDeviceGetHandleByUUID", nv!(l, nvmlDeviceGetHandleByUUID(ptr::null(), &mut h))));
    let mut n: c_uint = 0;
    out.push(("nvmlDeviceGetCount_v2", nv!(l, nvmlDeviceGetCount_v2(&mut n))));
    out.push(("nvmlDeviceGetCount_v2", nv!(l, nvmlDeviceGetCount_v2(ptr::null_mut()))));
    let mut s = [0 as c_char; 4];
    out.push(("nvmlSystemGetDriverVersion", nv!(l, nvmlSystemGetDriverVersion(s.as_mut_ptr(), 4))));
    out.push(("nvmlSystemGetNVMLVersion", nv!(l, nvmlSystemGetNVMLVersion(s.as_mut_ptr(), 4))));
    let mut cuda: c_int = 0;
    out.push(("nvmlSystemGetCudaDriverVersion_v2", nv!(l, nvmlSystemGetCudaDriverVersion_v2(&mut cuda))));
    out.push(("nvmlSystemGetCudaDriverVersion_v2", nv!(l, nvmlSystemGetCudaDriverVersion_v2(ptr::null_mut()))));
    out.push(("nvmlShutdown", nv!(l, nvmlShutdown())));
    out
}

#[test]
fn only_documented_return_codes() {
    let doc = documented();
    let mut seen: BTreeMap<&str, BTreeSet<Ret>> = BTreeMap::new();
    let mut wrong: BTreeSet<(String, &str)> = BTreeSet::new();
    let mut deviating: BTreeSet<(String, &str)> = BTreeSet::new();
    let runs: [(&[(&str, &str)], bool); 5] = [
        (&[], true),
        (&[(ENV_NO_PERMISSION, "1")], false),
        (&[(ENV_NON_ROOT, "1")], false),
        (&[(ENV_MIG_UUID, "fail")], false),
        (&[(ENV_DRIVER_VERSION, "460.32.03")], false),
    ];
    for (extra, lose) in runs {
        for (f, code) in scenario(extra, lose) {
            seen.entry(f).or_default().insert(code);
            if code != SUCCESS && doc[f].as_ref().is_some_and(|set| !set.contains(&code)) {
                deviating.insert((f.to_string(), codes::code_name(code).unwrap_or("?")));
            }
            if !allowed(&doc, f, code) {
                wrong.insert((f.to_string(), codes::code_name(code).unwrap_or("?")));
            }
        }
    }
    // Print the census: which codes each call was driven to.
    for (f, set) in &seen {
        let names: Vec<&str> = set.iter().map(|c| codes::code_name(*c).unwrap_or("?")).collect();
        println!("{f}: {}", names.join(" "));
    }
    println!("answered outside nvml.h's list, by DEVIATIONS: {deviating:?}");
    assert!(wrong.is_empty(), "codes nvml.h does not document for the call: {wrong:?}");
    // The census must reach the calls the backend makes, and their failure codes.
    for (f, code) in [
        ("nvmlGpuInstanceDestroy", "IN_USE"),
        ("nvmlComputeInstanceDestroy", "IN_USE"),
        ("nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES"),
        ("nvmlDeviceCreateGpuInstanceWithPlacement", "NO_PERMISSION"),
        ("nvmlDeviceSetMigMode", "NO_PERMISSION"),
        ("nvmlDeviceGetComputeRunningProcesses_v3", "NO_PERMISSION"),
        ("nvmlDeviceGetUUID", "UNKNOWN"),
        ("nvmlDeviceGetGpuInstanceProfileInfoV", "INVALID_ARGUMENT"),
        ("nvmlGpuInstanceGetComputeInstanceProfileInfoV", "INVALID_ARGUMENT"),
        ("nvmlDeviceGetMigDeviceHandleByIndex", "NOT_FOUND"),
        ("nvmlDeviceGetGpuInstanceById", "NOT_FOUND"),
        ("nvmlDeviceGetGpuInstanceProfileInfo", "NOT_SUPPORTED"),
        ("nvmlDeviceGetComputeRunningProcesses_v3", "GPU_IS_LOST"),
        ("nvmlDeviceGetCount_v2", "UNINITIALIZED"),
    ] {
        let code = codes::code_by_name(code).unwrap();
        assert!(seen.get(f).is_some_and(|s| s.contains(&code)), "{f} was never driven to {code}");
    }
}

#[test]
fn struct_versions_are_checked_like_nvml_h_says() {
    let (_g, _dir) = a100();
    let d = device(0);
    // nvml.h's macros: NVML_STRUCT_VERSION(data, ver) = sizeof | ver << 24.
    assert_eq!(version::<nvmlMemory_v2_t>(2), 0x0200_0028);
    for line in RETURN_CODES.lines().filter(|l| l.starts_with("version ")) {
        assert!(line.contains(" 2") || line.contains(" 3"), "{line}");
    }
    let mut p: nvmlGpuInstanceProfileInfo_v2_t = zeroed();
    for (v, want) in [
        (version::<nvmlGpuInstanceProfileInfo_v2_t>(2), SUCCESS),
        (version::<nvmlGpuInstanceProfileInfo_v3_t>(3), SUCCESS),
        (version::<nvmlGpuInstanceProfileInfo_v2_t>(4), codes::INVALID_ARGUMENT),
        (version::<nvmlGpuInstanceProfileInfo_v2_t>(1), codes::INVALID_ARGUMENT),
        (2, codes::INVALID_ARGUMENT),
        (0, codes::INVALID_ARGUMENT),
    ] {
        let mut v3: nvmlGpuInstanceProfileInfo_v3_t = zeroed();
        v3.version = v;
        let r = if v >> 24 == 3 {
            nv!(lib(), nvmlDeviceGetGpuInstanceProfileInfoV(d, 0, (&raw mut v3).cast()))
        } else {
            p.version = v;
            nv!(lib(), nvmlDeviceGetGpuInstanceProfileInfoV(d, 0, &mut p))
        };
        assert_eq!(r, want, "version {v:#x}");
    }
    assert_eq!(text(&p.name), "MIG 1g.5gb");
}

/// The simulated node itself (what `--backend sim` and the stand-in both stand on), without the
/// C ABI in between: the same rows of the guide.
#[test]
fn the_simulated_node_matches_the_guide_too() {
    use tessera_gpu::MigBackend;
    let sim = SimBackend::in_memory(&tessera_gpu::NodeSpec::parse("1xA100-40GB").unwrap());
    let profiles = sim.gpu_instance_profiles(0).unwrap();
    let rows = lgip();
    assert_eq!(
        profiles.iter().map(|p| p.id).collect::<BTreeSet<_>>(),
        rows.iter().map(|r| r.id).collect::<BTreeSet<_>>()
    );
    for r in &rows {
        let p = profiles.iter().find(|p| p.id == r.id).unwrap();
        let got = (
            format!("MIG {}", p.name),
            u32::from(p.max_count),
            p.sm_count,
            p.decoders,
            p.encoders,
            p.copy_engines,
            p.jpegs,
            p.ofas,
        );
        assert_eq!(got, (r.name.clone(), r.total, r.sm, r.dec, r.enc, r.ce, r.jpeg, r.ofa), "profile {}", r.id);
        assert!((p.memory_mib as f64 / 1024.0 - r.gib).abs() <= 0.005 + 1e-9, "profile {} memory", r.id);
    }
    for (id, (starts, size)) in lgipp() {
        let got: Vec<(u32, u32)> =
            sim.possible_placements(0, id).unwrap().iter().map(|p| (u32::from(p.start), u32::from(p.size))).collect();
        assert_eq!(got, starts.iter().map(|&s| (s, size)).collect::<Vec<_>>(), "placements of {id}");
    }
}
