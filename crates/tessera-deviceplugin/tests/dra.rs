//! The DRA kubelet plugin end to end: the daemon's engine on a simulated H100 node, the plugin
//! on its Unix sockets, and a kubelet stand-in speaking the real protocols (plugin watcher
//! registration, DRA v1 and v1beta1, resource health).

#[path = "common/dra_kubelet.rs"]
mod dra_kubelet;

use std::time::Duration;

use dra_kubelet::{Ctx, Kubelet, Plugin, WAIT, claim, claim_jobs, device, eventually, instances, on_daemon, root};
use tessera_daemon::api::Service;
use tessera_daemon::engine::Action;
use tessera_daemon::wire::LayoutRequest;
use tessera_deviceplugin::dra::api::health::HealthStatus;
use tessera_kube_core::dra::InstanceUse;
use tessera_kube_core::dra_claim::{ClaimAllocation, ClaimConfig, ConfigSource};
use tessera_store::JobState;
use tokio_stream::StreamExt;

const H100: &str = "1xH100-80GB,numa=1,cpus=16";

fn one(name: &str) -> ClaimAllocation {
    ClaimAllocation { devices: vec![device("gpu", name)], config: Vec::new(), run_as_user: None }
}

fn spec_of(ctx: &Ctx, uid: &str) -> std::path::PathBuf {
    ctx.options.cdi_dir.join(format!("gpu.tessera.dev-claim_{uid}.json"))
}

/// How GPU 0's instance at `start` is published.
fn published_use(plugin: &Plugin, start: u8) -> Option<InstanceUse> {
    let gpus = plugin.published.borrow().clone();
    gpus[0].instances.iter().find(|i| i.instance.start == start).map(|i| i.held_by)
}

