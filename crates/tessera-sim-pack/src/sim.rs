//! One run of the packing experiment: one policy, one seed, pods arriving until the target demand,
//! each placed at once or failed, never leaving.
//!
//! The scheduling cycle follows the FGD artifact's Kubernetes framework (fork of v1.20.5 in
//! `hkust-adsl/kubernetes-scheduler-simulator@8f3d6417`): filter the nodes (CPU, memory, pod count,
//! GPU type, enough GPUs that fit — `plugin/open_gpu_share.go`, `cache/gpunodeinfo.go`), score every
//! feasible node with the one policy, take the highest score with ties to the node of lowest
//! random rank (`core/generic_scheduler.go`, `selectHost`, which the fork changed to the smallest
//! node name; node names carry a random prefix), then pick the GPU(s) on that node with the
//! policy's GPU selection.
//!
//! Speed: a node's score for a pod depends only on the node's state and the pod's shape, and one
//! placement changes one node. Scores are cached per (shape, node) with the node's version, so a
//! pod costs a scan of cached entries plus a recomputation of the nodes changed since that shape
//! was last seen. Each node's current fragmentation is kept up to date, so FGD's "before" term and
//! the cluster totals cost nothing.

use tessera_sim::rng::Rng;

use crate::Policy;
use crate::gpu::{GpuRules, MILLI};
use crate::workload::{Typical, Workload};

/// The artifact's normalisers (`open-gpu-share/utils/const.go`): 128 cores, 8 GPUs.
const MAX_SPEC_CPU: f64 = 128_000.0;
const MAX_SPEC_GPU: f64 = 8_000.0;
/// Kubernetes' pods-per-node limit in the artifact's node specs.
const MAX_PODS_PER_NODE: u32 = 1001;
/// Tessera's score is `int(100 × sigmoid(gain / TESSERA_SCALE))`: near zero one score point is
/// about `4 × TESSERA_SCALE / 100` = 80 milli-GPU of fragmentation gain (FGD's 1000 gives 40), so
/// small differences in its finer measure tie and fall to the random node rank. Chosen on the
/// default trace (see `docs/evaluation/packing.md`).
const TESSERA_SCALE: f64 = 2000.0;
/// Most (shape, node) score-cache entries kept (24 bytes each); beyond, scores are recomputed.
const MAX_CACHE_ENTRIES: usize = 1 << 24;
/// Most GPUs one node may have.
pub const MAX_GPUS_PER_NODE: usize = 16;

/// A node as the run sees it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub cpu_milli: u64,
    pub memory_mib: u64,
    pub gpus: u8,
    /// Bit of the node's GPU type in the type masks.
    pub type_bit: u64,
}

/// A pod shape with everything scoring needs precomputed.
#[derive(Debug, Clone)]
pub struct ShapeInfo {
    pub cpu_milli: u64,
    pub num_gpu: u32,
    pub gpu_milli: u32,
    /// Request unit on one GPU (milli-GPU or MIG profile index).
    pub unit: u16,
    /// Node types the pod may use.
    pub type_mask: u64,
    /// GPU-sharing pod (one GPU, less than all of it): picks a GPU; otherwise takes whole GPUs.
    pub share: bool,
    /// Total GPU capacity taken, in milli-GPU (after MIG rounding).
    pub gpu_taken: f64,
    /// GPU-clustering affinity tag: 0 none, 1 sharing, 2 + n for n whole GPUs.
    pub tag: u32,
}

/// A typical pod with its request unit.
#[derive(Debug, Clone)]
pub struct TypicalInfo {
    pub cpu_milli: u64,
    pub num_gpu: u32,
    pub unit: u16,
    pub type_mask: u64,
    pub share: f64,
}

/// Everything that is the same for every run of a report.
#[derive(Debug, Clone)]
pub struct Setup {
    pub rules: GpuRules,
    pub nodes: Vec<NodeSpec>,
    pub workload: Workload,
    pub shapes: Vec<ShapeInfo>,
    /// Typical pods that ask for GPUs.
    pub typical_gpu: Vec<TypicalInfo>,
    /// Summed share of CPU-only typical pods (all free GPU counts as fragmented for them).
    pub typical_cpu_share: f64,
    /// Number of typical pod shapes, CPU-only ones included.
    pub typical_shapes: usize,
    pub capacity_milli: u64,
    pub total_gpus: u64,
}

