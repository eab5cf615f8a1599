//! Summary statistics the reports share: means with 95% confidence intervals over seeds,
//! percentiles, and Jain's fairness index.

use serde::Serialize;

/// Mean of `xs`; 0 for none.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// The `p`-th percentile (0–100) by linear interpolation between closest ranks (NumPy's
/// default); `xs` need not be sorted. 0 for none.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, p)
}

/// [`percentile`] of an already sorted slice.
pub fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Jain's fairness index of the shares: 1 when all are equal, 1/n when one takes everything.
pub fn jain(shares: &[f64]) -> f64 {
    let s: f64 = shares.iter().sum();
    let sq: f64 = shares.iter().map(|x| x * x).sum();
    if shares.is_empty() || sq == 0.0 { 1.0 } else { s * s / (shares.len() as f64 * sq) }
}

/// A mean over seeds with the half-width of its 95% confidence interval (Student's t).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    /// Half-width of the 95% confidence interval; 0 with fewer than two samples.
    pub ci95: f64,
    pub n: usize,
}

/// Two-sided 95% Student's t quantiles for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

impl Estimate {
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let m = mean(xs);
        if n < 2 {
            return Estimate { mean: m, ci95: 0.0, n };
        }
        let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
        let t = T95.get(n - 2).copied().unwrap_or(1.96);
        Estimate { mean: m, ci95: t * (var / n as f64).sqrt(), n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 99.0), 4.96);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(jain(&[1.0, 1.0, 1.0]), 1.0);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        let e = Estimate::of(&[1.0, 2.0, 3.0]);
        assert_eq!(e.mean, 2.0);
        assert!((e.ci95 - 4.303 * (1.0f64 / 3.0).sqrt()).abs() < 1e-9, "{e:?}");
        assert_eq!(Estimate::of(&[5.0]).ci95, 0.0);
    }
}