#[test]
fn a_1g_claim_is_made_at_its_placement_prepared_once_and_given_back() {
    on_daemon(H100, |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        assert_eq!(kubelet.info.endpoint, ctx.options.plugin_dir.join("dra.sock").display().to_string());
        let c = claim("uid-1");
        ctx.claims.set(&c.uid, one("gpu-0-1g-10gb-p3"));

        let answer = kubelet.prepare(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(answer.error, "", "{answer:?}");
        let [d] = answer.devices.as_slice() else { panic!("{answer:?}") };
        assert_eq!((d.pool_name.as_str(), d.device_name.as_str()), ("node-a", "gpu-0-1g-10gb-p3"));
        assert_eq!(d.request_names, ["gpu"]);
        assert_eq!(d.cdi_device_ids, ["gpu.tessera.dev/claim=uid-1-gpu-0-1g-10gb-p3"]);

        // The instance was made at the allocated placement, and the claim's job runs on it alone.
        let jobs = claim_jobs(&ctx.engine, &c.uid).await;
        let [job] = jobs.as_slice() else { panic!("{jobs:?}") };
        assert_eq!(job.state, JobState::Running);
        let made = instances(&ctx.engine).await;
        let [(profile, 3, Some(mig), on)] = made.as_slice() else { panic!("{made:?}") };
        assert_eq!((profile.as_str(), on.as_slice()), ("1g.10gb", [job.id].as_slice()));
        let slice = &job.ranks[0].slices[0];
        assert_eq!((slice.profile.as_deref(), slice.start), (Some("1g.10gb"), 3));

        // The CDI spec names the MIG device.
        let spec = std::fs::read_to_string(spec_of(&ctx, &c.uid)).expect("the claim's CDI spec");
        assert!(spec.contains(&format!("CUDA_VISIBLE_DEVICES={mig}")), "{spec}");
        assert!(spec.contains("\"name\": \"uid-1-gpu-0-1g-10gb-p3\""), "{spec}");
        assert!(spec.contains("/dev/nvidia-caps/nvidia-cap"), "{spec}");
        eventually("the instance published as the claim's", || async {
            (published_use(&plugin, 3) == Some(InstanceUse::Claim)).then_some(())
        })
        .await;

        // Prepared again (the kubelet's retry): the same answer, nothing new made or recorded.
        let checkpoint = std::fs::read_to_string(&ctx.options.checkpoint).unwrap();
        let again = kubelet.prepare(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(again, answer);
        assert_eq!(instances(&ctx.engine).await, made);
        assert_eq!(claim_jobs(&ctx.engine, &c.uid).await.len(), 1);
        assert_eq!(std::fs::read_to_string(&ctx.options.checkpoint).unwrap(), checkpoint, "the checkpoint changed");

        // Unprepared: the hold released, the instance it made destroyed, the spec gone.
        let done = kubelet.unprepare(&[&c]).await;
        assert_eq!(done[&c.uid], "");
        assert_eq!(instances(&ctx.engine).await, []);
        assert!(claim_jobs(&ctx.engine, &c.uid).await.is_empty());
        assert!(!spec_of(&ctx, &c.uid).exists());
        // Again: already done.
        assert_eq!(kubelet.unprepare(&[&c]).await[&c.uid], "");
        plugin.stop().await;
        assert!(!ctx.options.plugin_dir.join("dra.sock").exists());
        assert!(!ctx.options.registry_dir.join("gpu.tessera.dev-reg.sock").exists());
    });
}

#[test]
fn v1beta1_prepares_and_unprepares_the_same_way() {
    on_daemon(H100, |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let c = claim("uid-b");
        ctx.claims.set(&c.uid, one("gpu-0-2g-20gb-p4"));
        let answer = kubelet.prepare_v1beta1(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(answer.error, "");
        assert_eq!(answer.devices[0].cdi_device_ids, ["gpu.tessera.dev/claim=uid-b-gpu-0-2g-20gb-p4"]);
        let again = kubelet.prepare_v1beta1(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(again, answer);
        let made = instances(&ctx.engine).await;
        assert_eq!(made.iter().map(|(p, s, ..)| (p.as_str(), *s)).collect::<Vec<_>>(), [("2g.20gb", 4)]);
        assert_eq!(kubelet.unprepare_v1beta1(&[&c]).await[&c.uid], "");
        assert_eq!(instances(&ctx.engine).await, []);
        assert_eq!(kubelet.unprepare_v1beta1(&[&c]).await[&c.uid], "");
        plugin.stop().await;
    });
}

#[test]
fn an_instance_that_existed_before_is_taken_as_it_is_and_never_destroyed() {
    on_daemon(H100, |ctx| async move {
        let request = LayoutRequest { instances: vec!["1g.10gb@2".into()], dry_run: false };
        ctx.engine.act(root(), Action::Layout { gpu: 0, request }).await.expect("layout");
        let before = instances(&ctx.engine).await;
        let plugin = Plugin::start(&ctx).await;
        assert_eq!(published_use(&plugin, 2), Some(InstanceUse::Idle));
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let c = claim("uid-adopt");
        ctx.claims.set(&c.uid, one("gpu-0-1g-10gb-p2"));
        let answer = kubelet.prepare(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(answer.error, "");
        let held = instances(&ctx.engine).await;
        assert_eq!((held.len(), held[0].2.clone(), held[0].3.len()), (1, before[0].2.clone(), 1));

        assert_eq!(kubelet.unprepare(&[&c]).await[&c.uid], "");
        assert!(claim_jobs(&ctx.engine, &c.uid).await.is_empty());
        assert_eq!(instances(&ctx.engine).await, before, "the adopted instance must stay");
        plugin.stop().await;
    });
}

#[test]
fn a_device_not_on_the_node_fails_its_claim_and_only_its_claim() {
    on_daemon(H100, |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let (good, bad, gone) = (claim("uid-good"), claim("uid-bad"), claim("uid-gone"));
        ctx.claims.set(&good.uid, one("gpu-0-1g-10gb-p0"));
        ctx.claims.set(&bad.uid, one("gpu-5-1g-10gb-p1"));
        let answers = kubelet.prepare(&[&good, &bad, &gone]).await;
        assert_eq!(answers[&good.uid].error, "");
        let e = &answers[&bad.uid].error;
        assert!(e.contains("uid-bad") && e.contains("gpu-5-1g-10gb-p1") && e.contains("not a device"), "{e}");
        let e = &answers[&gone.uid].error;
        assert!(e.contains("uid-gone") && e.contains("no ResourceClaim"), "{e}");
        assert_eq!(instances(&ctx.engine).await.len(), 1);
        // Nothing was recorded for the failed claims: unpreparing them is already done.
        assert_eq!(
            kubelet.unprepare(&[&bad, &good]).await,
            [(bad.uid.clone(), String::new()), (good.uid.clone(), String::new())].into()
        );
        plugin.stop().await;
    });
}

#[test]
fn a_plugin_killed_mid_prepare_finishes_on_the_retry_without_a_second_instance() {
    // Each instance change takes 1.5 s: the plugin is killed while the engine makes it.
    on_daemon("1xH100-80GB,numa=1,cpus=16,mig-op-ms=1500", |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let c = claim("uid-crash");
        ctx.claims.set(&c.uid, one("gpu-0-1g-10gb-p5"));
        let mut client = kubelet.v1.clone();
        let request = tessera_deviceplugin::dra::api::v1::NodePrepareResourcesRequest {
            claims: vec![tessera_deviceplugin::dra::api::v1::Claim {
                namespace: c.namespace.clone(),
                uid: c.uid.clone(),
                name: c.name.clone(),
            }],
        };
        let first = tokio::spawn(async move { client.node_prepare_resources(request).await });
        let checkpoint = ctx.options.checkpoint.clone();
        eventually("the claim checkpointed as preparing", || async {
            let text = std::fs::read_to_string(&checkpoint).unwrap_or_default();
            text.contains("\"preparing\"").then_some(())
        })
        .await;
        plugin.crash();
        assert!(first.await.unwrap().is_err(), "a killed plugin answers nothing");
        // The engine finishes what it was asked (in the real crash, it was asked or not).
        eventually("the interrupted hold submitted", || async {
            (!claim_jobs(&ctx.engine, &c.uid).await.is_empty()).then_some(())
        })
        .await;

        // Restarted on the same directories: the kubelet registers it again and retries.
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let answer = kubelet.prepare(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(answer.error, "", "{answer:?}");
        let jobs = claim_jobs(&ctx.engine, &c.uid).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let made = instances(&ctx.engine).await;
        assert_eq!(made.iter().map(|(p, s, ..)| (p.as_str(), *s)).collect::<Vec<_>>(), [("1g.10gb", 5)]);
        // The instance it made (recorded before the crash) is destroyed on unprepare.
        assert_eq!(kubelet.unprepare(&[&c]).await[&c.uid], "");
        assert_eq!(instances(&ctx.engine).await, []);
        plugin.stop().await;
    });
}

#[test]
fn an_mps_claim_gets_a_control_daemon_as_its_user_until_unprepared() {
    on_daemon(H100, |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let c = claim("uid-mps");
        let parameters = serde_json::json!({
            "apiVersion": "gpu.tessera.dev/v1", "kind": "MigDeviceConfig",
            "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 50,
                        "defaultPinnedDeviceMemoryLimit": "4Gi"}}});
        let config = vec![ClaimConfig {
            source: ConfigSource::FromClaim,
            requests: vec![],
            driver: "gpu.tessera.dev".into(),
            parameters,
        }];
        let allocation =
            ClaimAllocation { devices: vec![device("gpu", "gpu-0-3g-40gb-p4")], config, run_as_user: Some(1000) };
        ctx.claims.set(&c.uid, allocation);
        let answer = kubelet.prepare(&[&c]).await.remove(&c.uid).unwrap();
        assert_eq!(answer.error, "", "{answer:?}");
        let mig = instances(&ctx.engine).await[0].2.clone().unwrap();

        let log = ctx.dir.join("state").join("mps-commands.jsonl");
        let records = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let pipe = ctx.options.mps_root.join(&c.uid).join("pipe");
        let started = records();
        let start = started.iter().find(|r| r["op"] == "start").expect("a control daemon started");
        assert_eq!(start["uid"], 1000);
        assert_eq!(start["mig_uuid"], mig.as_str());
        assert_eq!(start["pipe_dir"], pipe.display().to_string());
        let stdin: Vec<&str> = started.iter().filter_map(|r| r["stdin"].as_str()).collect();
        assert!(stdin.contains(&"set_default_active_thread_percentage 50"), "{stdin:?}");
        assert!(stdin.contains(&format!("set_default_device_pinned_mem_limit {mig} 4096M").as_str()), "{stdin:?}");
        let spec = std::fs::read_to_string(spec_of(&ctx, &c.uid)).unwrap();
        assert!(spec.contains("CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"), "{spec}");
        assert!(spec.contains(&pipe.display().to_string()), "{spec}");

        assert_eq!(kubelet.unprepare(&[&c]).await[&c.uid], "");
        let quit = records().into_iter().any(|r| r["stdin"] == "quit" && r["pipe_dir"] == pipe.display().to_string());
        assert!(quit, "the control daemon is quit: {:?}", records());
        assert!(!pipe.exists());
        plugin.stop().await;
    });
}

