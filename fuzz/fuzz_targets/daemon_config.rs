//! libFuzzer's entry for `tessera_fuzz::daemon_config` (see crates/tessera-fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::daemon_config(data));
