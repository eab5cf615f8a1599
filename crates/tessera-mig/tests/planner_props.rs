//! Property tests of the planner's invariants, on every model of the catalog.
//!
//! The oracle is the enumeration of maximal layouts: every valid layout is a subset of a maximal
//! one (all layout rules are monotone), so "can these profiles join this layout?" is answered by
//! looking for a maximal layout that contains both.

use proptest::prelude::*;
use tessera_mig::{
    CurrentInstance, GpuModel, Instance, PlaceError, Planner, ReconfigureError, Step, Wanted, WantedInstance, catalog,
    validate,
};

fn models() -> Vec<&'static GpuModel> {
    catalog().models.iter().collect()
}

/// Multiset of profile ids.
fn multiset(ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = ids.into_iter().collect();
    v.sort_unstable();
    v
}

/// Is `small` a sub-multiset of `big` (both sorted)?
fn sub_multiset(small: &[u32], big: &[u32]) -> bool {
    let mut big = big.to_vec();
    small.iter().all(|x| match big.iter().position(|y| y == x) {
        Some(p) => {
            big.remove(p);
            true
        }
        None => false,
    })
}

/// Oracle: can `wanted` be added next to `existing` without moving it?
fn feasible(maximal: &[Vec<Instance>], existing: &[Instance], wanted: &[u32]) -> bool {
    maximal.iter().any(|l| {
        existing.iter().all(|e| l.contains(e)) && {
            let rest: Vec<u32> = multiset(l.iter().filter(|i| !existing.contains(i)).map(|i| i.profile_id));
            sub_multiset(&multiset(wanted.iter().copied()), &rest)
        }
    })
}

/// A random model, a random valid layout (subset of a maximal one) and random wanted profiles.
fn scenario() -> impl Strategy<Value = (usize, usize, Vec<bool>, Vec<usize>, Vec<bool>)> {
    let n = models().len();
    (
        0..n,
        any::<usize>(),
        prop::collection::vec(any::<bool>(), 7),
        prop::collection::vec(any::<usize>(), 0..6),
        prop::collection::vec(any::<bool>(), 7),
    )
}

struct Case {
    model: &'static GpuModel,
    maximal: Vec<Vec<Instance>>,
    existing: Vec<Instance>,
    busy: Vec<bool>,
    wanted: Vec<u32>,
}

