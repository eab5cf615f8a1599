//! Utilisation where the driver gives it: GPU performance monitoring (GPM, Hopper and newer)
//! per MIG GPU instance, and per GPU with MIG off, for `GET /metrics`. dcgm-exporter's
//! profiling fields need DCGM and do not follow instances made and destroyed at run time;
//! Tessera makes those instances, so it samples them itself.
//!
//! The health watcher's thread ([`crate::daemon`]) runs a [`Sampler`] every sample interval:
//! for each GPU with GPM, one sample of every GPU instance (or of the GPU, MIG off) through the
//! backend ([`tessera_gpu::MigBackend::gpm_sample`]: the metrics over the time since its
//! previous sample, the arithmetic the driver's), without the engine's lock. The readings go
//! into [`Utilisation`], which the readers share, so a scrape never calls the GPUs for them.
//!
//! What is shown is the last sample interval's: a reading older than three intervals is not
//! shown (the watcher stopped sampling), one of an instance that is gone is dropped at the next
//! sample, and one whose interval spans a change of the instance (destroyed and made again
//! under the same id, or MIG switched) is never taken. GPUs without GPM (A100, A30) have none,
//! and no error: the sampler asks once whether a GPU has GPM and leaves it alone if not.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tessera_gpu::{GpmMetrics, MigBackend};

use crate::wire::UtilisationReading;

/// How many sample intervals a reading is shown for before it counts as stale.
const STALE_AFTER_INTERVALS: u64 = 3;

/// NVML refreshes GPM counters about every 100 ms: samples closer than this say little.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// A GPU (`None`) or one of its GPU instances.
type Target = (u32, Option<u32>);

/// What a GPU instance is, beyond its id: (profile id, start). A reading spanning a change of it
/// belongs to no one instance.
type Identity = Option<(u32, u8)>;

#[derive(Debug, Default)]
struct Latest {
    /// The metrics of each target's last interval, and when the interval ended (ms since the
    /// epoch).
    readings: BTreeMap<Target, (GpmMetrics, u64)>,
    /// The sampler's interval, in ms (0 before a sampler runs: nothing is shown).
    interval_ms: u64,
}

/// The latest readings, shared by the sampler that takes them and the readers that show them.
#[derive(Debug, Clone, Default)]
pub struct Utilisation {
    latest: Arc<RwLock<Latest>>,
}

impl Utilisation {
    /// The readings not older than three sample intervals at `now_ms`, by GPU and instance.
    pub fn current(&self, now_ms: u64) -> Vec<UtilisationReading> {
        let latest = self.latest.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let max_age = latest.interval_ms.saturating_mul(STALE_AFTER_INTERVALS);
        latest
            .readings
            .iter()
            .filter(|(_, (_, at))| now_ms.saturating_sub(*at) <= max_age)
            .map(|(&(gpu, gpu_instance_id), (metrics, _))| UtilisationReading {
                gpu,
                gpu_instance_id,
                metrics: *metrics,
            })
            .collect()
    }

    fn replace(&self, readings: BTreeMap<Target, (GpmMetrics, u64)>, interval: Duration) {
        let mut latest = self.latest.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        latest.readings = readings;
        latest.interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    }
}

/// Takes GPM samples of the node's GPUs and instances every interval (on the health watcher's
/// thread) into a [`Utilisation`].
#[derive(Debug)]
pub struct Sampler {
    shared: Utilisation,
    interval: Duration,
    last: Option<Instant>,
    /// Whether each GPU has GPM, once the backend said.
    has_gpm: BTreeMap<u32, bool>,
    /// Each target sampled last time, with what it was then.
    sampled: BTreeMap<Target, Identity>,
}

impl Sampler {
    /// A sampler every `interval` (at least [`MIN_INTERVAL`]) into `shared`.
    pub fn new(shared: Utilisation, interval: Duration) -> Sampler {
        Sampler {
            shared,
            interval: interval.max(MIN_INTERVAL),
            last: None,
            has_gpm: BTreeMap::new(),
            sampled: BTreeMap::new(),
        }
    }

