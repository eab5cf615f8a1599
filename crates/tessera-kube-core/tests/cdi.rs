//! The CDI spec for an advertised node: its exact JSON, and that it is byte-stable.

mod common;

use common::{config, gi, health, node, views};
use tessera_kube_core::cdi_spec;

#[test]
fn cdi_spec_of_a_mixed_node() {
    let b = node("2xH100-80GB,mig=on");
    gi(&b, 0, "1g.10gb+me", 0, &[]);
    gi(&b, 0, "3g.40gb", 4, &[2, 1]);
    tessera_gpu::MigBackend::set_mig_mode(&b, 1, false).unwrap();
    let v = views(&b);
    let inv = common::inventory(&config("version: v1\nflags:\n  migStrategy: mixed\n"), &v, &health(&[], &[]), &[]);
    let spec = cdi_spec(&inv);
    let json = spec.to_json();
    insta::assert_snapshot!(json);
    // The same inventory, built again, gives the same bytes.
    let again =
        common::inventory(&config("version: v1\nflags:\n  migStrategy: mixed\n"), &views(&b), &health(&[], &[]), &[]);
    assert_eq!(cdi_spec(&again).to_json(), json);
    assert!(!spec.is_empty());
}
