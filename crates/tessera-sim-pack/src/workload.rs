//! The workload side of FGD's protocol: pod shapes, the typical-pod set ("target workload") that
//! fragmentation is measured against, and the seeded arrival sequence.
//!
//! Both follow the FGD artifact (`hkust-adsl/kubernetes-scheduler-simulator` at
//! `8f3d6417353c5083c6d56617f255fadd8dc306bc`):
//!
//! - Typical pods (`pkg/utils/frag.go`, `GetTypicalPods`, with the experiment's settings
//!   `isInvolvedCpuPods: true, podPopularityThreshold: 95, podIncreaseStep: 1`): pods of the trace
//!   are grouped by (CPU, milli-GPU per GPU, GPU count, GPU type constraint); groups are taken in
//!   decreasing popularity until they cover 95% of the pods, and their shares renormalised to 1.
//! - Arrivals (`pkg/simulator/simulator.go`, `SortClusterPods`, `TunePodsByNodeTotalResource`,
//!   `syncClusterResourceList`): the trace's pods sorted by name are shuffled, then pods drawn
//!   uniformly with replacement are appended until the next draw would push the arrived GPU
//!   request past the target (130% of capacity); a trace that already asks for more is thinned by
//!   removing random pods. Nodes get a random priority that breaks score ties.

use std::collections::HashMap;

use tessera_sim::rng::Rng;
use tessera_sim::trace::Pod;

/// What a score depends on: everything of a pod but its memory and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeKey {
    pub cpu_milli: u64,
    pub gpu_milli: u32,
    pub num_gpu: u32,
    /// Allowed GPU types joined with `|` (the artifact's annotation); empty means any.
    pub gpu_spec: String,
}

/// A pod of the trace, reduced to what placement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodReq {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub num_gpu: u32,
    pub gpu_milli: u32,
    /// Index into the shape list.
    pub shape: u32,
}

impl PodReq {
    /// GPU request in milli-GPU.
    pub fn demand(&self) -> u64 {
        u64::from(self.num_gpu) * u64::from(self.gpu_milli)
    }
}

/// A typical pod: a shape and its share of the target workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Typical {
    pub key: ShapeKey,
    pub share: f64,
}

/// The trace as placement sees it: pods sorted by name, their distinct shapes.
#[derive(Debug, Clone)]
pub struct Workload {
    pub pods: Vec<PodReq>,
    pub shapes: Vec<ShapeKey>,
}

impl Workload {
    pub fn new(pods: &[Pod]) -> Workload {
        let mut sorted: Vec<&Pod> = pods.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut index: HashMap<ShapeKey, u32> = HashMap::new();
        let mut shapes = Vec::new();
        let mut out = Vec::with_capacity(sorted.len());
        for p in sorted {
            let key = shape_key(p);
            let next = shapes.len() as u32;
            let shape = *index.entry(key.clone()).or_insert_with(|| {
                shapes.push(key);
                next
            });
            out.push(PodReq {
                cpu_milli: p.cpu_milli,
                memory_mib: p.memory_mib,
                num_gpu: p.num_gpu,
                gpu_milli: if p.num_gpu == 0 { 0 } else { p.gpu_milli },
                shape,
            });
        }
        Workload { pods: out, shapes }
    }

    /// The artifact's typical-pod set: the most popular shapes covering `threshold_pct` of pods.
    pub fn typical(&self, threshold_pct: f64) -> Vec<Typical> {
        let mut counts = vec![0u64; self.shapes.len()];
        for p in &self.pods {
            counts[p.shape as usize] += 1;
        }
        let total = self.pods.len() as f64;
        let mut order: Vec<usize> = (0..self.shapes.len()).collect();
        // Decreasing count; equal counts in decreasing shape order (the artifact's reversed `Less`).
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then_with(|| self.shapes[b].cmp(&self.shapes[a])));
        let wanted = threshold_pct * total / 100.0;
        let mut cum = 0.0;
        let mut taken = Vec::new();
        for i in order {
            if cum >= wanted {
                break;
            }
            cum += counts[i] as f64;
            taken.push(i);
        }
        taken.into_iter().map(|i| Typical { key: self.shapes[i].clone(), share: counts[i] as f64 / cum }).collect()
    }

    /// The arrival order for one seed and the nodes' tie-break ranks, drawing from `rng` in the
    /// artifact's order (shuffle, tune, node permutation).
    pub fn arrivals(&self, rng: &mut Rng, capacity_milli: u64, max_demand_pct: u32, nodes: usize) -> Arrivals {
        let mut seq: Vec<u32> = (0..self.pods.len() as u32).collect();
        rng.shuffle(&mut seq);
        let target = u128::from(capacity_milli) * u128::from(max_demand_pct) / 100;
        let mut total: u128 = seq.iter().map(|&i| u128::from(self.pods[i as usize].demand())).sum();
        if total > target {
            while total > target && !seq.is_empty() {
                let idx = rng.below(seq.len() as u64) as usize;
                let removed = seq.remove(idx);
                total -= u128::from(self.pods[removed as usize].demand());
            }
        } else if total < target && !self.pods.is_empty() {
            loop {
                let idx = rng.below(self.pods.len() as u64) as u32;
                let p = &self.pods[idx as usize];
                // The artifact stops on the per-GPU share (`podRes.MilliGpu`), not the total.
                if total + u128::from(p.gpu_milli) > target {
                    break;
                }
                total += u128::from(p.demand());
                seq.push(idx);
            }
        }
        let mut rank: Vec<u32> = (0..nodes as u32).collect();
        rng.shuffle(&mut rank);
        Arrivals { pods: seq, node_rank: rank }
    }
}

