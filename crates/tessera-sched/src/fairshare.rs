//! Weighted fair share: each tenant's decayed usage in slice-milliseconds.
//!
//! Usage is compute slices × milliseconds. It decays exponentially with a half-life
//! (`SchedulerConfig::fair_share_half_life_ms`): usage `u` recorded at `t0` counts as
//! `u · 2^-((t − t0) / half_life)` at `t`. A half-life of 0 forgets everything at once.
//! The ledger only moves forward: a clock that goes backwards decays nothing.

use std::collections::BTreeMap;

/// Usage below this many slice-ms is dropped, so the ledger does not grow without end.
const NEGLIGIBLE: f64 = 1e-6;

/// Decayed usage per tenant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    usage: BTreeMap<String, f64>,
    /// The time the stored values are valid at.
    at_ms: Option<u64>,
    half_life_ms: u64,
}

impl Ledger {
    pub fn new(half_life_ms: u64) -> Self {
        Ledger { usage: BTreeMap::new(), at_ms: None, half_life_ms }
    }

    fn factor(&self, elapsed_ms: u64) -> f64 {
        if elapsed_ms == 0 {
            return 1.0;
        }
        if self.half_life_ms == 0 {
            return 0.0;
        }
        (-(elapsed_ms as f64) / self.half_life_ms as f64).exp2()
    }

    /// Decay every tenant's usage to `now_ms`.
    pub fn decay_to(&mut self, now_ms: u64) {
        match self.at_ms {
            Some(at) if now_ms > at => {
                let f = self.factor(now_ms - at);
                for v in self.usage.values_mut() {
                    *v *= f;
                }
                self.usage.retain(|_, v| *v > NEGLIGIBLE);
                self.at_ms = Some(now_ms);
            }
            Some(_) => {}
            None => self.at_ms = Some(now_ms),
        }
    }

    /// Add `slice_ms` to a tenant's usage at `now_ms` (decaying everyone first).
    pub fn charge(&mut self, tenant: &str, slice_ms: f64, now_ms: u64) {
        self.decay_to(now_ms);
        if slice_ms.is_finite() && slice_ms > 0.0 {
            *self.usage.entry(tenant.to_string()).or_insert(0.0) += slice_ms;
        }
    }

    /// A tenant's usage as of the last decay.
    pub fn usage(&self, tenant: &str) -> f64 {
        self.usage.get(tenant).copied().unwrap_or(0.0)
    }

    /// Every tenant with usage, by name.
    pub fn all(&self) -> &BTreeMap<String, f64> {
        &self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_after_one_half_life() {
        let mut l = Ledger::new(1000);
        l.charge("a", 800.0, 0);
        l.decay_to(1000);
        assert!((l.usage("a") - 400.0).abs() < 1e-9);
        l.decay_to(500); // backwards: nothing happens
        assert!((l.usage("a") - 400.0).abs() < 1e-9);
    }

    #[test]
    fn zero_half_life_forgets() {
        let mut l = Ledger::new(0);
        l.charge("a", 10.0, 0);
        l.charge("b", 5.0, 1);
        assert_eq!(l.usage("a"), 0.0);
        assert_eq!(l.usage("b"), 5.0);
    }

    #[test]
    fn ignores_nonsense_charges() {
        let mut l = Ledger::new(10);
        l.charge("a", f64::NAN, 0);
        l.charge("a", -3.0, 0);
        assert_eq!(l.usage("a"), 0.0);
    }
}
