//! `tessera-exec-shim --job-dir DIR` (or `--standby`): the shim as a stand-alone program, the same body as the
//! hidden `tessera shim` subcommand. The crate's end-to-end tests launch it (Cargo builds it for
//! them); a deployment may use either.

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os().skip(1).eq([std::ffi::OsString::from("--standby")]) {
        return ExitCode::from(u8::try_from(tessera_exec::run_standby_shim()).unwrap_or(2));
    }
    match tessera_exec::parse_shim_args(std::env::args_os().skip(1)) {
        Ok(dir) => ExitCode::from(u8::try_from(tessera_exec::run_shim(&dir)).unwrap_or(2)),
        Err(e) => {
            // Not `eprintln!`: a full disk or a closed stderr must not turn exit 2 into a panic.
            let _ = writeln!(std::io::stderr().lock(), "tessera-exec-shim: {e}");
            ExitCode::from(2)
        }
    }
}