impl Setup {
    pub fn shape_info(rules: &GpuRules, key: &crate::workload::ShapeKey, type_mask: u64) -> ShapeInfo {
        let unit = if key.num_gpu == 0 {
            0
        } else if key.num_gpu > 1 {
            rules.whole()
        } else {
            rules.unit_of(key.gpu_milli)
        };
        let share = key.num_gpu == 1 && unit != rules.whole();
        let tag = match key.num_gpu {
            0 => 0,
            1 if key.gpu_milli < MILLI => 1,
            n => 2u32.saturating_add(n),
        };
        ShapeInfo {
            cpu_milli: key.cpu_milli,
            num_gpu: key.num_gpu,
            gpu_milli: key.gpu_milli,
            unit,
            type_mask,
            share,
            gpu_taken: if key.num_gpu == 0 { 0.0 } else { rules.unit_milli(unit) * f64::from(key.num_gpu) },
            tag,
        }
    }

    pub fn typical_info(rules: &GpuRules, t: &Typical, type_mask: u64) -> TypicalInfo {
        let s = Setup::shape_info(rules, &t.key, type_mask);
        TypicalInfo { cpu_milli: s.cpu_milli, num_gpu: s.num_gpu, unit: s.unit, type_mask, share: t.share }
    }

    /// FGD's fragmentation of one node (`frag.go`, `NodeGpuShareFragAmount`, all but Q3): for each
    /// typical pod, the free GPU capacity it could not use, weighted by its share. A pod that cannot
    /// run on the node at all (CPU-only, wrong GPU type, too little CPU, too few GPUs it fits on)
    /// finds all of the node's free GPU capacity fragmented; otherwise only the GPUs it does not fit.
    pub fn node_frag(&self, type_bit: u64, cpu_left: u64, gpus: &[u16]) -> f64 {
        let rules = &self.rules;
        self.over_typical(type_bit, cpu_left, gpus, |t, total| {
            let mut fit = 0u32;
            let mut unfit = 0.0;
            for &g in gpus {
                if rules.fits(g, t.unit) {
                    fit += 1;
                } else {
                    unfit += rules.free(g);
                }
            }
            if fit >= t.num_gpu { unfit } else { total }
        })
    }

    /// The share-weighted sum over the typical pods of the free GPU capacity each leaves
    /// fragmented on a node: all of it for CPU-only pods and pods that cannot run there (wrong
    /// GPU type, too little CPU); `fragmented(pod, total free)` for the others.
    fn over_typical(
        &self,
        type_bit: u64,
        cpu_left: u64,
        gpus: &[u16],
        fragmented: impl Fn(&TypicalInfo, f64) -> f64,
    ) -> f64 {
        let total: f64 = gpus.iter().map(|&g| self.rules.free(g)).sum();
        if total == 0.0 {
            return 0.0;
        }
        let mut frag = self.typical_cpu_share * total;
        for t in &self.typical_gpu {
            frag += t.share
                * if t.type_mask & type_bit == 0 || cpu_left < t.cpu_milli { total } else { fragmented(t, total) };
        }
        frag
    }

    /// Tessera's fragmentation of one node: FGD's measure plus [`Setup::node_frag_by_capacity`].
    pub fn tessera_frag(&self, type_bit: u64, cpu_left: u64, gpus: &[u16]) -> f64 {
        self.node_frag(type_bit, cpu_left, gpus) + self.node_frag_by_capacity(type_bit, cpu_left, gpus)
    }

    /// Fragmentation counted by capacity instead of by fit. For each
    /// typical pod, the free GPU capacity it could not use even if it filled the node with copies
    /// of itself: per GPU the remainder after as many copies as fit (MIG: as many instances as the
    /// placement rules allow), whole-GPU pods only in whole multiples of their GPU count, and no
    /// more copies than the node's free CPU can hold.
    pub fn node_frag_by_capacity(&self, type_bit: u64, cpu_left: u64, gpus: &[u16]) -> f64 {
        let rules = &self.rules;
        self.over_typical(type_bit, cpu_left, gpus, |t, total| {
            let size = rules.unit_milli(t.unit) * f64::from(t.num_gpu);
            let usable = if t.num_gpu == 1 {
                gpus.iter().map(|&g| rules.usable_for(g, t.unit)).sum::<f64>()
            } else {
                let fit = gpus.iter().filter(|&&g| rules.fits(g, t.unit)).count() as u32;
                f64::from(fit / t.num_gpu) * size
            };
            let usable = match cpu_left.checked_div(t.cpu_milli) {
                Some(copies) if size > 0.0 => usable.min(copies as f64 * size),
                _ => usable,
            };
            (total - usable).max(0.0)
        })
    }
}

/// A score: larger is better; ties go to the node of lowest rank.
type Score = (i64, i64);
const NO_SCORE: Score = (i64::MIN, i64::MIN);

#[derive(Debug, Clone, Copy)]
struct Entry {
    version: u32,
    ok: bool,
    score: Score,
}

