//! gres.conf, `Gres=` and the placeholder line as plain strings; the order that keeps held GRES
//! indices, as tables and as a property against an enumeration of every Type order.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tessera_slurm::{
    FileStyle, GresMap, LayoutError, OrderError, SliceRecord, group_by_type, node_gres, order_records,
    placeholder_node_line, render_gres_conf,
};

fn mig(gpu: u32, profile: &str, start: u8, ci: u32) -> SliceRecord {
    SliceRecord {
        gpu,
        gpu_minor: gpu,
        gpu_uuid: format!("GPU-{gpu}"),
        profile: profile.to_string(),
        start,
        size: 1,
        mig_uuid: Some(format!("MIG-{gpu}-{profile}-{start}")),
        gi_caps_minor: Some(ci - 1),
        ci_caps_minor: Some(ci),
        numa_node: None,
        cores: None,
    }
}

fn whole(gpu: u32, name: &str) -> SliceRecord {
    SliceRecord { mig_uuid: None, gi_caps_minor: None, ci_caps_minor: None, size: 8, ..mig(gpu, name, 0, 1) }
}

const HEADER: &str = "# Written by tessera slurm sync: do not edit; a record's position (from 0) is its Slurm GRES index \
                      (records grouped by Type, as slurmd numbers them).\n";

#[test]
fn gres_conf_single_files() {
    let mut a = mig(0, "3g.40gb", 4, 22);
    a.cores = Some("0-55".into());
    let records = vec![a, mig(0, "1g.10gb", 0, 13), mig(0, "1g.10gb", 1, 31), whole(1, "h100")];
    let want = format!(
        "{HEADER}\
Name=gpu Type=3g.40gb File=/dev/nvidia-caps/nvidia-cap22 Cores=0-55
Name=gpu Type=1g.10gb File=/dev/nvidia-caps/nvidia-cap13
Name=gpu Type=1g.10gb File=/dev/nvidia-caps/nvidia-cap31
Name=gpu Type=h100 File=/dev/nvidia1
"
    );
    assert_eq!(render_gres_conf(&records, "", FileStyle::Single).unwrap(), want);
    assert_eq!(render_gres_conf(&records, "/", FileStyle::Single).unwrap(), want);
    let rooted = render_gres_conf(&records[..1], "/tmp/sim/", FileStyle::Single).unwrap();
    assert_eq!(
        rooted,
        format!("{HEADER}Name=gpu Type=3g.40gb File=/tmp/sim/dev/nvidia-caps/nvidia-cap22 Cores=0-55\n")
    );
}

#[test]
fn gres_conf_multiple_files() {
    let records = vec![mig(2, "1g.10gb", 0, 13), whole(3, "a100")];
    let want = format!(
        "{HEADER}\
Name=gpu Type=1g.10gb MultipleFiles=/srv/x/dev/nvidia2,/srv/x/dev/nvidia-caps/nvidia-cap12,/srv/x/dev/nvidia-caps/nvidia-cap13
Name=gpu Type=a100 File=/srv/x/dev/nvidia3
"
    );
    assert_eq!(render_gres_conf(&records, "/srv/x", FileStyle::Multiple).unwrap(), want);
    assert_eq!(render_gres_conf(&[], "", FileStyle::Multiple).unwrap(), HEADER);
}

