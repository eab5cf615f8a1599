//! The wall clock: milliseconds since the Unix epoch, the one clock the shell reads. The pure
//! crates take time as an argument; the daemon, the store and the supervisor stamp events with
//! this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }
}
