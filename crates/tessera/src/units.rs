//! Sizes, durations and times as people type and read them: `10GB` (decimal) or `10GiB`
//! (binary); `90s`, `30m`, `1h30m`, `2d`; `2h` ago or `2026-12-01` for `--since`; local times
//! in tables.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Mebibytes (rounded up) from a size with its unit, in any case: decimal `GB` or binary `GiB`
/// and their kin (`tessera_host::parse_size_mib`, the one reader of sizes). A bare number, or a
/// one-letter unit (`10G`: Slurm means GiB, others GB), is refused with the forms accepted.
pub fn parse_mib(text: &str) -> Result<u64, String> {
    tessera_host::parse_size_mib(text).map_err(|e| e.to_string())
}

/// Milliseconds from `90s`, `30m`, `1h30m`, `2d`, `1500ms`, or a bare number of seconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("an empty duration; write e.g. 30m, 1h or 2h30m".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(|| format!("'{text}' is too long"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if n_end == 0 {
            return Err(format!("'{text}' is not a duration; write e.g. 30m, 1h or 2h30m"));
        }
        let n: u64 = rest[..n_end].parse().map_err(|_| format!("'{text}': number too large"))?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..u_end];
        rest = &rest[u_end..];
        let ms = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(format!("'{text}': unknown unit '{other}'; use ms, s, m, h or d")),
        };
        total = n.checked_mul(ms).and_then(|v| total.checked_add(v)).ok_or_else(|| format!("'{text}' is too long"))?;
    }
    if total == 0 {
        return Err(format!("'{text}' is zero"));
    }
    Ok(total)
}

/// `1h30m`, `45s`, `250ms`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    for (v, u) in [(d, "d"), (h, "h"), (m, "m"), (sec, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{u}"));
        }
    }
    out
}

/// A duration in at most two units, for table columns: `42s`, `5m30s`, `2h05m`, `3d04h`.
pub fn short_duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

fn zoned(ms: u64, tz: &TimeZone) -> Option<jiff::Zoned> {
    let ts = Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(ts.to_zoned(tz.clone()))
}

/// A time for a table column, in the local time zone: `14:02:11` today, `Dec 01 14:02` this
/// year, `2025-12-01` before.
pub fn table_time(ms: u64, now_ms: u64) -> String {
    let tz = TimeZone::system();
    let (Some(t), Some(now)) = (zoned(ms, &tz), zoned(now_ms, &tz)) else { return "-".into() };
    if t.date() == now.date() {
        t.strftime("%H:%M:%S").to_string()
    } else if t.year() == now.year() {
        t.strftime("%b %d %H:%M").to_string()
    } else {
        t.strftime("%Y-%m-%d").to_string()
    }
}

/// A time in full, in the local time zone: `2026-12-01 14:02:11.250 CET`.
pub fn full_time(ms: u64) -> String {
    match zoned(ms, &TimeZone::system()) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S%.3f %Z").to_string(),
        None => format!("{ms} ms after the epoch"),
    }
}

/// `--since`: a duration back from now (`2h`, `30m`, `1d`), a local date (`2026-12-01`, from
/// its midnight) or a local date and time (`2026-12-01T14:00`, `2026-12-01 14:00:30`). Returns
/// milliseconds since the epoch.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    let forms = "write a duration back from now (2h, 30m, 1d) or a local date or time (2026-12-01, 2026-12-01T14:00)";
    if t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('-') {
        let tz = TimeZone::system();
        let civil = match t.parse::<jiff::civil::DateTime>() {
            Ok(dt) => dt,
            Err(_) => t
                .parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
                .map_err(|e| format!("'{text}' is not a date or time ({e}); {forms}"))?,
        };
        let ms = civil
            .to_zoned(tz)
            .map_err(|e| format!("'{text}' is not a time in this time zone ({e})"))?
            .timestamp()
            .as_millisecond();
        return u64::try_from(ms).map_err(|_| format!("'{text}' is before 1970"));
    }
    let back = parse_duration_ms(t).map_err(|_| format!("'{text}' is not a time; {forms}"))?;
    Ok(now_ms.saturating_sub(back))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("10GiB", Ok(10240)),
            // 10^10 bytes is 9,536.7 MiB: a 1g.10gb (9,984 MiB) holds it.
            ("10GB", Ok(9537)),
            ("512MiB", Ok(512)),
            ("512MB", Ok(489)),
            ("1.5TiB", Ok(1_572_864)),
            ("2TB", Ok(1_907_349)),
            ("1KiB", Ok(1)),
            ("10 GiB", Ok(10240)),
            ("10", Err("'10' has no unit; write MB, GB, TB (decimal")),
            ("10G", Err("'G', which could mean GB (decimal) or GiB (binary); write 10GB or 10GiB")),
            ("10gb", Ok(9537)),
            ("4gib", Ok(4096)),
            ("10g", Err("'g', which could mean GB (decimal) or GiB (binary); write 10GB or 10GiB")),
            ("ten", Err("'ten' is not a size")),
            ("10PB", Err("unknown unit 'PB'")),
            ("0GiB", Err("is not a positive size")),
            ("1.2.3GB", Err("is not a size")),
            ("99999999999TiB", Err("larger than any machine")),
        ];
        for (t, want) in cases {
            match (parse_mib(t), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{t}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{t}: {e}"),
                (got, w) => panic!("{t}: got {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn since_and_short_durations() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000));
        assert!(parse_since("2026-12-01", now).is_ok());
        assert!(parse_since("2026-12-01T14:00", now).is_ok());
        assert!(parse_since("2026-13-01", now).unwrap_err().contains("is not a date or time"));
        assert_eq!(
            parse_since("yesterday", now).unwrap_err(),
            "'yesterday' is not a time; write a duration back from now (2h, 30m, 1d) or a local date or time \
             (2026-12-01, 2026-12-01T14:00)"
        );
        assert_eq!(short_duration_ms(42_000), "42s");
        assert_eq!(short_duration_ms(330_000), "5m30s");
        assert_eq!(short_duration_ms(7_500_000), "2h05m");
        assert_eq!(short_duration_ms(273_600_000), "3d04h");
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("90", Ok(90_000)),
            ("90s", Ok(90_000)),
            ("30m", Ok(1_800_000)),
            ("1h30m", Ok(5_400_000)),
            ("2d", Ok(172_800_000)),
            ("1500ms", Ok(1500)),
            ("1x", Err("unknown unit 'x'")),
            ("h", Err("is not a duration")),
            ("0s", Err("is zero")),
            ("", Err("empty")),
        ];
        for (t, want) in cases {
            match (parse_duration_ms(t), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, *w, "{t}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{t}: {e}"),
                (got, w) => panic!("{t}: got {got:?}, want {w:?}"),
            }
        }
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(250), "250ms");
    }
}