#[test]
fn gres_conf_refusals() {
    let mut no_ci = mig(1, "2g.20gb", 2, 40);
    no_ci.ci_caps_minor = None;
    let mut no_gi = mig(1, "2g.20gb", 2, 40);
    no_gi.gi_caps_minor = None;
    let bad_type = mig(0, "1g:10gb", 0, 5);
    let mut bad_cores = mig(0, "1g.10gb", 0, 5);
    bad_cores.cores = Some("0-3 x".into());
    let cases: Vec<(Vec<SliceRecord>, FileStyle, &str)> = vec![
        (
            vec![no_ci],
            FileStyle::Single,
            "GPU 1's 2g.20gb instance at slice 2 has no compute instance caps minor: Slurm cannot isolate it without \
             its /dev/nvidia-caps file",
        ),
        (
            vec![no_gi.clone()],
            FileStyle::Multiple,
            "GPU 1's 2g.20gb instance at slice 2 has no GPU instance caps minor: Slurm cannot isolate it without its \
             /dev/nvidia-caps file",
        ),
        (vec![bad_type], FileStyle::Single, "'1g:10gb' cannot be a Slurm GRES Type (letters, digits and '._+-' only)"),
        (
            vec![bad_cores],
            FileStyle::Single,
            "GPU 0's core list '0-3 x' is not a Slurm core list such as '0-55,112-167'",
        ),
        (
            vec![mig(0, "1g.10gb", 0, 5), mig(0, "2g.20gb", 2, 7), mig(0, "1g.10gb", 1, 9)],
            FileStyle::Single,
            "record 2 (1g.10gb) is apart from the earlier 1g.10gb records: records must be grouped by Type, as slurmd \
             numbers them",
        ),
        (
            vec![mig(0, "1g.10gb", 0, 5), mig(0, "1g.10gb", 0, 9)],
            FileStyle::Single,
            "GPU 0's 1g.10gb instance at slice 0 is listed twice",
        ),
    ];
    for (records, style, want) in cases {
        assert_eq!(render_gres_conf(&records, "", style).unwrap_err().to_string(), want);
    }
    // Single style needs only the compute instance's file.
    assert!(render_gres_conf(&[no_gi], "", FileStyle::Single).is_ok());
    assert!(matches!(render_gres_conf(&[mig(0, "", 0, 3)], "", FileStyle::Single), Err(LayoutError::BadType { .. })));
}

#[test]
fn node_gres_and_grouping_follow_first_appearance() {
    let records =
        vec![mig(0, "1g.10gb", 0, 3), mig(0, "3g.40gb", 4, 5), mig(1, "1g.10gb", 0, 7), mig(1, "1g.10gb", 1, 9)];
    assert_eq!(node_gres(&records), "gpu:1g.10gb:3,gpu:3g.40gb:1");
    assert_eq!(node_gres(&[]), "");
    let grouped = group_by_type(&records);
    let keys: Vec<_> = grouped.iter().map(|r| (r.gpu, r.profile.as_str(), r.start)).collect();
    assert_eq!(keys, vec![(0, "1g.10gb", 0), (1, "1g.10gb", 0), (1, "1g.10gb", 1), (0, "3g.40gb", 4)]);
    assert!(render_gres_conf(&grouped, "", FileStyle::Single).is_ok());
}

#[test]
fn placeholder_line() {
    let types = vec![("7g.80gb".to_string(), 8), ("1g.10gb".to_string(), 56)];
    assert_eq!(
        placeholder_node_line("tessera-future", 224, &types),
        "NodeName=tessera-future State=FUTURE CPUs=224 Gres=gpu:7g.80gb:8,gpu:1g.10gb:56"
    );
    assert_eq!(placeholder_node_line("f", 1, &[]), "NodeName=f State=FUTURE CPUs=1");
}

