//! Signal names as people write them (`SIGUSR1`, `USR1`, `usr1`, `10`), for `--preempt-signal`
//! and `jobs.preempt_signal`.

/// The signals a job may ask to be preempted with: what a program can catch and act on.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("XCPU", libc::SIGXCPU),
    ("PWR", libc::SIGPWR),
    ("WINCH", libc::SIGWINCH),
];

/// A signal by name or number; an error names the accepted ones.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(s, _)| *s == name) {
        return Ok(*n);
    }
    if let Ok(n) = t.parse::<i32>()
        && SIGNALS.iter().any(|(_, s)| *s == n)
    {
        return Ok(n);
    }
    let names: Vec<String> = SIGNALS.iter().map(|(s, _)| format!("SIG{s}")).collect();
    Err(format!("unknown signal '{text}' (use one of {})", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        for (text, want) in [("SIGUSR1", libc::SIGUSR1), ("usr2", libc::SIGUSR2), ("TERM", libc::SIGTERM), ("10", 10)] {
            assert_eq!(parse_signal(text), Ok(want), "{text}");
        }
        for bad in ["SIGKILL", "9", "FOO", "", "-1"] {
            assert!(parse_signal(bad).unwrap_err().contains("SIGUSR1"), "{bad}");
        }
    }
}
