//! Resource names and NVIDIA's device-plugin config file, as tables.

use tessera_kube_core::{DeviceListStrategy, MigStrategy, ResourceName, SharingStrategy, parse_config};

#[test]
fn mig_resource_names_follow_nvidia() {
    for (profile, want) in [
        ("1g.10gb", "nvidia.com/mig-1g.10gb"),
        ("1g.10gb+me", "nvidia.com/mig-1g.10gb.me"),
        ("1g.24gb+me.all", "nvidia.com/mig-1g.24gb.me.all"),
        ("1g.24gb-me", "nvidia.com/mig-1g.24gb-me"),
        ("1g.24gb+gfx", "nvidia.com/mig-1g.24gb.gfx"),
        ("1c.3g.40gb", "nvidia.com/mig-1c.3g.40gb"),
        ("7g.80gb", "nvidia.com/mig-7g.80gb"),
    ] {
        assert_eq!(ResourceName::mig(profile).unwrap().as_str(), want, "{profile}");
    }
    assert_eq!(ResourceName::gpu().shared().unwrap().as_str(), "nvidia.com/gpu.shared");
}

#[test]
fn resource_names_are_validated() {
    for (text, problem) in [
        ("gpu", "expected '<domain>/<name>'"),
        ("nvidia.com/GPU", "has 'G'"),
        ("nvidia.com/-gpu", "start and end"),
        ("nvidia.com/gpu.", "start and end"),
        ("nvidia.com/", "is empty"),
        ("kubernetes.io/gpu", "reserved"),
        ("nvidia.com/mig-1g.10gb+me", "has '+'"),
        (&format!("nvidia.com/{}", "a".repeat(60)), "more than 63"),
    ] {
        let e = ResourceName::parse(text).unwrap_err().to_string();
        assert!(e.contains(problem) && e.contains(text), "{text}: {e}");
    }
    assert!(ResourceName::parse("tessera.dev/mig-1g.10gb.me").is_ok());
    assert_eq!(ResourceName::qualified("mig-1g.10gb").unwrap().as_str(), "nvidia.com/mig-1g.10gb");
}

#[test]
fn config_fields_are_read() {
    let c = parse_config(
        "version: v1\nflags:\n  migStrategy: mixed\n  failOnInitError: true\n  mpsRoot: /run/x/mps\n  plugin:\n    \
         passDeviceSpecs: false\n    deviceListStrategy: [cdi-cri, envvar]\n    deviceIDStrategy: uuid\n  gfd:\n    \
         oneshot: false\nsharing:\n  timeSlicing:\n    renameByDefault: true\n    failRequestsGreaterThanOne: true\n    \
         resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n    - name: mig-1g.10gb\n      replicas: 2\n",
        "c.yaml",
    )
    .unwrap();
    assert_eq!(c.mig_strategy, MigStrategy::Mixed);
    assert_eq!(c.mps_root, "/run/x/mps");
    assert!(!c.pass_device_specs);
    assert_eq!(c.device_list_strategy, [DeviceListStrategy::EnvVar, DeviceListStrategy::CdiCri]);
    assert_eq!(c.sharing.strategy(), SharingStrategy::TimeSlicing);
    let ts = c.sharing.time_slicing.as_ref().unwrap();
    assert!(ts.fail_requests_greater_than_one);
    assert_eq!(ts.resources[1].name.as_str(), "nvidia.com/mig-1g.10gb");
    assert_eq!(ts.resources[1].rename.as_ref().unwrap().as_str(), "nvidia.com/mig-1g.10gb.shared");
    assert_eq!(ts.resources[0].replicas, 4);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // Defaults: NVIDIA's, except passDeviceSpecs; MPS refuses larger requests unless told not to.
    let d = parse_config(
        "version: v1\nsharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n",
        "d.yaml",
    )
    .unwrap();
    assert_eq!(d.mig_strategy, MigStrategy::None);
    assert_eq!(d.device_list_strategy, [DeviceListStrategy::EnvVar]);
    assert!(d.pass_device_specs);
    assert_eq!(d.sharing.strategy(), SharingStrategy::Mps);
    assert!(d.sharing.mps.as_ref().unwrap().fail_requests_greater_than_one);
    assert!(d.sharing.mps.as_ref().unwrap().resources[0].rename.is_none());
    assert!(parse_config("", "empty.yaml").is_ok());
}

