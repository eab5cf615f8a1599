//! A model of kube-scheduler's structured allocator over a node's published ResourceSlices, to
//! measure what a DRA driver's device order does (issue 13).
//!
//! The allocator (`anchors-2026-update.md` §1.1, §4.3) visits the pool's devices in slice order,
//! then device order, and takes the **first** device that matches the request and whose
//! `consumesCounters` still fit the counter sets: a counter's remaining value is its published
//! value minus what the devices of every allocated claim on the node consume. There is no scoring.
//! [`first_fit`] is that rule, with the counter arithmetic on the Kubernetes quantities the
//! slices carry (`"10240Mi"`, `"1"`); [`nvidia_order`] republishes the same devices in NVIDIA's
//! DRA driver's order (by its device names, `gpu-<minor>-mig-<profile>-<profileID>-<start>`, §1.2),
//! so the two orders can be compared on the same devices and the same counters.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use tessera_kube_core::dra::{Attribute, Device, ResourcePool, ResourceSlice, ResourceSliceSpec};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want<'a> {
    /// A MIG device of this profile (`profile == "3g.40gb"`).
    Profile(&'a str),
    /// A whole GPU (`type == "gpu"`).
    WholeGpu,
}

/// Why the allocator cannot use a pool (the API server's validation would refuse it, or the
/// allocator would skip it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("quantity '{value}': {reason}")]
    Quantity { value: String, reason: &'static str },
    #[error("device '{device}' consumes from counter set '{set}', which the pool does not publish")]
    UnknownCounterSet { device: String, set: String },
    #[error("device '{device}' consumes counter '{counter}', which counter set '{set}' does not have")]
    UnknownCounter { device: String, set: String, counter: String },
    #[error("allocated device '{device}' is not in the pool")]
    UnknownDevice { device: String },
    #[error("counter set '{set}' is published twice")]
    DuplicateCounterSet { set: String },
    #[error("device '{device}': {reason}")]
    Device { device: String, reason: String },
}

/// The one reader of Kubernetes quantities ([`tessera_kube_core::quantity`]), its error as the
/// allocator's.
pub fn parse_quantity(value: &str) -> Result<i128, AllocError> {
    tessera_kube_core::quantity::parse_quantity(value)
        .map_err(|e| AllocError::Quantity { value: e.value, reason: e.reason })
}

/// A pool read once for allocation: every counter's published value and what each device takes,
/// by index, in the allocator's visiting order.
#[derive(Debug, Clone)]
pub struct Pool {
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Per device: `type` is `gpu`, and its `profile` attribute.
    whole: Vec<bool>,
    profile: Vec<Option<String>>,
    takes: Vec<Vec<(usize, i128)>>,
    totals: Vec<i128>,
}

impl Pool {
    /// Read `slices` (one pool): counter sets from every slice, devices in slice, then device order.
    pub fn new(slices: &[ResourceSlice]) -> Result<Pool, AllocError> {
        let mut counter: HashMap<(String, String), usize> = HashMap::new();
        let mut sets: HashSet<&str> = HashSet::new();
        let mut totals = Vec::new();
        for s in slices {
            for set in &s.spec.shared_counters {
                if !sets.insert(set.name.as_str()) {
                    return Err(AllocError::DuplicateCounterSet { set: set.name.clone() });
                }
                for (name, q) in &set.counters {
                    counter.insert((set.name.clone(), name.clone()), totals.len());
                    totals.push(parse_quantity(&q.value)?);
                }
            }
        }
        let mut pool = Pool {
            names: Vec::new(),
            by_name: HashMap::new(),
            whole: Vec::new(),
            profile: Vec::new(),
            takes: Vec::new(),
            totals,
        };
        for d in slices.iter().flat_map(|s| &s.spec.devices) {
            let mut take = Vec::new();
            for c in &d.consumes_counters {
                for (name, q) in &c.counters {
                    let Some(&k) = counter.get(&(c.counter_set.clone(), name.clone())) else {
                        return Err(if sets.contains(c.counter_set.as_str()) {
                            AllocError::UnknownCounter {
                                device: d.name.clone(),
                                set: c.counter_set.clone(),
                                counter: name.clone(),
                            }
                        } else {
                            AllocError::UnknownCounterSet { device: d.name.clone(), set: c.counter_set.clone() }
                        });
                    };
                    take.push((k, parse_quantity(&q.value)?));
                }
            }
            let string = |key: &str| match d.attributes.get(key) {
                Some(Attribute::String(v)) => Some(v.clone()),
                _ => None,
            };
            let kind = string("type");
            pool.by_name.insert(d.name.clone(), pool.names.len());
            pool.names.push(d.name.clone());
            pool.whole.push(kind.as_deref() == Some("gpu"));
            pool.profile.push(if kind.as_deref() == Some("mig") { string("profile") } else { None });
            pool.takes.push(take);
        }
        Ok(pool)
    }

    /// The devices, in the allocator's visiting order.
    pub fn devices(&self) -> &[String] {
        &self.names
    }