    /// Whether an interval has passed since the last sample (or none was taken).
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// One sample of every GPU instance (MIG on) or GPU (MIG off) of `gpus` that has GPM; the
    /// readings of this interval replace the previous ones. Backend errors leave a target out
    /// (logged at debug level: a GPU that fails is the health probe's to report).
    pub fn sample(&mut self, backend: &dyn MigBackend, gpus: &[u32], now_ms: u64) {
        let mut readings = BTreeMap::new();
        let mut sampled = BTreeMap::new();
        for &gpu in gpus {
            if !self.has_gpm(backend, gpu) {
                continue;
            }
            let targets: Vec<(Option<u32>, Identity)> = match backend.mig_mode(gpu) {
                Ok(mode) if mode.current => match backend.gpu_instances(gpu) {
                    Ok(gis) => gis.iter().map(|g| (Some(g.id), Some((g.profile_id, g.placement.start)))).collect(),
                    Err(e) => {
                        tracing::debug!("GPM: listing GPU {gpu}'s instances: {e}");
                        continue;
                    }
                },
                Ok(_) => vec![(None, None)],
                Err(e) => {
                    tracing::debug!("GPM: reading GPU {gpu}'s MIG mode: {e}");
                    continue;
                }
            };
            for (gi, identity) in targets {
                let target = (gpu, gi);
                let unchanged = self.sampled.get(&target) == Some(&identity);
                match backend.gpm_sample(gpu, gi) {
                    Ok(Some(metrics)) if unchanged => {
                        readings.insert(target, (metrics, now_ms));
                    }
                    // A first sample, or one whose interval spans a change: the next one counts.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("GPM: sampling GPU {gpu} instance {gi:?}: {e}");
                        continue;
                    }
                }
                sampled.insert(target, identity);
            }
        }
        self.sampled = sampled;
        self.shared.replace(readings, self.interval);
        self.last = Some(Instant::now());
    }

    /// Whether GPU `gpu` has GPM (asked once; an error is asked again next time).
    fn has_gpm(&mut self, backend: &dyn MigBackend, gpu: u32) -> bool {
        if let Some(&known) = self.has_gpm.get(&gpu) {
            return known;
        }
        match backend.gpm_supported(gpu) {
            Ok(has) => {
                self.has_gpm.insert(gpu, has);
                has
            }
            Err(e) => {
                tracing::debug!("GPM: asking whether GPU {gpu} has it: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_gpu::sim::activity::Activity;
    use tessera_gpu::{NodeSpec, SimBackend};

    use super::*;

    const TICK: Duration = Duration::from_millis(200);

    /// An H100 with two instances (one busy) and an A100 with one, both MIG on.
    fn node() -> (SimBackend, u32, u32) {
        let sim = SimBackend::in_memory(&NodeSpec::parse("1xH100-80GB+1xA100-40GB,mig=on").unwrap());
        let busy = sim.create_gpu_instance(0, 9, Some(4)).unwrap().id;
        let idle = sim.create_gpu_instance(0, 19, Some(0)).unwrap().id;
        sim.create_gpu_instance(1, 19, Some(0)).unwrap();
        sim.set_activity(0, Some(busy), &Activity::new(0.8, 0.4, 0.2, 0.6)).unwrap();
        sim.set_activity(1, Some(7), &Activity::new(1.0, 1.0, 1.0, 1.0)).unwrap();
        (sim, busy, idle)
    }

    #[test]
    fn instances_with_gpm_get_the_last_intervals_metrics() {
        let (sim, busy, idle) = node();
        let shared = Utilisation::default();
        let mut s = Sampler::new(shared.clone(), TICK);
        assert!(s.due());
        s.sample(&sim, &[0, 1], 1_000);
        assert!(!s.due());
        assert!(shared.current(1_000).is_empty(), "a first sample has no interval");
        std::thread::sleep(TICK);
        assert!(s.due());
        s.sample(&sim, &[0, 1], 1_200);
        let got = shared.current(1_200);
        let targets: Vec<(u32, Option<u32>)> = got.iter().map(|r| (r.gpu, r.gpu_instance_id)).collect();
        assert_eq!(targets, [(0, Some(busy)), (0, Some(idle))], "the A100 has no GPM: no reading");
        let sm = got[0].metrics.sm_active.unwrap();
        assert!((sm - 0.8).abs() < 0.02, "{got:?}");
        assert!(got[1].metrics.sm_active.is_some_and(|v| v < 0.02), "{got:?}");
        assert!(got[0].metrics.interval_ms >= 190, "{got:?}");
        // Stale after three intervals.
        assert_eq!(shared.current(1_200 + 3 * 200).len(), 2);
        assert!(shared.current(1_200 + 3 * 200 + 1).is_empty());
    }

    #[test]
    fn a_changed_or_gone_instance_has_no_reading() {
        let (sim, busy, idle) = node();
        let shared = Utilisation::default();
        let mut s = Sampler::new(shared.clone(), TICK);
        s.sample(&sim, &[0], 0);
        std::thread::sleep(TICK);
        s.sample(&sim, &[0], 200);
        assert_eq!(shared.current(200).len(), 2);
        // The 1g.10gb goes and a 1g.10gb+me takes its place and id: the next interval spans the
        // change and is not shown; the one after is.
        sim.destroy_gpu_instance(0, idle).unwrap();
        let again = sim.create_gpu_instance(0, 20, Some(0)).unwrap();
        assert_eq!(again.id, idle);
        std::thread::sleep(TICK);
        s.sample(&sim, &[0], 400);
        let now: Vec<Option<u32>> = shared.current(400).iter().map(|r| r.gpu_instance_id).collect();
        assert_eq!(now, [Some(busy)]);
        std::thread::sleep(TICK);
        s.sample(&sim, &[0], 600);
        assert_eq!(shared.current(600).len(), 2);
        // Gone: dropped at the next sample.
        sim.destroy_gpu_instance(0, again.id).unwrap();
        s.sample(&sim, &[0], 800);
        let now: Vec<Option<u32>> = shared.current(800).iter().map(|r| r.gpu_instance_id).collect();
        assert_eq!(now, [Some(busy)]);
    }

    #[test]
    fn a_gpu_with_mig_off_is_one_target() {
        let sim = SimBackend::in_memory(&NodeSpec::parse("1xH100-80GB,mig=off").unwrap());
        sim.set_activity(0, None, &Activity::new(0.5, 0.5, 0.5, 0.5)).unwrap();
        let shared = Utilisation::default();
        let mut s = Sampler::new(shared.clone(), Duration::from_millis(1));
        assert_eq!(s.interval, MIN_INTERVAL, "no faster than NVML refreshes");
        s.sample(&sim, &[0], 0);
        std::thread::sleep(TICK);
        s.sample(&sim, &[0], 200);
        let got = shared.current(200);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].gpu, got[0].gpu_instance_id), (0, None));
        assert!(got[0].metrics.dram_active.is_some_and(|v| (v - 0.5).abs() < 0.02), "{got:?}");
        // A GPU the node lacks is an error the sampler leaves out.
        s.sample(&sim, &[0, 5], 400);
        assert_eq!(shared.current(400).len(), 1);
    }
}
