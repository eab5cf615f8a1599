//! Allocations: conflicts between exclusive and shared holders, release, live keys, runs, and a
//! property test of random allocate/release/requeue sequences against a model.

use proptest::prelude::*;
use tessera_store::{Allocation, JobState, Store, StoreError};

mod common;
use common::{OneSlice, placing_job, raw, slice, temp_store};

#[test]
fn exclusive_and_shared_conflicts() {
    let (_dir, store) = temp_store();
    let a = placing_job(&store, 1);
    let b = placing_job(&store, 2);
    let c = placing_job(&store, 3);

    store.allocate(a, 0, 0, &slice(0, 19, 0, true)).unwrap();
    // Same slice, exclusive or shared: refused, naming the holder.
    for exclusive in [true, false] {
        match store.allocate(b, 0, 0, &slice(0, 19, 0, exclusive)) {
            Err(StoreError::AlreadyAllocated { gpu_uuid, profile_id, start, holder_job }) => {
                assert_eq!((gpu_uuid, profile_id, start, holder_job), (slice(0, 19, 0, true).gpu_uuid, 19, 0, a));
            }
            other => panic!("expected AlreadyAllocated, got {other:?}"),
        }
    }
    // Another start, another profile or another GPU is a different slice.
    store.allocate(b, 0, 0, &slice(0, 19, 1, true)).unwrap();
    store.allocate(b, 1, 0, &slice(0, 14, 0, true)).unwrap();
    store.allocate(b, 2, 0, &slice(1, 19, 0, true)).unwrap();

    // Shared slices take any number of shared holders, and no exclusive one.
    store.allocate(a, 1, 0, &slice(2, 9, 4, false)).unwrap();
    store.allocate(c, 0, 0, &slice(2, 9, 4, false)).unwrap();
    store.allocate(c, 1, 0, &slice(2, 9, 4, false)).unwrap();
    let err = store.allocate(b, 3, 0, &slice(2, 9, 4, true)).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyAllocated { holder_job, .. } if holder_job == a), "{err:?}");
    assert!(err.to_string().contains(&format!("already allocated to job {a}")), "{err}");

    // One live allocation per rank.
    assert!(matches!(
        store.allocate(a, 0, 0, &slice(3, 19, 0, true)),
        Err(StoreError::RankAllocated { job, rank: 0, slice: 0 }) if job == a
    ));

    // Release frees every rank; released rows stay as history.
    assert_eq!(store.release(a).unwrap(), 2);
    assert_eq!(store.release(a).unwrap(), 0);
    store.allocate(b, 3, 0, &slice(0, 19, 0, true)).unwrap();
    let err = store.allocate(b, 4, 0, &slice(2, 9, 4, true)).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyAllocated { holder_job, .. } if holder_job == c));
    assert_eq!(store.job_allocations(a).unwrap().len(), 2);
    assert!(store.job_allocations(a).unwrap().iter().all(|r| r.released_ms.is_some()));
    // After its release, the rank may be allocated again.
    store.allocate(a, 0, 0, &slice(3, 19, 0, true)).unwrap();

    let live = common::live(&store);
    let keys: Vec<(u64, u32)> = live.iter().map(|(j, r, _)| (*j, *r)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "ordered by job, rank");
    assert_eq!(keys, vec![(a, 0), (b, 0), (b, 1), (b, 2), (b, 3), (c, 0), (c, 1)]);
}

#[test]
fn only_placing_or_running_jobs_hold_slices() {
    let (_dir, store) = temp_store();
    let q = store.insert_job(&common::new_job(1)).unwrap();
    assert!(matches!(
        store.allocate(q, 0, 0, &slice(0, 19, 0, true)),
        Err(StoreError::StaleState { expected: JobState::Placing, actual: JobState::Queued, .. })
    ));
    let r = placing_job(&store, 2);
    store.transition(r, JobState::Placing, JobState::Running, "started", 2).unwrap();
    store.allocate(r, 0, 0, &slice(0, 19, 0, true)).unwrap();
    store.transition(r, JobState::Running, JobState::Lost, "shim gone", 3).unwrap();
    assert!(matches!(
        store.allocate(r, 1, 0, &slice(0, 19, 1, true)),
        Err(StoreError::StaleState { actual: JobState::Lost, .. })
    ));
    for bad in [0, 999, u64::MAX] {
        assert!(matches!(store.allocate(bad, 0, 0, &slice(0, 1, 0, true)), Err(StoreError::JobNotFound { .. })));
        assert!(matches!(store.release(bad), Err(StoreError::JobNotFound { .. })));
        assert!(store.job_allocations(bad).unwrap().is_empty());
    }
}

