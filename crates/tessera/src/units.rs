//! Sizes and durations as people type them: `10GiB`, `512M`, `1.5T`; `90s`, `30m`, `1h30m`, `2d`.

/// Mebibytes from `10GiB`, `10G`, `10GB` (binary units, as nvidia-smi and Slurm use), `512MiB`,
/// `1TiB`, or a bare number of MiB.
pub fn parse_mib(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("'{text}' is not a size; write e.g. 10GiB, 512MiB or 1TiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1.0,
        "g" | "gb" | "gib" => 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0,
        "k" | "kb" | "kib" => 1.0 / 1024.0,
        other => return Err(format!("'{text}': unknown size unit '{other}'; use KiB, MiB, GiB or TiB")),
    };
    let mib = (value * factor).ceil();
    if !(mib.is_finite() && mib > 0.0 && mib < 1e15) {
        return Err(format!("'{text}' is not a positive size"));
    }
    Ok(mib as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("10GiB", Ok(10240)),
            ("10G", Ok(10240)),
            ("10gb", Ok(10240)),
            ("512MiB", Ok(512)),
            ("512", Ok(512)),
            ("1.5T", Ok(1572864)),
            ("1k", Ok(1)),
            ("10 GiB", Ok(10240)),
            ("ten", Err("'ten' is not a size")),
            ("10PB", Err("unknown size unit 'pb'")),
            ("0G", Err("is not a positive size")),
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