/// What happened at one arrival (or at the start, before any).
#[derive(Debug, Clone, Copy, Default)]
pub struct Event {
    /// GPU request arrived so far, milli-GPU.
    pub arrived: u64,
    /// GPU capacity allocated, milli-GPU (MIG: compute of the instances created).
    pub allocated: f64,
    /// GPU request of the pods placed, milli-GPU (before MIG rounding).
    pub requested: u64,
    /// Cluster fragmentation (FGD's measure), milli-GPU.
    pub frag: f64,
    /// Unallocated GPU capacity, milli-GPU.
    pub idle: f64,
    pub failed_pods: u32,
    pub failed_milli: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub events: Vec<Event>,
    /// Final GPU states, flat (node after node), for checks.
    pub gpu_states: Vec<u16>,
}

/// The cluster's state during one run.
#[derive(Debug)]
pub struct Sim<'a> {
    setup: &'a Setup,
    policy: Policy,
    rank: &'a [u32],
    rng: Rng,
    cpu_left: Vec<u64>,
    mem_left: Vec<u64>,
    pods_on: Vec<u32>,
    gpu_off: Vec<usize>,
    gpu: Vec<u16>,
    version: Vec<u32>,
    frag: Vec<f64>,
    /// Tessera's fragmentation of each node (only kept when the policy is Tessera).
    tfrag: Vec<f64>,
    affinity: Vec<Vec<(u32, u32)>>,
    cache: Vec<Vec<Entry>>,
    frag_sum: f64,
    idle_sum: f64,
}