#[test]
fn live_key_round_trip() {
    let (dir, store) = temp_store();
    let j = placing_job(&store, 1);
    let full = Allocation {
        gpu_instance_id: Some(7),
        compute_instance_id: Some(0),
        mig_uuid: Some("MIG-1234".into()),
        ..slice(5, 15, 6, true)
    };
    store.allocate(j, 0, 0, &full).unwrap();
    store.allocate(j, 1, 0, &slice(5, 19, 0, false)).unwrap();
    let live = common::live(&store);
    assert_eq!(live[0], (j, 0, full));
    assert_eq!(live[1].2, slice(5, 19, 0, false), "a slice allocated before its instance exists has no live key");
    // Survives a reopen.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(common::live(&store), live);
    // SQLite itself refuses a double booking that bypasses the store's checks.
    let conn = raw(dir.path());
    let err = conn
        .execute(
            "INSERT INTO allocations (job_id, rank, gpu_uuid, gpu_index, profile_id, start,
                 exclusive, allocated_ms) VALUES (?1, 5, ?2, 5, 19, 0, 1, 0)",
            rusqlite::params![j as i64, slice(5, 19, 0, false).gpu_uuid],
        )
        .unwrap_err();
    assert!(err.to_string().contains("slice already allocated"), "{err}");
    // A released allocation stays released.
    store.release(j).unwrap();
    let err = conn.execute("UPDATE allocations SET released_at = NULL", []).unwrap_err();
    assert!(err.to_string().contains("already released"), "{err}");
}

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        job: usize,
        rank: u32,
        gpu: u32,
        profile: u32,
        start: u8,
        exclusive: bool,
    },
    Release {
        job: usize,
    },
    /// placing → queued → placing: leaving the active states releases everything.
    Requeue {
        job: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..3u32, 0..2u32, prop_oneof![Just(9u32), Just(19)], 0..3u8, any::<bool>())
            .prop_map(|(job, rank, gpu, profile, start, exclusive)| Op::Allocate {
                job, rank, gpu, profile, start, exclusive
            }),
        1 => (0..4usize).prop_map(|job| Op::Release { job }),
        1 => (0..4usize).prop_map(|job| Op::Requeue { job }),
    ]
}

type Live = Vec<(u64, u32, Allocation)>;

/// What the model expects from an allocation.
enum Expect {
    Ok,
    Rank,
    Conflict(Vec<u64>),
}

fn expect(model: &Live, job: u64, rank: u32, a: &Allocation) -> Expect {
    if model.iter().any(|(j, r, _)| *j == job && *r == rank) {
        return Expect::Rank;
    }
    let holders: Vec<u64> = model
        .iter()
        .filter(|(_, _, m)| {
            m.gpu_uuid == a.gpu_uuid
                && m.profile_id == a.profile_id
                && m.start == a.start
                && (m.exclusive || a.exclusive)
        })
        .map(|(j, _, _)| *j)
        .collect();
    if holders.is_empty() { Expect::Ok } else { Expect::Conflict(holders) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn never_double_allocated(ops in proptest::collection::vec(op(), 1..60)) {
        let (_dir, store) = temp_store();
        let jobs: Vec<u64> = (0..4).map(|n| placing_job(&store, n)).collect();
        let mut model: Live = Vec::new();
        for op in ops {
            match op {
                Op::Allocate { job, rank, gpu, profile, start, exclusive } => {
                    let (job, a) = (jobs[job], slice(gpu, profile, start, exclusive));
                    let got = store.allocate(job, rank, 0, &a);
                    match expect(&model, job, rank, &a) {
                        Expect::Ok => {
                            prop_assert!(got.is_ok(), "{got:?}");
                            model.push((job, rank, a));
                        }
                        Expect::Rank => prop_assert!(
                            matches!(got, Err(StoreError::RankAllocated { .. })), "{got:?}"
                        ),
                        Expect::Conflict(holders) => prop_assert!(
                            matches!(&got, Err(StoreError::AlreadyAllocated { holder_job, .. })
                                if holders.contains(holder_job)),
                            "{got:?}, holders {holders:?}"
                        ),
                    }
                }
                Op::Release { job } => {
                    let n = store.release(jobs[job]).unwrap();
                    let before = model.len();
                    model.retain(|(j, _, _)| *j != jobs[job]);
                    prop_assert_eq!(n, before - model.len());
                }
                Op::Requeue { job } => {
                    store.transition(jobs[job], JobState::Placing, JobState::Queued, "requeue", 1).unwrap();
                    store.transition(jobs[job], JobState::Queued, JobState::Placing, "placed", 2).unwrap();
                    model.retain(|(j, _, _)| *j != jobs[job]);
                }
            }
            let mut want = model.clone();
            want.sort_by_key(|(j, r, _)| (*j, *r));
            let live = common::live(&store);
            prop_assert_eq!(&live, &want);
            // The invariant itself, on what the store says.
            for (i, (_, _, x)) in live.iter().enumerate() {
                for (_, _, y) in &live[i + 1..] {
                    let same = x.gpu_uuid == y.gpu_uuid && x.profile_id == y.profile_id && x.start == y.start;
                    prop_assert!(!(same && (x.exclusive || y.exclusive)), "{x:?} meets {y:?}");
                }
            }
        }
    }
}
