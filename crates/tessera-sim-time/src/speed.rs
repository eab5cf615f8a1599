//! The speed model: how fast a job runs on a slice, relative to a whole GPU.
//!
//! Built from MISO's measured A100-40GB MIG iteration latencies (`data/a100_mig_iteration_latency.csv`,
//! MIT, commit `39b1ee69`). For each model class (bert, cyclegan, deepspeech2, embedding, gnn,
//! mobilenet, resnet, transformer) and each compute-slice count measured (1, 2, 3, 4, 7 of 7), the
//! speed is the geometric mean of `speed_vs_7g` over the batch sizes that were measured on that
//! slice (large batches that did not fit a small slice have no row and do not count). A slice
//! count with no measurement at all (bert on 1g) is extrapolated in proportion from the next
//! larger one. The curve is made non-decreasing (a larger slice is never slower) and capped at 1.
//! The default curve (a job with an empty `model_class`) is the geometric mean of the 8 classes.
//!
//! Other GPU models map by compute fraction (slices / the model's full slices): the speed at
//! fraction `f` interpolates linearly between the measured points `(k/7, s_k)` and `(0, 0)`; MPS
//! clients use the same curve at their active-thread fraction.

use std::collections::BTreeMap;

use crate::error::TimeError;

const CSV: &str = include_str!("../data/a100_mig_iteration_latency.csv");

/// The MISO model classes, in the order the docs list them.
pub const MODEL_CLASSES: [&str; 8] =
    ["bert", "cyclegan", "deepspeech2", "embedding", "gnn", "mobilenet", "resnet", "transformer"];

/// Compute slices of the measured A100 profiles (of 7).
const SLICES: [u8; 5] = [1, 2, 3, 4, 7];

/// Speed relative to a whole GPU at each measured compute fraction, one curve per model class.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedModel {
    /// Class → speeds at 1, 2, 3, 4 and 7 slices of 7.
    curves: BTreeMap<String, [f64; 5]>,
    default: [f64; 5],
}

impl SpeedModel {
    /// The model built from the embedded MISO table.
    pub fn miso() -> Self {
        // Parsing embedded, tested data: the table is checked by the crate's tests.
        let mut logs: BTreeMap<String, [Vec<f64>; 5]> = BTreeMap::new();
        for line in CSV.lines().skip(1) {
            let f: Vec<&str> = line.trim().split(',').collect();
            if f.len() < 8 {
                continue;
            }
            let (Ok(slices), Ok(speed)) = (f[3].parse::<u8>(), f[7].parse::<f64>()) else { continue };
            let Some(pos) = SLICES.iter().position(|s| *s == slices) else { continue };
            if speed > 0.0 && speed.is_finite() {
                logs.entry(f[0].to_string()).or_default()[pos].push(speed);
            }
        }
        let mut curves = BTreeMap::new();
        for (class, per) in logs {
            let mut c = [0.0; 5];
            for (i, v) in per.iter().enumerate() {
                c[i] = geo_mean(v);
            }
            curves.insert(class, finish_curve(c));
        }
        let mut default = [0.0; 5];
        for (i, d) in default.iter_mut().enumerate() {
            let v: Vec<f64> = curves.values().map(|c| c[i]).collect();
            *d = geo_mean(&v);
        }
        SpeedModel { curves, default: finish_curve(default) }
    }

    /// The known classes.
    pub fn classes(&self) -> Vec<&str> {
        self.curves.keys().map(String::as_str).collect()
    }

    /// The speeds of a class at 1, 2, 3, 4 and 7 slices of 7 (empty class: the default curve).
    pub fn curve(&self, class: &str) -> Option<[f64; 5]> {
        if class.is_empty() { Some(self.default) } else { self.curves.get(class).copied() }
    }

    /// Check a job's class, with an error naming the job and the valid classes.
    pub fn check(&self, job: &str, class: &str) -> Result<(), TimeError> {
        match self.curve(class) {
            Some(_) => Ok(()),
            None => Err(TimeError::UnknownModelClass {
                job: job.to_string(),
                class: class.to_string(),
                valid: self.classes().join(", "),
            }),
        }
    }

    /// Speed (0..=1) of a job of `class` with `fraction` (0..=1) of a GPU's compute.
    pub fn speed(&self, class: &str, fraction: f64) -> f64 {
        let c = self.curve(class).unwrap_or(self.default);
        interpolate(&c, fraction)
    }
}

fn geo_mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// Fill unmeasured points (in proportion to the next larger measured one), cap at 1, make the
/// curve non-decreasing.
fn finish_curve(mut c: [f64; 5]) -> [f64; 5] {
    c[4] = 1.0;
    for i in (0..4).rev() {
        if c[i] <= 0.0 {
            c[i] = c[i + 1] * f64::from(SLICES[i]) / f64::from(SLICES[i + 1]);
        }
    }
    let mut best = 0.0f64;
    for v in &mut c {
        *v = v.min(1.0).max(best);
        best = *v;
    }
    c
}

/// Speed at `fraction` of a GPU's compute on a curve of [`SpeedModel::curve`].
pub(crate) fn interpolate(c: &[f64; 5], fraction: f64) -> f64 {
    let f = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    let mut prev = (0.0, 0.0);
    for (i, s) in SLICES.iter().enumerate() {
        let x = f64::from(*s) / 7.0;
        if f <= x + 1e-12 {
            let (x0, y0) = prev;
            return if x - x0 <= 0.0 { c[i] } else { y0 + (c[i] - y0) * (f - x0) / (x - x0) };
        }
        prev = (x, c[i]);
    }
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_data() {
        let m = SpeedModel::miso();
        assert_eq!(m.classes(), MODEL_CLASSES.to_vec());
        // mobilenet on 1g: geometric mean of 0.8102, 0.7075, 0.5597, 0.398.
        let want = (0.8102f64 * 0.7075 * 0.5597 * 0.398).powf(0.25);
        assert!((m.speed("mobilenet", 1.0 / 7.0) - want).abs() < 1e-9);
        // resnet 3g has one measurement above 1 (1.0046): capped, and the curve never falls.
        let r = m.curve("resnet").unwrap_or_default();
        assert!(r.windows(2).all(|w| w[0] <= w[1]) && r[4] == 1.0, "{r:?}");
        // bert has no 1g row: extrapolated as half its 2g speed.
        let b = m.curve("bert").unwrap_or_default();
        assert!((b[0] - b[1] / 2.0).abs() < 1e-12);
        assert_eq!(m.speed("", 1.0), 1.0);
        assert_eq!(m.speed("gnn", 0.0), 0.0);
        // Interpolation between 4g and 7g.
        let t = m.curve("transformer").unwrap_or_default();
        let mid = m.speed("transformer", 5.5 / 7.0);
        assert!((mid - (t[3] + t[4]) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn unknown_class_names_job_and_classes() {
        let e = SpeedModel::miso().check("j7", "llama").unwrap_err().to_string();
        assert!(e.contains("j7") && e.contains("llama") && e.contains("bert, cyclegan"), "{e}");
    }
}
