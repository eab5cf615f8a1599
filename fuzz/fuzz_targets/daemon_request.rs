//! libFuzzer's entry for `tessera_fuzz::daemon_request` (see crates/tessera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::daemon_request(data));
