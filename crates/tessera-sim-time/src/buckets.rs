//! A quantity integrated over virtual time into equal buckets of a window: the utilisation
//! series. A span is split at the bucket edges by walking the buckets by index, each edge
//! computed one way, so no part of a span lands in a bucket it does not overlap (recomputing the
//! index from a time, as before, put the rest of a span into the previous bucket whenever
//! floating point placed an edge a hair below itself, and buckets rose above 100%).

/// `∫ value dt` in each of `n` equal buckets of the window [start, end).
#[derive(Debug, Clone)]
pub(crate) struct TimeBuckets {
    start: f64,
    end: f64,
    sums: Vec<f64>,
}

impl TimeBuckets {
    pub(crate) fn new(start: f64, end: f64, n: usize) -> TimeBuckets {
        TimeBuckets { start, end, sums: vec![0.0; n] }
    }

    fn width(&self) -> f64 {
        (self.end - self.start) / self.sums.len() as f64
    }

    /// Where bucket `i` begins (`n`: the window's end).
    fn edge(&self, i: usize) -> f64 {
        if i >= self.sums.len() { self.end } else { self.start + i as f64 * self.width() }
    }

    /// Add `value`, held from `from` to `to`, to the buckets it overlaps (the part inside the
    /// window; spans are expected not to overlap one another).
    pub(crate) fn add(&mut self, from: f64, to: f64, value: f64) {
        let n = self.sums.len();
        let (from, to) = (from.max(self.start), to.min(self.end));
        if n == 0 || !(to > from && self.width() > 0.0) {
            return;
        }
        let guess = ((from - self.start) / self.width()).floor();
        let mut b = if guess.is_finite() && guess > 0.0 { (guess as usize).min(n - 1) } else { 0 };
        // The division may be a hair off at an edge: settle on the bucket whose edges hold `from`.
        while b > 0 && from < self.edge(b) {
            b -= 1;
        }
        while b + 1 < n && from >= self.edge(b + 1) {
            b += 1;
        }
        let mut a = from;
        while a < to && b < n {
            let stop = self.edge(b + 1).min(to);
            if stop > a {
                self.sums[b] += value * (stop - a);
                a = stop;
            }
            b += 1;
        }
    }

    /// Each bucket as (its middle, the mean value over it).
    pub(crate) fn means(&self) -> Vec<(f64, f64)> {
        (0..self.sums.len())
            .map(|b| {
                let (lo, hi) = (self.edge(b), self.edge(b + 1));
                let mean = if hi > lo { self.sums[b] / (hi - lo) } else { 0.0 };
                ((lo + hi) / 2.0, mean)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The windows of this repository's documented runs (openb's last 30 days, 70% and 90% load)
    /// and awkward ones: a full allocation held through them, cut into spans at every event,
    /// is a mean of exactly 1 in every bucket.
    #[test]
    fn full_allocation_is_one_in_every_bucket() {
        for (start, end, n) in [(292_118.4, 2_423_906.7, 240), (123_456.789, 2_789_767.3, 240), (0.1, 0.7, 3)] {
            let mut buckets = TimeBuckets::new(start, end, n);
            // Spans ending on bucket edges (computed as the old code did) and between them.
            let width = (end - start) / n as f64;
            let mut cuts: Vec<f64> = (0..=n).map(|i| start + i as f64 * width).collect();
            cuts.extend((0..n).map(|i| start + (i as f64 + 0.37) * width));
            cuts.sort_by(f64::total_cmp);
            for w in cuts.windows(2) {
                buckets.add(w[0], w[1], 7.0);
            }
            for (t, mean) in buckets.means() {
                assert!((mean - 7.0).abs() < 1e-9, "window ({start}, {end}): bucket at {t} has mean {mean}");
            }
        }
    }

    proptest! {
        /// Whatever the window and the spans, every bucket's mean lies between the smallest and
        /// the largest value held, and nothing is lost or counted twice.
        #[test]
        fn buckets_hold_a_mean_within_the_values(
            start in 0.0f64..1e7,
            len in 1e-3f64..1e7,
            n in 1usize..300,
            raw_cuts in proptest::collection::vec(0.0f64..1.0, 1..60),
            values in proptest::collection::vec(0.0f64..=1.0, 60),
            full in any::<bool>(),
        ) {
            let end = start + len;
            let mut buckets = TimeBuckets::new(start, end, n);
            let mut cuts: Vec<f64> = raw_cuts.iter().map(|c| start - 0.1 * len + c * 1.2 * len).collect();
            cuts.push(start - len);
            cuts.push(end + len);
            cuts.sort_by(f64::total_cmp);
            let mut integral = 0.0;
            for (i, w) in cuts.windows(2).enumerate() {
                let v = if full { 1.0 } else { values[i % values.len()] };
                buckets.add(w[0], w[1], v);
                integral += v * (w[1].min(end) - w[0].max(start)).max(0.0);
            }
            let means = buckets.means();
            for (t, mean) in &means {
                prop_assert!(*mean >= 0.0 && *mean <= 1.0 + 1e-9, "bucket at {} has mean {}", t, mean);
                if full {
                    prop_assert!((*mean - 1.0).abs() < 1e-6, "bucket at {} has mean {} under full use", t, mean);
                }
            }
            let total: f64 = buckets.sums.iter().sum();
            prop_assert!((total - integral).abs() <= 1e-9 * len.max(1.0), "sum {} vs integral {}", total, integral);
        }
    }
}