#[test]
fn a_fenced_gpu_is_streamed_as_unhealthy() {
    on_daemon(H100, |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let c = claim("uid-health");
        ctx.claims.set(&c.uid, one("gpu-0-1g-10gb-p6"));
        assert_eq!(kubelet.prepare(&[&c]).await[&c.uid].error, "");
        let mut stream = kubelet.watch_health().await;
        let status = |m: &tessera_deviceplugin::dra::api::health::NodeWatchResourcesResponse| {
            m.devices.iter().map(|d| (d.device.clone().unwrap().device_name, d.health)).collect::<Vec<_>>()
        };
        // The complete list; the first may come before the watcher has read the prepared claim.
        let first = tokio::time::timeout(WAIT, async {
            loop {
                let m = stream.next().await.unwrap().unwrap();
                if !m.devices.is_empty() {
                    return m;
                }
            }
        })
        .await
        .expect("the prepared device streamed");
        assert_eq!(status(&first), [("gpu-0-1g-10gb-p6".to_string(), HealthStatus::Healthy as i32)]);
        // Kubernetes 1.37's v1 service streams the same.
        use tessera_deviceplugin::dra::api::health_v1;
        let channel =
            tessera_deviceplugin::uds::unix_channel(std::path::Path::new(&kubelet.info.endpoint)).await.unwrap();
        let mut v1_stream = health_v1::dra_resource_health_client::DraResourceHealthClient::new(channel)
            .node_watch_resources(health_v1::NodeWatchResourcesRequest {})
            .await
            .expect("v1 NodeWatchResources")
            .into_inner();
        let v1_first = v1_stream.next().await.unwrap().unwrap();
        assert_eq!(v1_first.devices[0].device.clone().unwrap().device_name, "gpu-0-1g-10gb-p6");
        assert_eq!(v1_first.devices[0].health, health_v1::HealthStatus::Healthy as i32);

        // A double-bit ECC error: the engine fences the GPU, and the kubelet hears it.
        ctx.sim.raise_xid(0, 48, None, None).unwrap();
        let unhealthy = tokio::time::timeout(WAIT, async {
            loop {
                let m = stream.next().await.unwrap().unwrap();
                if m.devices.iter().any(|d| d.health == HealthStatus::Unhealthy as i32) {
                    return m;
                }
            }
        })
        .await
        .expect("the device streamed as unhealthy");
        assert!(unhealthy.devices[0].message.contains("48"), "{:?}", unhealthy.devices[0]);
        assert!(unhealthy.devices[0].last_updated_time > 0);
        tokio::time::timeout(WAIT, async {
            loop {
                let m = v1_stream.next().await.unwrap().unwrap();
                if m.devices.iter().any(|d| d.health == health_v1::HealthStatus::Unhealthy as i32) {
                    return;
                }
            }
        })
        .await
        .expect("the device streamed as unhealthy on v1 too");
        drop(v1_stream);
        drop(stream);
        plugin.stop().await;
    });
}