#[test]
fn ignored_fields_are_reported_where_they_are() {
    let c = parse_config(
        "version: v1\nresources:\n  gpus: []\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      \
         rename: foo\n      devices: [0]\n      replicas: 2\n",
        "w.yaml",
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("w.yaml:2:1: 'resources' is ignored"), "{:?}", c.warnings);
    assert!(c.warnings[1].starts_with("w.yaml:8:7: 'rename' is ignored"), "{:?}", c.warnings);
    assert!(c.warnings[2].starts_with("w.yaml:9:7: 'devices' is ignored"), "{:?}", c.warnings);
}

#[test]
fn config_errors_name_file_line_and_column() {
    for (text, want) in [
        ("version: v2\n", "c.yaml:1:10: unsupported version 'v2'"),
        ("flags:\n  migStrategy: mixd\n", "c.yaml:2:16: 'flags.migStrategy' is 'mixd'; allowed: none, single, mixed"),
        (
            "flags:\n  migStratgy: mixed\n",
            "c.yaml:2:3: unknown field 'migStratgy' in 'flags' (did you mean 'migStrategy'?)",
        ),
        (
            "sharing:\n  timeslicing: {}\n",
            "c.yaml:2:3: unknown field 'timeslicing' in 'sharing' (did you mean 'timeSlicing'?)",
        ),
        ("flags:\n  plugin:\n    deviceListStrategy: env\n", "c.yaml:3:25: 'flags.plugin.deviceListStrategy' is 'env'"),
        ("flags:\n  plugin:\n    deviceIDStrategy: index\n", "c.yaml:3:23: 'flags.plugin.deviceIDStrategy' is 'index'"),
        ("flags:\n  mpsRoot: run/mps\n", "c.yaml:2:12: 'flags.mpsRoot': 'run/mps' must be an absolute path"),
        ("flags:\n  failOnInitError: yes please\n", "c.yaml:2:20: 'flags.failOnInitError' must be true or false"),
        ("sharing:\n  mps: {}\n", "c.yaml:2:8: missing required field 'resources' in 'sharing.mps'"),
        ("sharing:\n  mps:\n    resources: []\n", "c.yaml:3:16: 'sharing.mps.resources': lists no resources"),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 1\n",
            "c.yaml:5:17: 'sharing.timeSlicing.resources.replicas': 1 replicas: the number of replicas must be >= 2",
        ),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n",
            "c.yaml:4:7: missing required field 'replicas' in the entry for 'nvidia.com/gpu'",
        ),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - name: Bad_Name\n      replicas: 2\n",
            "c.yaml:4:13: 'sharing.timeSlicing.resources.name': invalid resource name 'nvidia.com/Bad_Name'",
        ),
        (
            "sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 2}\n    - {name: gpu, replicas: 3}\n",
            "c.yaml:5:14: 'sharing.timeSlicing.resources.name': 'nvidia.com/gpu' is listed twice",
        ),
        (
            "flags:\n  migStrategy: mixed\n  migStrategy: none\n",
            "c.yaml:3:3: duplicate key 'migStrategy' (first at line 2, column 3)",
        ),
        (
            "flags:\n  migStrategy: mixed\nsharing:\n  mps:\n    resources:\n    - {name: gpu, replicas: 2}\n",
            "c.yaml:1:1: 'sharing.mps': MPS sharing is not supported with 'migStrategy: mixed'",
        ),
        ("flags: [\n", "c.yaml:"),
    ] {
        let e = parse_config(text, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with(want), "{text:?}\n  got:  {e}\n  want: {want}");
    }
}