impl<'a> Sim<'a> {
    pub fn new(setup: &'a Setup, policy: Policy, rank: &'a [u32], rng: Rng) -> Sim<'a> {
        let n = setup.nodes.len();
        let mut gpu_off = Vec::with_capacity(n + 1);
        let mut off = 0;
        for node in &setup.nodes {
            gpu_off.push(off);
            off += usize::from(node.gpus);
        }
        gpu_off.push(off);
        let gpu = vec![setup.rules.empty(); off];
        let mut sim = Sim {
            setup,
            policy,
            rank,
            rng,
            cpu_left: setup.nodes.iter().map(|x| x.cpu_milli).collect(),
            mem_left: setup.nodes.iter().map(|x| x.memory_mib).collect(),
            pods_on: vec![0; n],
            gpu_off,
            gpu,
            version: vec![1; n],
            frag: vec![0.0; n],
            tfrag: vec![0.0; n],
            affinity: vec![Vec::new(); n],
            cache: vec![Vec::new(); setup.shapes.len()],
            frag_sum: 0.0,
            idle_sum: 0.0,
        };
        for i in 0..n {
            sim.frag[i] = setup.node_frag(setup.nodes[i].type_bit, sim.cpu_left[i], sim.gpus(i));
            sim.frag_sum += sim.frag[i];
            if policy == Policy::Tessera {
                sim.tfrag[i] =
                    sim.frag[i] + setup.node_frag_by_capacity(setup.nodes[i].type_bit, sim.cpu_left[i], sim.gpus(i));
            }
            sim.idle_sum += sim.node_free(i);
        }
        sim
    }

    fn gpus(&self, n: usize) -> &[u16] {
        &self.gpu[self.gpu_off[n]..self.gpu_off[n + 1]]
    }

    fn node_free(&self, n: usize) -> f64 {
        self.gpus(n).iter().map(|&g| self.setup.rules.free(g)).sum()
    }

    /// Run the arrivals; `arrivals` index [`Workload::pods`].
    pub fn run(mut self, arrivals: &[u32]) -> RunResult {
        let setup = self.setup;
        let capacity = setup.capacity_milli as f64;
        let mut events = Vec::with_capacity(arrivals.len() + 1);
        let mut ev = Event { frag: self.frag_sum, idle: self.idle_sum, ..Event::default() };
        events.push(ev);
        for &p in arrivals {
            let pod = setup.workload.pods[p as usize];
            ev.arrived += pod.demand();
            match self.place(pod.shape as usize, pod.memory_mib) {
                Some(()) => ev.requested += pod.demand(),
                None => {
                    ev.failed_pods += 1;
                    ev.failed_milli += pod.demand();
                }
            }
            ev.frag = self.frag_sum.max(0.0);
            ev.idle = self.idle_sum.max(0.0);
            ev.allocated = capacity - ev.idle;
            events.push(ev);
        }
        RunResult { events, gpu_states: self.gpu }
    }

    /// Filter, score, select, apply. `None` when no node can take the pod.
    fn place(&mut self, shape: usize, memory_mib: u64) -> Option<()> {
        let s = &self.setup.shapes[shape];
        let n_nodes = self.setup.nodes.len();
        let cached = self.setup.shapes.len().saturating_mul(n_nodes) <= MAX_CACHE_ENTRIES;
        if cached && self.cache[shape].is_empty() {
            self.cache[shape] = vec![Entry { version: 0, ok: false, score: NO_SCORE }; n_nodes];
        }
        let mut best: Option<(Score, u32, usize)> = None;
        let mut feasible: Vec<usize> = Vec::new();
        let random = self.policy == Policy::Random;
        for n in 0..n_nodes {
            if self.mem_left[n] < memory_mib || self.pods_on[n] >= MAX_PODS_PER_NODE || self.cpu_left[n] < s.cpu_milli {
                continue;
            }
            let e = match self.cache[shape].get(n) {
                Some(&e) if e.version == self.version[n] => e,
                _ => {
                    let (ok, score) = self.evaluate(n, s, random);
                    let e = Entry { version: self.version[n], ok, score };
                    if cached {
                        self.cache[shape][n] = e;
                    }
                    e
                }
            };
            if !e.ok {
                continue;
            }
            if random {
                feasible.push(n);
                continue;
            }
            let cand = (e.score, self.rank[n], n);
            match best {
                Some((bs, br, _)) if (bs, std::cmp::Reverse(br)) >= (e.score, std::cmp::Reverse(self.rank[n])) => {}
                _ => best = Some(cand),
            }
        }
        let node = if random {
            match feasible.len() {
                0 => return None,
                1 => feasible[0],
                k => feasible[self.rng.below(k as u64) as usize],
            }
        } else {
            best?.2
        };
        let chosen = self.select_gpus(node, s);
        self.apply(node, s, memory_mib, &chosen);
        Some(())
    }

    /// Whether node `n` can take shape `s` (GPU side and CPU), and its score.
    fn evaluate(&self, n: usize, s: &ShapeInfo, random: bool) -> (bool, Score) {
        let rules = &self.setup.rules;
        let gpus = self.gpus(n);
        if self.cpu_left[n] < s.cpu_milli {
            return (false, NO_SCORE);
        }
        if s.num_gpu > 0 {
            if s.type_mask & self.setup.nodes[n].type_bit == 0 {
                return (false, NO_SCORE);
            }
            let fit = gpus.iter().filter(|&&g| rules.fits(g, s.unit)).count();
            if (fit as u64) < u64::from(s.num_gpu) {
                return (false, NO_SCORE);
            }
        }
        if random {
            return (true, NO_SCORE);
        }
        let score = match self.policy {
            Policy::Random => NO_SCORE,
            Policy::BestFit => (self.best_fit_score(n, s), 0),
            Policy::DotProd => (self.dot_product_score(n, s), 0),
            Policy::Packing => (self.packing_score(n, s), 0),
            Policy::Clustering => (self.clustering_score(n, s), 0),
            Policy::Fgd => (self.fgd_choice(n, s).0, 0),
            Policy::Tessera => self.tessera_choice(n, s).0,
        };
        (true, score)
    }

    /// `best_fit_score.go`: ½·(free − request)/max over CPU and GPU; less left over is better.
    fn best_fit_score(&self, n: usize, s: &ShapeInfo) -> i64 {
        let free = [self.cpu_left[n] as f64, self.node_free(n)];
        let req = [s.cpu_milli as f64, s.gpu_taken];
        let max = [MAX_SPEC_CPU, MAX_SPEC_GPU];
        let mut score = 0.0;
        for i in 0..2 {
            score += (free[i] - req[i]) / max[i] * 0.5;
        }
        ((1.0 - score) * 100.0) as i64
    }

    /// `dot_product_score.go` (Tetris) with `-dimext merge -norm max`: the smaller the dot product
    /// of (free CPU, free GPU) and (requested CPU, requested GPU), the better.
    fn dot_product_score(&self, n: usize, s: &ShapeInfo) -> i64 {
        let node = [self.cpu_left[n] as f64 / MAX_SPEC_CPU, self.node_free(n) / MAX_SPEC_GPU];
        let pod = [s.cpu_milli as f64 / MAX_SPEC_CPU, s.gpu_taken / MAX_SPEC_GPU];
        let dot = (node[0] * pod[0] + node[1] * pod[1]) / 2.0;
        (100.0 * (1.0 - dot)) as i64
    }

    /// `gpu_packing_score.go`: prefer sharing a used GPU, then free GPUs on a used node, then an
    /// idle node (fewer GPUs first).
    fn packing_score(&self, n: usize, s: &ShapeInfo) -> i64 {
        if s.num_gpu == 0 {
            return 0;
        }
        let rules = &self.setup.rules;
        let gpus = self.gpus(n);
        let fully_free = gpus.iter().filter(|&&g| rules.is_empty(g)).count() as i64;
        if fully_free == gpus.len() as i64 {
            return (100 / 3 - fully_free).max(fully_free);
        }
        let mut order: Vec<usize> = (0..gpus.len()).collect();
        order.sort_by(|&a, &b| rules.free(gpus[a]).total_cmp(&rules.free(gpus[b])));
        let mut need = s.num_gpu;
        let mut free_used = 0i64;
        let mut ratio = 0i64;
        for i in order {
            if need == 0 {
                break;
            }
            if rules.fits(gpus[i], s.unit) {
                need -= 1;
                if rules.is_empty(gpus[i]) {
                    free_used += 1;
                }
                ratio += (rules.free(gpus[i]) as i64) * 100 / i64::from(MILLI);
            }
        }
        if need != 0 {
            return 0;
        }
        if free_used > 0 {
            return (100 / 2 - free_used).max(100 / 3);
        }
        (100 - ratio / 10).max(100 / 2)
    }

    /// `gpu_clustering_score.go`: put pods of the same kind (sharing, n whole GPUs) together.
    fn clustering_score(&self, n: usize, s: &ShapeInfo) -> i64 {
        if s.tag == 0 {
            return 0;
        }
        let left = self.node_free(n) as i64;
        let base = 100 / 4 * (MAX_SPEC_GPU as i64 - left) / MAX_SPEC_GPU as i64;
        let aff = &self.affinity[n];
        if aff.iter().any(|&(t, c)| t == s.tag && c > 0) {
            if aff.len() == 1 { base + 75 } else { base + 50 }
        } else if aff.is_empty() {
            base + 25
        } else {
            base
        }
    }

    /// Node state after placing `s` on the GPU `g` (sharing) or on the first fitting GPUs.
    fn after(&self, n: usize, s: &ShapeInfo, g: Option<usize>, buf: &mut [u16; MAX_GPUS_PER_NODE]) -> usize {
        let rules = &self.setup.rules;
        let gpus = self.gpus(n);
        buf[..gpus.len()].copy_from_slice(gpus);
        match g {
            Some(i) => {
                buf[i] = rules.after(gpus[i], s.unit).unwrap_or(gpus[i]);
            }
            None => {
                let mut need = s.num_gpu;
                for x in buf.iter_mut().take(gpus.len()) {
                    if need == 0 {
                        break;
                    }
                    if let Some(next) = rules.after(*x, s.unit) {
                        *x = next;
                        need -= 1;
                    }
                }
            }
        }
        gpus.len()
    }

    fn frag_after(&self, n: usize, s: &ShapeInfo, g: Option<usize>) -> f64 {
        let mut buf = [0u16; MAX_GPUS_PER_NODE];
        let len = self.after(n, s, g, &mut buf);
        let cpu = self.cpu_left[n].saturating_sub(s.cpu_milli);
        self.setup.node_frag(self.setup.nodes[n].type_bit, cpu, &buf[..len])
    }

    /// Tessera's fragmentation of node `n` after placing `s` there.
    fn tfrag_after(&self, n: usize, s: &ShapeInfo, g: Option<usize>) -> f64 {
        let mut buf = [0u16; MAX_GPUS_PER_NODE];
        let len = self.after(n, s, g, &mut buf);
        let cpu = self.cpu_left[n].saturating_sub(s.cpu_milli);
        self.setup.tessera_frag(self.setup.nodes[n].type_bit, cpu, &buf[..len])
    }

    /// The GPU of node `n` that fits the sharing pod `s` with the highest `score(gpu index)`,
    /// the first on ties; GPUs in the same state are scored once.
    fn best_gpu(&self, n: usize, s: &ShapeInfo, score: impl Fn(usize) -> i64) -> Option<(i64, usize)> {
        let mut best: Option<(i64, usize)> = None;
        let mut seen: [(u16, i64); MAX_GPUS_PER_NODE] = [(u16::MAX, 0); MAX_GPUS_PER_NODE];
        let mut nseen = 0;
        for (i, &g) in self.gpus(n).iter().enumerate() {
            if !self.setup.rules.fits(g, s.unit) {
                continue;
            }
            let sc = match seen[..nseen].iter().find(|(st, _)| *st == g) {
                Some(&(_, sc)) => sc,
                None => {
                    let sc = score(i);
                    seen[nseen] = (g, sc);
                    nseen += 1;
                    sc
                }
            };
            if best.is_none_or(|(b, _)| sc > b) {
                best = Some((sc, i));
            }
        }
        best
    }

    /// `fgd_score.go`: `int(sigmoid((before − after)/1000) × 100)`; for a sharing pod the GPU with the
    /// best such score, the first on ties.
    fn fgd_choice(&self, n: usize, s: &ShapeInfo) -> (i64, Option<usize>) {
        let before = self.frag[n];
        let score_of = |after: f64| (sigmoid((before - after) / 1000.0) * 100.0) as i64;
        if !s.share {
            return (score_of(self.frag_after(n, s, None)), None);
        }
        let best = self.best_gpu(n, s, |i| score_of(self.frag_after(n, s, Some(i))));
        match best {
            Some((sc, i)) => (sc, Some(i)),
            None => (0, None),
        }
    }

    /// Tessera's policy: FGD's steepest descent on a finer fragmentation measure
    /// ([`Setup::tessera_frag`]: FGD's by-fit measure plus the by-capacity one), scored
    /// `int(sigmoid((before − after)/2000) × 100)` so that gains of a few milli-GPU do not separate
    /// nodes (ties go to the node's random rank, as in FGD); for a sharing pod the GPU with the best
    /// score, the first on ties. In MIG mode both measures know the placement rules.
    fn tessera_choice(&self, n: usize, s: &ShapeInfo) -> (Score, Option<usize>) {
        let before = self.tfrag[n];
        let score_of = |after: f64| (sigmoid((before - after) / TESSERA_SCALE) * 100.0) as i64;
        if !s.share {
            return ((score_of(self.tfrag_after(n, s, None)), 0), None);
        }
        let best = self.best_gpu(n, s, |i| score_of(self.tfrag_after(n, s, Some(i))));
        match best {
            Some((sc, i)) => ((sc, 0), Some(i)),
            None => (NO_SCORE, None),
        }
    }

    /// The GPUs the pod gets on the chosen node.
    fn select_gpus(&mut self, n: usize, s: &ShapeInfo) -> Vec<usize> {
        if s.num_gpu == 0 {
            return Vec::new();
        }
        let rules = &self.setup.rules;
        if !s.share {
            // `AllocateExclusiveGpuId`: the first GPUs that fit, by index.
            let gpus = self.gpus(n);
            return (0..gpus.len()).filter(|&i| rules.fits(gpus[i], s.unit)).take(s.num_gpu as usize).collect();
        }
        let pick = match self.policy {
            Policy::Fgd => self.fgd_choice(n, s).1,
            Policy::Tessera => self.tessera_choice(n, s).1,
            Policy::Random => {
                // `allocateGpuIdBasedOnRandomFit`: uniform over the GPUs that fit (reservoir).
                let gpus = self.gpus(n).to_vec();
                let mut pick = None;
                let mut count = 0u64;
                for (i, &g) in gpus.iter().enumerate() {
                    if rules.fits(g, s.unit) {
                        count += 1;
                        if self.rng.below(count) == 0 {
                            pick = Some(i);
                        }
                    }
                }
                pick
            }
            // `allocateGpuIdBasedOnBestFit`: the GPU with the least free capacity that fits.
            _ => {
                let gpus = self.gpus(n);
                let mut pick: Option<usize> = None;
                for (i, &g) in gpus.iter().enumerate() {
                    if rules.fits(g, s.unit) && pick.is_none_or(|p| rules.free(g) < rules.free(gpus[p])) {
                        pick = Some(i);
                    }
                }
                pick
            }
        };
        pick.into_iter().collect()
    }

    fn apply(&mut self, n: usize, s: &ShapeInfo, memory_mib: u64, chosen: &[usize]) {
        let rules = &self.setup.rules;
        self.cpu_left[n] -= s.cpu_milli;
        self.mem_left[n] -= memory_mib;
        self.pods_on[n] += 1;
        let off = self.gpu_off[n];
        for &i in chosen {
            let g = self.gpu[off + i];
            if let Some(next) = rules.after(g, s.unit) {
                self.idle_sum -= rules.free(g) - rules.free(next);
                self.gpu[off + i] = next;
            }
        }
        if s.tag != 0 {
            match self.affinity[n].iter_mut().find(|(t, _)| *t == s.tag) {
                Some((_, c)) => *c += 1,
                None => self.affinity[n].push((s.tag, 1)),
            }
        }
        self.version[n] += 1;
        let f = self.setup.node_frag(self.setup.nodes[n].type_bit, self.cpu_left[n], self.gpus(n));
        self.frag_sum += f - self.frag[n];
        self.frag[n] = f;
        if self.policy == Policy::Tessera {
            self.tfrag[n] =
                f + self.setup.node_frag_by_capacity(self.setup.nodes[n].type_bit, self.cpu_left[n], self.gpus(n));
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
pub(crate) mod tests {
    use tessera_sim::rng::Rng;
    use tessera_sim::trace::{Node, Pod};

    use super::*;
    use crate::{Mode, setup};

    pub(crate) fn node(name: &str, cpu: u64, gpus: u32, model: &str) -> Node {
        Node { name: name.to_string(), cpu_milli: cpu, memory_mib: 1 << 20, gpus, model: model.to_string() }
    }

    pub(crate) fn pod(name: &str, cpu: u64, num_gpu: u32, gpu_milli: u32) -> Pod {
        Pod {
            name: name.to_string(),
            cpu_milli: cpu,
            memory_mib: 1024,
            num_gpu,
            gpu_milli,
            gpu_spec: Vec::new(),
            qos: String::new(),
            pod_phase: String::new(),
            creation_s: None,
            deletion_s: None,
            scheduled_s: None,
        }
    }

    /// Pods whose typical set is exactly: 20% CPU-only (1 core), 50% 500 milli-GPU with 1 core,
    /// 30% one whole GPU with 2 cores.
    fn typical_pods() -> Vec<Pod> {
        let mut v = Vec::new();
        for i in 0..2 {
            v.push(pod(&format!("c{i}"), 1000, 0, 0));
        }
        for i in 0..5 {
            v.push(pod(&format!("s{i}"), 1000, 1, 500));
        }
        for i in 0..3 {
            v.push(pod(&format!("w{i}"), 2000, 1, 1000));
        }
        v
    }

    #[test]
    fn fgd_fragmentation_table() {
        let s = setup(Mode::Shared, None, &[node("n0", 8000, 2, "T4")], &typical_pods()).unwrap();
        assert_eq!(s.typical_gpu.len(), 2);
        assert!((s.typical_cpu_share - 0.2).abs() < 1e-12);
        let t4 = s.nodes[0].type_bit;
        // (cpu left, GPU free milli, FGD's measure, by capacity), hand-computed:
        // [1000, 300], 4 cores: CPU-only .2×1300; 500-pod fits GPU0 → .5×300; whole fits GPU0 → .3×300.
        // [1000, 300], 1.5 cores: the whole-GPU pod lacks CPU → .3×1300.
        // [1000, 700]: everything fits the 500-pod (0), but by capacity GPU1 keeps 200 it cannot use.
        // [400, 300]: nothing fits → all 700 for every pod.
        // [0, 0]: nothing free → 0.
        let table: [(u64, [u16; 2], f64, f64); 5] = [
            (4000, [1000, 300], 260.0 + 150.0 + 90.0, 260.0 + 150.0 + 90.0),
            // By capacity the 1.5 cores hold one 500-pod: 800 of the 1300 stay unusable for it.
            (1500, [1000, 300], 260.0 + 150.0 + 390.0, 260.0 + 0.5 * 800.0 + 390.0),
            (4000, [1000, 700], 340.0 + 0.0 + 0.3 * 700.0, 340.0 + 0.5 * 200.0 + 0.3 * 700.0),
            (4000, [400, 300], 700.0, 700.0),
            (4000, [0, 0], 0.0, 0.0),
        ];
        for (cpu, gpus, fgd, cap) in table {
            let f = s.node_frag(t4, cpu, &gpus);
            assert!((f - fgd).abs() < 1e-9, "FGD frag of {gpus:?} cpu {cpu}: {f} != {fgd}");
            let c = s.node_frag_by_capacity(t4, cpu, &gpus);
            assert!((c - cap).abs() < 1e-9, "capacity frag of {gpus:?} cpu {cpu}: {c} != {cap}");
        }
        // A pod that may not use the node's GPU type finds all free capacity fragmented.
        let mut pods = typical_pods();
        for p in pods.iter_mut().filter(|p| p.num_gpu > 0) {
            p.gpu_spec = vec!["V100M16".to_string()];
        }
        let s = setup(Mode::Shared, None, &[node("n0", 8000, 2, "T4"), node("n1", 8000, 2, "V100M16")], &pods).unwrap();
        assert!((s.node_frag(s.nodes[0].type_bit, 4000, &[1000, 300]) - 1300.0).abs() < 1e-9);
        assert!((s.node_frag(s.nodes[1].type_bit, 4000, &[1000, 300]) - 500.0).abs() < 1e-9);
    }

    /// A simulator over `nodes` whose GPUs start in `states` (free milli per GPU), ranks 0, 1, ….
    fn sim_with<'a>(s: &'a Setup, policy: Policy, rank: &'a [u32], states: &[&[u16]]) -> Sim<'a> {
        let mut sim = Sim::new(s, policy, rank, Rng::new(1));
        for (n, st) in states.iter().enumerate() {
            let off = sim.gpu_off[n];
            sim.gpu[off..off + st.len()].copy_from_slice(st);
            sim.version[n] += 1;
            sim.frag[n] = s.node_frag(s.nodes[n].type_bit, sim.cpu_left[n], sim.gpus(n));
            sim.tfrag[n] = s.tessera_frag(s.nodes[n].type_bit, sim.cpu_left[n], sim.gpus(n));
        }
        sim
    }

    fn shape_of(s: &Setup, num_gpu: u32, gpu_milli: u32) -> usize {
        s.shapes.iter().position(|x| x.num_gpu == num_gpu && x.gpu_milli == gpu_milli).unwrap()
    }

    /// (policy, GPU states per node, node that gets the pod, its GPUs afterwards).
    type Case = (Policy, &'static [&'static [u16]], usize, [u16; 2]);

    #[test]
    fn policies_pick_the_node_and_gpu_the_artifact_would() {
        // Typical workload: only 700 milli-GPU pods (97%); arrivals of 300 and whole GPUs.
        let mut pods: Vec<Pod> = (0..100).map(|i| pod(&format!("a{i:03}"), 1000, 1, 700)).collect();
        pods.push(pod("b", 1000, 1, 300));
        pods.push(pod("w", 1000, 1, 1000));
        pods.push(pod("c", 1000, 0, 0));
        let nodes = [node("n0", 32000, 2, "T4"), node("n1", 32000, 2, "T4")];
        let s = setup(Mode::Shared, None, &nodes, &pods).unwrap();
        let share300 = shape_of(&s, 1, 300);
        assert_eq!(s.typical_gpu.len(), 1);
        // n1 wins ties.
        let rank = [1, 0];
        let cases: [Case; 8] = [
            // Best fit: the node with the least free GPU, and on it the tightest GPU.
            (Policy::BestFit, &[&[1000, 1000], &[1000, 800]], 1, [1000, 500]),
            // FGD: on n1, GPU1 would leave 500 that no 700 pod can use (score 37); GPU0 leaves 700,
            // usable (50, as good as n0; n1 wins the tie). Best fit would have taken GPU1.
            (Policy::Fgd, &[&[1000, 1000], &[1000, 800]], 1, [700, 800]),
            // Tessera agrees with FGD here.
            (Policy::Tessera, &[&[1000, 1000], &[1000, 800]], 1, [700, 800]),
            // Packing: share a used GPU rather than open a free one.
            (Policy::Packing, &[&[1000, 1000], &[1000, 800]], 1, [1000, 500]),
            // Dot product: the smallest (free · request): n1.
            (Policy::DotProd, &[&[1000, 1000], &[1000, 800]], 1, [1000, 500]),
            // Equal scores: the node of lower rank (n1), then the tightest GPU / first index.
            (Policy::BestFit, &[&[1000, 1000], &[1000, 1000]], 1, [700, 1000]),
            (Policy::Fgd, &[&[1000, 1000], &[1000, 1000]], 1, [700, 1000]),
            // Clustering: both nodes empty of pods → equal → lower rank.
            (Policy::Clustering, &[&[1000, 1000], &[1000, 1000]], 1, [700, 1000]),
        ];
        for (policy, states, want_node, want_gpus) in cases {
            let mut sim = sim_with(&s, policy, &rank, states);
            assert_eq!(sim.place(share300, 1024), Some(()), "{policy}");
            assert_eq!(sim.gpus(want_node), &want_gpus, "{policy} on {states:?}");
        }
        // Whole-GPU pods take the first free GPU; clustering then prefers the node with the same kind.
        let whole = shape_of(&s, 1, 1000);
        let mut sim = sim_with(&s, Policy::Clustering, &[0, 1], &[&[1000, 1000], &[1000, 1000]]);
        sim.affinity[1].push((3, 1));
        sim.version[1] += 1;
        assert_eq!(sim.place(whole, 1024), Some(()));
        assert_eq!(sim.gpus(1), &[0, 1000]);
        // No room: the pod fails and nothing changes.
        let mut sim = sim_with(&s, Policy::Fgd, &[0, 1], &[&[200, 0], &[0, 100]]);
        assert_eq!(sim.place(share300, 1024), None);
        assert_eq!(sim.gpus(0), &[200, 0]);
        // CPU or memory too short: the node is filtered out.
        let mut sim = sim_with(&s, Policy::BestFit, &[0, 1], &[&[1000, 1000], &[1000, 800]]);
        sim.cpu_left[1] = 500;
        sim.version[1] += 1;
        assert_eq!(sim.place(share300, 1024), Some(()));
        assert_eq!(sim.gpus(0), &[700, 1000]);
        let mut sim = sim_with(&s, Policy::BestFit, &[0, 1], &[&[1000, 1000], &[1000, 800]]);
        sim.mem_left[1] = 10;
        assert_eq!(sim.place(share300, 1024), Some(()));
        assert_eq!(sim.gpus(0), &[700, 1000]);
    }

    #[test]
    fn random_policy_is_deterministic_per_seed() {
        let pods: Vec<Pod> = (0..40).map(|i| pod(&format!("p{i:02}"), 1000, 1, 100 + 20 * i)).collect();
        let nodes: Vec<Node> = (0..6).map(|i| node(&format!("n{i}"), 32000, 4, "T4")).collect();
        let s = setup(Mode::Shared, None, &nodes, &pods).unwrap();
        let a = crate::run_one(&s, Policy::Random, 7, 130);
        let b = crate::run_one(&s, Policy::Random, 7, 130);
        let c = crate::run_one(&s, Policy::Random, 8, 130);
        assert_eq!(a.gpu_states, b.gpu_states);
        assert_ne!(a.gpu_states, c.gpu_states);
    }
}