/// `cargo test -p tessera-deviceplugin --release --test dra -- --ignored bench_prepare --nocapture`:
/// prepare and unprepare through the sockets with instant MIG operations, then with 100 ms per
/// GPU-instance create or destroy (`mig-op-ms`), so what Tessera adds shows apart from the
/// driver's own time.
#[test]
#[ignore = "a benchmark: run it on purpose"]
fn bench_prepare_latency() {
    for (spec, cycles) in [(H100.to_string(), 200u32), (format!("{H100},mig-op-ms=100"), 50)] {
        bench_prepare(&spec, cycles);
    }
}

fn bench_prepare(spec: &str, cycles: u32) {
    let label = spec.to_string();
    on_daemon(spec, move |ctx| async move {
        let plugin = Plugin::start(&ctx).await;
        let mut kubelet = Kubelet::register(&ctx.options.registry_dir).await;
        let mut prepare = Vec::new();
        let mut unprepare = Vec::new();
        for n in 0..cycles {
            let c = claim(&format!("bench-{n}"));
            ctx.claims.set(&c.uid, one(&format!("gpu-0-1g-10gb-p{}", n % 7)));
            let t = std::time::Instant::now();
            let answer = kubelet.prepare(&[&c]).await.remove(&c.uid).unwrap();
            prepare.push(t.elapsed());
            assert_eq!(answer.error, "");
            let t = std::time::Instant::now();
            assert_eq!(kubelet.unprepare(&[&c]).await[&c.uid], "");
            unprepare.push(t.elapsed());
        }
        let pct = |v: &mut Vec<Duration>, p: usize| {
            v.sort();
            v[(v.len() * p / 100).min(v.len() - 1)]
        };
        println!(
            "DRA on {label}: prepare (1g.10gb made at its placement, through the sockets), {cycles} cycles: \
             p50 {:?}, p99 {:?}; unprepare (release + destroy): p50 {:?}, p99 {:?}.",
            pct(&mut prepare, 50),
            pct(&mut prepare, 99),
            pct(&mut unprepare, 50),
            pct(&mut unprepare, 99),
        );
        plugin.stop().await;
    });
}
