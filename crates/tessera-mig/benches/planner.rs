//! Planner speed targets (issue #2), run with `cargo bench -p tessera-mig`; results are written
//! to docs/benchmarks.md. Each bench builds its `Planner` outside the timed loop, as the daemon
//! and simulator keep one per GPU model; `planner_new` shows what building one costs.

use std::hint::black_box;

use tessera_mig::{CurrentInstance, Instance, Planner, Wanted, WantedInstance, catalog};

fn main() {
    divan::main();
}

fn wanted(model: &str, names: &[&str]) -> Vec<WantedInstance> {
    let m = catalog().model(model).unwrap();
    names.iter().map(|n| WantedInstance::new(m.profile(n).unwrap().id)).collect()
}

/// Target: under 5 µs. Seven 1g.5gb on an empty A100-40GB.
#[divan::bench]
fn place_7x1g_empty_a100(b: divan::Bencher) {
    let pl = Planner::new(catalog().model("A100-40GB").unwrap());
    let w = wanted("A100-40GB", &["1g.5gb"; 7]);
    b.bench(|| pl.place(black_box(&w), black_box(&[])).unwrap());
}

/// Target: under 5 µs. A mixed seven-slice wish on an empty A100-40GB.
#[divan::bench]
fn place_mixed_3g_2g_1g_1g_empty_a100(b: divan::Bencher) {
    let pl = Planner::new(catalog().model("A100-40GB").unwrap());
    let w = wanted("A100-40GB", &["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]);
    b.bench(|| pl.place(black_box(&w), black_box(&[])).unwrap());
}

/// Target: under 5 ms in all. Every maximal layout of every model, all profiles.
#[divan::bench]
fn enumerate_layouts_every_model(b: divan::Bencher) {
    let planners: Vec<Planner<'_>> = catalog().models.iter().map(Planner::new).collect();
    b.bench(|| planners.iter().map(|p| p.maximal_layouts(None).len()).sum::<usize>());
}

/// Target: under 20 µs. H100 with 3g.40gb@0 busy (half the GPU) and 1g.10gb@4,5,6 idle; wish:
/// the busy 3g plus 2g.20gb + 1g.10gb, so two idle 1g's give way to the 2g.
#[divan::bench]
fn reconfigure_half_busy_h100(b: divan::Bencher) {
    let m = catalog().model("H100-80GB").unwrap();
    let pl = Planner::new(m);
    let id = |n: &str| m.profile(n).unwrap().id;
    let current = vec![
        CurrentInstance { instance: Instance::new(id("3g.40gb"), 0), busy: true, gpu_instance_id: Some(1) },
        CurrentInstance { instance: Instance::new(id("1g.10gb"), 4), busy: false, gpu_instance_id: Some(11) },
        CurrentInstance { instance: Instance::new(id("1g.10gb"), 5), busy: false, gpu_instance_id: Some(12) },
        CurrentInstance { instance: Instance::new(id("1g.10gb"), 6), busy: false, gpu_instance_id: Some(13) },
    ];
    let want = Wanted::Profiles(wanted("H100-80GB", &["3g.40gb", "2g.20gb", "1g.10gb"]));
    b.bench(|| pl.reconfigure(black_box(&current), black_box(&want)).unwrap());
}

/// The fragmentation report of a half-used A100.
#[divan::bench]
fn fragmentation_report_a100(b: divan::Bencher) {
    let m = catalog().model("A100-40GB").unwrap();
    let pl = Planner::new(m);
    let layout = vec![Instance::new(9, 0), Instance::new(19, 5)];
    b.bench(|| pl.fragmentation(black_box(&layout)).unwrap());
}

/// What building a planner (its tables) costs, per model.
#[divan::bench]
fn planner_new_h100(b: divan::Bencher) {
    let m = catalog().model("H100-80GB").unwrap();
    b.bench(|| Planner::new(black_box(m)));
}