    /// The first device `want` matches, not in `allocated`, whose counters fit what the
    /// `allocated` devices leave; `None` when none does. Errors: an allocated device the pool does
    /// not have.
    pub fn first_fit(&self, allocated: &[String], want: Want<'_>) -> Result<Option<&str>, AllocError> {
        let mut left = self.totals.clone();
        let mut taken = vec![false; self.names.len()];
        for name in allocated {
            let &k = self.by_name.get(name).ok_or_else(|| AllocError::UnknownDevice { device: name.clone() })?;
            taken[k] = true;
            for &(c, n) in &self.takes[k] {
                left[c] -= n;
            }
        }
        for (k, name) in self.names.iter().enumerate() {
            let matches = match want {
                Want::Profile(p) => self.profile[k].as_deref() == Some(p),
                Want::WholeGpu => self.whole[k],
            };
            if taken[k] || !matches {
                continue;
            }
            if self.takes[k].iter().all(|&(c, n)| left[c] >= n) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }
}

/// The first device of `slices` (slice order, then device order) that `want` matches (`profile`
/// equal to the wanted profile on a `type: mig` device, or `type: gpu`), that is not in
/// `allocated`, and whose `consumesCounters` fit what the `allocated` devices leave of the counter
/// sets; `None` when none does.
///
/// `allocated` are the devices of every claim allocated in the pool (the node). Errors: a device
/// that consumes a counter set or counter the pool does not publish, an allocated device the pool
/// does not have, a quantity that does not parse.
pub fn first_fit(slices: &[ResourceSlice], allocated: &[String], want: Want<'_>) -> Result<Option<String>, AllocError> {
    Ok(Pool::new(slices)?.first_fit(allocated, want)?.map(str::to_string))
}

/// A device's name as NVIDIA's DRA driver names it: `gpu-<minor>` for the whole GPU,
/// `gpu-<minor>-mig-<profile without dots>-<profileID>-<placementStart>` for a MIG device
/// (`gpu-0-mig-1g10gb-19-0`; the profile as its driver writes it: dots dropped, then made an
/// RFC 1123 label). The GPU's index stands in for its minor number.
pub fn nvidia_name(d: &Device) -> Result<(u32, String), AllocError> {
    let bad = |reason: &str| AllocError::Device { device: d.name.clone(), reason: reason.to_string() };
    let int = |key: &str| match d.attributes.get(key) {
        Some(Attribute::Int(v)) => Ok(*v),
        _ => Err(bad(&format!("has no integer attribute '{key}'"))),
    };
    let string = |key: &str| match d.attributes.get(key) {
        Some(Attribute::String(v)) => Ok(v.as_str()),
        _ => Err(bad(&format!("has no string attribute '{key}'"))),
    };
    let index = u32::try_from(int("index")?).map_err(|_| bad("index out of range"))?;
    if string("type")? == "gpu" {
        return Ok((index, format!("gpu-{index}")));
    }
    let profile = string("profile")?;
    let model = tessera_mig::catalog().model(string("model")?).map_err(|e| bad(&e.to_string()))?;
    let id = model.profile(profile).map_err(|e| bad(&e.to_string()))?.id;
    let start = int("placementStart")?;
    // Dots dropped, then RFC 1123: lowercase, anything else a '-', no '-' at the ends
    // (`1g.10gb+me` -> `1g10gb-me`).
    let label: String = profile
        .chars()
        .filter(|c| *c != '.')
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' { c } else { '-' })
        .collect();
    let label = label.trim_matches('-');
    Ok((index, format!("gpu-{index}-mig-{label}-{id}-{start}")))
}

/// The same pool in NVIDIA's order, in the shape its driver publishes on Kubernetes 1.35 and later
/// (`anchors-2026-update.md` §1.1): the counter sets first, then one device slice per GPU, each
/// sorted by NVIDIA's device name. Counter sets, devices and what they consume are unchanged.
pub fn nvidia_order(slices: &[ResourceSlice]) -> Result<Vec<ResourceSlice>, AllocError> {
    let Some(first) = slices.first() else { return Ok(Vec::new()) };
    let sets: Vec<_> = slices.iter().flat_map(|s| s.spec.shared_counters.iter().cloned()).collect();
    let mut per_gpu: BTreeMap<u32, Vec<(String, Device)>> = BTreeMap::new();
    for d in slices.iter().flat_map(|s| &s.spec.devices) {
        let (gpu, name) = nvidia_name(d)?;
        per_gpu.entry(gpu).or_default().push((name, d.clone()));
    }
    let spec = |shared_counters, devices| ResourceSliceSpec {
        driver: first.spec.driver.clone(),
        node_name: first.spec.node_name.clone(),
        pool: first.spec.pool.clone(),
        shared_counters,
        devices,
    };
    let mut out: Vec<ResourceSliceSpec> =
        sets.chunks(tessera_kube_core::dra::MAX_COUNTER_SETS_PER_SLICE).map(|c| spec(c.to_vec(), Vec::new())).collect();
    for (_, mut ds) in per_gpu {
        ds.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(spec(Vec::new(), ds.into_iter().map(|(_, d)| d).collect()));
    }
    let count = i64::try_from(out.len()).unwrap_or(i64::MAX);
    Ok(out
        .into_iter()
        .map(|mut s| {
            s.pool = ResourcePool { resource_slice_count: count, ..s.pool };
            ResourceSlice { spec: s }
        })
        .collect())
}