/// One seed's arrivals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrivals {
    /// Indices into [`Workload::pods`], in arrival order (repeats allowed).
    pub pods: Vec<u32>,
    /// Tie-break priority of each node (lower wins), indexed like the name-sorted nodes.
    pub node_rank: Vec<u32>,
}

fn shape_key(p: &Pod) -> ShapeKey {
    ShapeKey {
        cpu_milli: p.cpu_milli,
        gpu_milli: if p.num_gpu == 0 { 0 } else { p.gpu_milli },
        num_gpu: p.num_gpu,
        gpu_spec: p.gpu_spec.join("|"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tests::pod;

    fn workload() -> Workload {
        let mut pods = Vec::new();
        for i in 0..6 {
            pods.push(pod(&format!("a{i}"), 1000, 1, 500));
        }
        for i in 0..3 {
            pods.push(pod(&format!("b{i}"), 2000, 1, 1000));
        }
        pods.push(pod("c0", 4000, 0, 0));
        pods.push(pod("d0", 8000, 2, 1000));
        Workload::new(&pods)
    }

    #[test]
    fn typical_pods_cover_the_threshold_in_popularity_order() {
        let w = workload();
        let t = w.typical(95.0);
        // 6, 3, then the two singletons in decreasing shape order (2 GPUs before CPU-only): 6+3+1 = 10
        // of 11 pods is 90.9% < 95%, so both singletons are needed.
        let keys: Vec<(u64, u32)> = t.iter().map(|x| (x.key.cpu_milli, x.key.num_gpu)).collect();
        assert_eq!(keys, vec![(1000, 1), (2000, 1), (8000, 2), (4000, 0)]);
        assert!((t.iter().map(|x| x.share).sum::<f64>() - 1.0).abs() < 1e-12);
        let t = w.typical(80.0);
        assert_eq!(t.len(), 2);
        assert!((t[0].share - 6.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn arrivals_are_seeded_and_stop_at_the_target() {
        let w = workload();
        let capacity = 4000; // 4 GPUs; the trace asks for 6×500 + 3×1000 + 2000 = 8000 = 200%.
        let total = |a: &Arrivals| a.pods.iter().map(|&i| w.pods[i as usize].demand()).sum::<u64>();
        let mut r1 = Rng::new(42);
        let a = w.arrivals(&mut r1, capacity, 130, 3);
        assert_eq!(a, w.arrivals(&mut Rng::new(42), capacity, 130, 3));
        assert_ne!(a, w.arrivals(&mut Rng::new(43), capacity, 130, 3));
        // Thinned: random pods removed until at most 130%.
        assert!(total(&a) <= 5200 && a.pods.len() < w.pods.len());
        let mut ranks = a.node_rank.clone();
        ranks.sort_unstable();
        assert_eq!(ranks, vec![0, 1, 2]);
        // Inflated: every trace pod once, then draws with replacement until the next would pass 400%.
        let b = w.arrivals(&mut Rng::new(42), capacity, 400, 3);
        let mut first: Vec<u32> = b.pods[..w.pods.len()].to_vec();
        first.sort_unstable();
        assert_eq!(first, (0..w.pods.len() as u32).collect::<Vec<_>>());
        assert!(total(&b) <= 16000 && total(&b) + 1000 > 16000, "{}", total(&b));
    }
}
