//! Kubernetes quantities (`10Gi`, `500m`, `1.5e3`), read exactly: what ResourceSlice counters and
//! claim configurations carry. One reader for the DRA driver and its allocator model.

/// Why a quantity cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity '{value}': {reason}")]
pub struct QuantityError {
    pub value: String,
    pub reason: &'static str,
}

/// A Kubernetes quantity in units of 10^-9 (so `1`, `10240Mi`, `500m` and `1.5Gi` are exact).
pub fn parse_quantity(value: &str) -> Result<i128, QuantityError> {
    let bad = |reason| QuantityError { value: value.to_string(), reason };
    let s = value.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad("no number"));
    }
    if frac.len() > 9 {
        return Err(bad("more than 9 decimal places"));
    }
    let digits = |d: &str| -> Result<i128, QuantityError> {
        if d.is_empty() { Ok(0) } else { d.parse::<i128>().map_err(|_| bad("not a number")) }
    };
    let frac_nano = digits(frac)? * 10i128.pow(9 - frac.len() as u32);
    let nano =
        digits(int)?.checked_mul(1_000_000_000).and_then(|v| v.checked_add(frac_nano)).ok_or(bad("too large"))?;
    let scaled = |num: i128, den: i128| -> Result<i128, QuantityError> {
        let v = nano.checked_mul(num).ok_or(bad("too large"))?;
        if v % den != 0 {
            return Err(bad("finer than 10^-9"));
        }
        Ok(v / den)
    };
    let v = match suffix {
        "" => nano,
        "Ki" => scaled(1 << 10, 1)?,
        "Mi" => scaled(1 << 20, 1)?,
        "Gi" => scaled(1 << 30, 1)?,
        "Ti" => scaled(1 << 40, 1)?,
        "Pi" => scaled(1 << 50, 1)?,
        "Ei" => scaled(1 << 60, 1)?,
        "n" => scaled(1, 1_000_000_000)?,
        "u" => scaled(1, 1_000_000)?,
        "m" => scaled(1, 1_000)?,
        "k" => scaled(1_000, 1)?,
        "M" => scaled(1_000_000, 1)?,
        "G" => scaled(1_000_000_000, 1)?,
        "T" => scaled(1_000_000_000_000, 1)?,
        "P" => scaled(1_000_000_000_000_000, 1)?,
        "E" => scaled(1_000_000_000_000_000_000, 1)?,
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad("bad exponent"))?;
            if !(-9..=18).contains(&exp) {
                return Err(bad("exponent out of range"));
            }
            if exp >= 0 { scaled(10i128.pow(exp as u32), 1)? } else { scaled(1, 10i128.pow(exp.unsigned_abs()))? }
        }
        _ => return Err(bad("unknown suffix")),
    };
    Ok(if neg { -v } else { v })
}