fn build(s: &(usize, usize, Vec<bool>, Vec<usize>, Vec<bool>)) -> Case {
    let (mi, li, keep, want_idx, busy) = s;
    let model = models()[*mi];
    let maximal = Planner::new(model).maximal_layouts(None);
    let base = &maximal[li % maximal.len()];
    let existing: Vec<Instance> = base.iter().zip(keep.iter().cycle()).filter(|(_, k)| **k).map(|(i, _)| *i).collect();
    let wanted: Vec<u32> = want_idx.iter().map(|k| model.profiles[k % model.profiles.len()].id).collect();
    Case { model, maximal, busy: busy.clone(), existing, wanted }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every plan is valid, keeps what exists, places exactly what was asked, and `place`
    /// succeeds exactly when the oracle says it can.
    #[test]
    fn every_placement_is_valid_and_complete(s in scenario()) {
        let c = build(&s);
        let pl = Planner::new(c.model);
        let wanted: Vec<WantedInstance> = c.wanted.iter().map(|&id| WantedInstance::new(id)).collect();
        let oracle = feasible(&c.maximal, &c.existing, &c.wanted);
        match pl.place(&wanted, &c.existing) {
            Ok(p) => {
                prop_assert!(oracle, "placed what the oracle says cannot fit");
                prop_assert!(validate(c.model, &p.layout).is_empty(), "invalid: {:?}", p.layout);
                for e in &c.existing {
                    prop_assert!(p.layout.contains(e), "moved an existing instance {e:?}");
                }
                prop_assert_eq!(multiset(p.placed.iter().map(|i| i.profile_id)), multiset(c.wanted.iter().copied()));
                prop_assert_eq!(p.layout.len(), c.existing.len() + c.wanted.len());
            }
            Err(PlaceError::Infeasible { alternative, .. }) => {
                prop_assert!(!oracle, "said infeasible but the oracle found a layout");
                if let Some(a) = alternative {
                    prop_assert!(validate(c.model, &a.placement.layout).is_empty());
                }
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// `reconfigure` never touches a busy instance, its steps keep every intermediate layout
    /// valid, and applying them yields exactly the target, which holds the wanted profiles.
    #[test]
    fn reconfigure_never_touches_busy_instances(s in scenario()) {
        let c = build(&s);
        let pl = Planner::new(c.model);
        let current: Vec<CurrentInstance> = c
            .existing
            .iter()
            .zip(c.busy.iter().cycle())
            .enumerate()
            .map(|(k, (i, b))| CurrentInstance { instance: *i, busy: *b, gpu_instance_id: Some(k as u32) })
            .collect();
        let busy: Vec<Instance> = current.iter().filter(|c| c.busy).map(|c| c.instance).collect();
        let wanted: Vec<WantedInstance> = c.wanted.iter().map(|&id| WantedInstance::new(id)).collect();
        let busy_ids = multiset(busy.iter().map(|i| i.profile_id));
        let want_ids = multiset(c.wanted.iter().copied());
        // Oracle: a layout holding every busy instance as it is and exactly the wanted profiles.
        let oracle = sub_multiset(&busy_ids, &want_ids) && {
            let mut rest = want_ids.clone();
            for b in &busy_ids {
                let p = rest.iter().position(|x| x == b).unwrap_or(usize::MAX);
                if p != usize::MAX { rest.remove(p); }
            }
            feasible(&c.maximal, &busy, &rest)
        };
        match pl.reconfigure(&current, &Wanted::Profiles(wanted)) {
            Ok(plan) => {
                prop_assert!(oracle, "planned what cannot exist");
                let mut layout: Vec<Instance> = c.existing.clone();
                for step in &plan.steps {
                    match step {
                        Step::Destroy { instance, .. } => {
                            prop_assert!(!busy.contains(instance), "destroys busy {instance:?}");
                            let p = layout.iter().position(|i| i == instance);
                            prop_assert!(p.is_some(), "destroys what is not there");
                            layout.remove(p.unwrap_or(0));
                        }
                        Step::Create { instance } => layout.push(*instance),
                    }
                    prop_assert!(validate(c.model, &layout).is_empty(), "intermediate layout invalid: {layout:?}");
                }
                let mut got = layout.clone();
                got.sort_by_key(|i| (i.start, i.profile_id));
                prop_assert_eq!(&got, &plan.target);
                for b in &busy {
                    prop_assert!(plan.target.contains(b));
                }
                prop_assert_eq!(multiset(plan.target.iter().map(|i| i.profile_id)), want_ids);
                // Idempotent: planning again from the target changes nothing.
                let again: Vec<CurrentInstance> = plan.target.iter().map(|i| CurrentInstance { instance: *i, busy: false, gpu_instance_id: None }).collect();
                let wanted2: Vec<WantedInstance> = c.wanted.iter().map(|&id| WantedInstance::new(id)).collect();
                let replan = pl.reconfigure(&again, &Wanted::Profiles(wanted2));
                prop_assert!(replan.map(|p| p.steps.is_empty()).unwrap_or(false));
            }
            Err(ReconfigureError::BusyInstancesBlock { blockers, .. }) => {
                prop_assert!(!oracle, "blocked although a layout around the busy instances exists");
                prop_assert!(!blockers.is_empty());
                for b in &blockers {
                    prop_assert!(busy.contains(&b.instance), "named an idle instance as a blocker");
                }
            }
            Err(ReconfigureError::Infeasible { .. }) => {
                prop_assert!(!feasible(&c.maximal, &[], &c.wanted), "said infeasible but the wish fits an empty GPU");
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    /// The fragmentation report is consistent with the layout.
    #[test]
    fn fragmentation_numbers_add_up(s in scenario()) {
        let c = build(&s);
        let r = Planner::new(c.model).fragmentation(&c.existing).expect("valid layout");
        prop_assert_eq!(r.free_compute_slices, r.usable_compute_slices + r.unusable_compute_slices);
        for u in &r.stranded_units {
            prop_assert!(r.free_units.contains(u));
        }
        // A maximal layout has nothing left to fit.
        if c.maximal.contains(&c.existing) {
            prop_assert!(r.fits.iter().all(|f| f.count == 0));
            prop_assert_eq!(r.usable_compute_slices, 0);
        }
    }
}