#[test]
fn gres_map_round_trips_and_finds_indices() {
    let map = GresMap {
        version: GresMap::VERSION,
        node: "vm".into(),
        generation: 3,
        style: FileStyle::Single,
        records: vec![mig(0, "3g.40gb", 4, 5), mig(0, "1g.10gb", 0, 7)],
    };
    let json = serde_json::to_string(&map).unwrap();
    assert!(json.contains(r#""style":"single""#), "{json}");
    assert_eq!(serde_json::from_str::<GresMap>(&json).unwrap(), map);
    assert_eq!(map.index_of(&(0, "1g.10gb".into(), 0)), Some(1));
    assert_eq!(map.index_of(&(0, "1g.10gb".into(), 1)), None);
    assert_eq!(map.record(0).map(|r| r.profile.as_str()), Some("3g.40gb"));
    assert_eq!(map.record(2), None);
    assert_eq!(
        map.held([1, 9]).into_iter().map(|(i, r)| (i, r.profile)).collect::<Vec<_>>(),
        vec![(1, "1g.10gb".into())]
    );
}

fn keys(records: &[SliceRecord]) -> Vec<(u32, &str, u8)> {
    records.iter().map(|r| (r.gpu, r.profile.as_str(), r.start)).collect()
}

#[test]
fn order_without_held_records_is_the_preferred_one() {
    let records = vec![
        mig(1, "1g.10gb", 0, 3),
        mig(0, "1g.10gb", 1, 5),
        mig(0, "2g.20gb", 2, 7),
        mig(0, "1g.10gb+me", 0, 9),
        mig(0, "3g.40gb", 4, 11),
        mig(2, "1g.20gb", 6, 13),
        whole(3, "h100"),
    ];
    let got = order_records(records, &BTreeMap::new()).unwrap();
    assert_eq!(
        keys(&got),
        vec![
            (0, "1g.10gb", 1),
            (1, "1g.10gb", 0),
            (0, "1g.10gb+me", 0),
            (2, "1g.20gb", 6),
            (0, "2g.20gb", 2),
            (0, "3g.40gb", 4),
            (3, "h100", 0),
        ]
    );
}

#[test]
fn held_records_keep_their_indices() {
    // Before: 3g at 0, three 1g at 1..3; a job holds index 3 (GPU 1's 1g at slice 1).
    let before = [mig(0, "3g.40gb", 4, 3), mig(0, "1g.10gb", 0, 5), mig(1, "1g.10gb", 0, 7), mig(1, "1g.10gb", 1, 9)];
    let held: BTreeMap<u32, SliceRecord> = [(3, before[3].clone())].into();
    // After: the 3g is gone and a 2g.20gb and another 1g appear; the held 1g must stay at 3.
    let after = vec![
        mig(0, "2g.20gb", 0, 11),
        mig(0, "1g.10gb", 2, 13),
        mig(0, "1g.10gb", 3, 15),
        mig(1, "1g.10gb", 0, 7),
        mig(1, "1g.10gb", 1, 9),
    ];
    let got = order_records(after.clone(), &held).unwrap();
    assert_eq!(
        keys(&got),
        vec![(0, "1g.10gb", 2), (0, "1g.10gb", 3), (1, "1g.10gb", 0), (1, "1g.10gb", 1), (0, "2g.20gb", 0)]
    );
    // Held at index 4 instead: the 2g block must come first, though the 1g is preferred.
    let held4: BTreeMap<u32, SliceRecord> = [(4, before[3].clone())].into();
    let got = order_records(after, &held4).unwrap();
    assert_eq!(
        keys(&got),
        vec![(0, "2g.20gb", 0), (0, "1g.10gb", 2), (0, "1g.10gb", 3), (1, "1g.10gb", 0), (1, "1g.10gb", 1)]
    );
}

#[test]
fn order_refusals() {
    let a = mig(0, "1g.10gb", 0, 3);
    let b = mig(0, "2g.20gb", 2, 5);
    let c = mig(0, "3g.40gb", 4, 7);
    type Case = (Vec<SliceRecord>, Vec<(u32, SliceRecord)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![a.clone()],
            vec![(1, b.clone())],
            "GRES index 1 is held but its record (GPU 0 2g.20gb at slice 2) is gone",
        ),
        // An index past the end of the new records.
        (
            vec![a.clone(), b.clone()],
            vec![(2, b.clone())],
            "no grouping of the records by Type keeps the held GRES indices 2 (2g.20gb)",
        ),
        (
            vec![a.clone(), mig(1, "1g.10gb", 0, 9), b.clone()],
            vec![(0, a.clone()), (1, b.clone())],
            "no grouping of the records by Type keeps the held GRES indices 0 (1g.10gb), 1 (2g.20gb)",
        ),
        (vec![a.clone(), a.clone()], vec![], "GPU 0's 1g.10gb instance at slice 0 is listed twice"),
        (
            vec![a.clone(), b.clone(), c.clone()],
            vec![(0, a.clone()), (2, a.clone())],
            "no grouping of the records by Type keeps the held GRES indices 0 (1g.10gb), 2 (1g.10gb)",
        ),
    ];
    for (records, held, want) in cases {
        let held: BTreeMap<u32, SliceRecord> = held.into_iter().collect();
        assert_eq!(order_records(records, &held).unwrap_err().to_string(), want);
    }
    assert!(matches!(order_records(vec![a], &[(5, b)].into()), Err(OrderError::Gone { index: 5, .. })));
}

#[test]
fn many_types_without_held_records_are_ordered_and_with_them_searched_within_a_bound() {
    let profiles =
        ["1g.5gb", "1g.10gb", "2g.10gb", "2g.20gb", "3g.20gb", "3g.40gb", "4g.20gb", "4g.40gb", "7g.40gb", "7g.80gb"];
    let records: Vec<SliceRecord> =
        profiles.iter().enumerate().map(|(i, p)| mig(i as u32, p, 0, 2 * i as u32 + 1)).collect();
    let got = order_records(records.clone(), &BTreeMap::new()).unwrap();
    assert_eq!(got.first().map(|r| r.profile.as_str()), Some("1g.5gb"));
    // Ten types with a record held where the preferred order puts it: found at once.
    let held: BTreeMap<u32, SliceRecord> = [(0, got[0].clone())].into();
    assert_eq!(order_records(records.clone(), &held).unwrap(), got);
    // Two records of one Type held at 0 and 10 cannot be contiguous.
    let mut more = records.clone();
    more.push(mig(20, "1g.5gb", 1, 99));
    let held: BTreeMap<u32, SliceRecord> = [(0, more[0].clone()), (10, more[10].clone())].into();
    assert!(matches!(order_records(more, &held), Err(OrderError::NoOrder { .. })));
    // Nine Types of two records and one of one held at an odd index: no order exists, but only
    // the 9! orders of the others show it, past the bound.
    let mut pairs: Vec<SliceRecord> =
        profiles[..9].iter().enumerate().flat_map(|(i, p)| [mig(i as u32, p, 0, 1), mig(i as u32, p, 1, 3)]).collect();
    let single = mig(0, "7g.80gb", 0, 5);
    pairs.push(single.clone());
    let held: BTreeMap<u32, SliceRecord> = [(17, single)].into();
    assert_eq!(
        order_records(pairs, &held).unwrap_err().to_string(),
        "10 GPU Types on one node with held records: more than the 8 whose orders are searched"
    );
}

// ---------- the property ----------

const PROFILES: [&str; 6] = ["h100", "7g.80gb", "3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb+me"];

fn record_for(gpu: u32, t: usize, start: u8) -> SliceRecord {
    if t == 0 { whole(gpu, PROFILES[0]) } else { mig(gpu, PROFILES[t], start, u32::from(start) + 1) }
}

/// Types (by first appearance in `records`) in the order `order` lists them, if it is grouped.
fn type_blocks(order: &[SliceRecord]) -> Option<Vec<&str>> {
    let mut types: Vec<&str> = Vec::new();
    for (i, r) in order.iter().enumerate() {
        if i == 0 || order[i - 1].profile != r.profile {
            if types.contains(&r.profile.as_str()) {
                return None;
            }
            types.push(&r.profile);
        }
    }
    Some(types)
}

/// The oracle: every order of the Types, in preference-lexicographic order; the first whose blocks
/// put each held index in its Type's block.
fn oracle(records: &[SliceRecord], held: &BTreeMap<u32, SliceRecord>) -> Option<Vec<String>> {
    let mut types: Vec<String> =
        records.iter().map(|r| r.profile.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    // Preference: smallest first, whole GPUs last.
    const PREFERENCE: [&str; 6] = ["1g.10gb", "1g.10gb+me", "2g.20gb", "3g.40gb", "7g.80gb", "h100"];
    types.sort_by_key(|t| PREFERENCE.iter().position(|p| p == t));
    let count = |t: &str| records.iter().filter(|r| r.profile == t).count();
    let mut perms = Vec::new();
    permutations(&types, &mut Vec::new(), &mut perms);
    perms.into_iter().find(|perm| {
        let mut offset = 0;
        let mut block = BTreeMap::new();
        for t in perm {
            block.insert(t.clone(), offset..offset + count(t));
            offset += count(t);
        }
        held.iter().all(|(&i, r)| block.get(&r.profile).is_some_and(|b| b.contains(&(i as usize))))
    })
}

fn permutations(items: &[String], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if prefix.len() == items.len() {
        out.push(prefix.clone());
        return;
    }
    for it in items {
        if !prefix.contains(it) {
            prefix.push(it.clone());
            permutations(items, prefix, out);
            prefix.pop();
        }
    }
}

fn check_result(
    records: &[SliceRecord],
    held: &BTreeMap<u32, SliceRecord>,
    got: &[SliceRecord],
) -> Result<(), TestCaseError> {
    // A permutation.
    let mut a: Vec<_> = records.iter().map(SliceRecord::key).collect();
    let mut b: Vec<_> = got.iter().map(SliceRecord::key).collect();
    a.sort();
    b.sort();
    prop_assert_eq!(a, b);
    // Grouped by Type.
    prop_assert!(type_blocks(got).is_some(), "not grouped: {:?}", keys(got));
    // Every held index holds the same key.
    for (&i, r) in held {
        prop_assert_eq!(got.get(i as usize).map(SliceRecord::key), Some(r.key()), "index {}", i);
    }
    // The others of each Type by (gpu, start).
    let held_keys: BTreeSet<_> = held.values().map(SliceRecord::key).collect();
    let free: Vec<_> = got.iter().filter(|r| !held_keys.contains(&r.key())).collect();
    for w in free.windows(2) {
        if w[0].profile == w[1].profile {
            prop_assert!((w[0].gpu, w[0].start) < (w[1].gpu, w[1].start));
        }
    }
    Ok(())
}

/// A record set: distinct (gpu, type, start) keys, whole GPUs at start 0.
fn record_set(max: usize) -> impl Strategy<Value = Vec<SliceRecord>> {
    prop::collection::btree_set((0u32..3, 0usize..PROFILES.len(), 0u8..7), 1..max).prop_map(|keys| {
        keys.into_iter()
            .map(|(gpu, t, start)| if t == 0 { (gpu + 10, 0, 0) } else { (gpu, t, start) })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(gpu, t, start)| record_for(gpu, t, start))
            .collect()
    })
}

/// A previous order: the records grouped by Type, Types and records within them shuffled.
fn previous_order(records: Vec<SliceRecord>) -> impl Strategy<Value = Vec<SliceRecord>> {
    let types: Vec<String> = group_by_type(&records).iter().map(|r| r.profile.clone()).collect::<Vec<_>>();
    let mut distinct = types.clone();
    distinct.dedup();
    (Just(distinct).prop_shuffle(), Just(records).prop_shuffle()).prop_map(|(types, records)| {
        types.iter().flat_map(|t| records.iter().filter(move |r| &r.profile == t)).cloned().collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The new set is the old one plus records of new Types: the old order extended works, so an
    /// order must be found, and it must keep every held index.
    #[test]
    fn held_indices_are_kept_when_records_are_only_added(
        (prev, held_mask, extra) in record_set(10)
            .prop_flat_map(previous_order)
            .prop_flat_map(|prev| {
                let n = prev.len();
                (Just(prev), prop::collection::vec(any::<bool>(), n), record_set(5))
            })
    ) {
        let held: BTreeMap<u32, SliceRecord> =
            prev.iter().enumerate().filter(|(i, _)| held_mask[*i]).map(|(i, r)| (i as u32, r.clone())).collect();
        let old_types: BTreeSet<&str> = prev.iter().map(|r| r.profile.as_str()).collect();
        let mut records = prev.clone();
        records.extend(extra.into_iter().filter(|r| !old_types.contains(r.profile.as_str())));
        let got = order_records(records.clone(), &held);
        prop_assert!(got.is_ok(), "{:?}", got);
        check_result(&records, &held, &got.unwrap())?;
    }

    /// Records come and go (held ones stay): an order is found exactly when one exists, it keeps
    /// every held index, and its Types are in the first working order of preference.
    #[test]
    fn an_order_is_found_exactly_when_one_exists(
        (prev, held_mask, keep_mask, extra) in record_set(9)
            .prop_flat_map(previous_order)
            .prop_flat_map(|prev| {
                let n = prev.len();
                (Just(prev), prop::collection::vec(any::<bool>(), n), prop::collection::vec(any::<bool>(), n), record_set(4))
            })
    ) {
        let held: BTreeMap<u32, SliceRecord> =
            prev.iter().enumerate().filter(|(i, _)| held_mask[*i]).map(|(i, r)| (i as u32, r.clone())).collect();
        let mut records: Vec<SliceRecord> =
            prev.iter().enumerate().filter(|(i, _)| held_mask[*i] || keep_mask[*i]).map(|(_, r)| r.clone()).collect();
        for r in extra {
            if !records.iter().any(|o| o.key() == r.key()) {
                records.push(r);
            }
        }
        let want = oracle(&records, &held);
        match order_records(records.clone(), &held) {
            Ok(got) => {
                check_result(&records, &held, &got)?;
                let types: Vec<String> = type_blocks(&got).unwrap_or_default().into_iter().map(String::from).collect();
                prop_assert_eq!(Some(types), want);
            }
            Err(OrderError::NoOrder { .. }) => prop_assert_eq!(want, None),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}
