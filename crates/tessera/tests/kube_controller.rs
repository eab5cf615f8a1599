//! `tessera kube controller` end to end: the real binary against the stand-in API server takes
//! the Lease as `POD_NAME`, gives it up on SIGTERM, and refuses to start without its variables.

#[allow(dead_code)]
#[path = "../../tessera-kube/tests/common/apiserver.rs"]
mod apiserver;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::ApiServer;

fn controller(url: &str, vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.args(["kube", "controller", "--kube-api-url", url]).env_remove("POD_NAME").env_remove("POD_NAMESPACE");
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn holder(api: &ApiServer) -> Option<String> {
    api.lease("tessera-system", "tessera-controller").and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

async fn wait(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_takes_the_lease_and_gives_it_up_on_sigterm() {
    let api = ApiServer::start().await;
    let child = controller(api.url(), &[("POD_NAMESPACE", "tessera-system"), ("POD_NAME", "tessera-controller-abc")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    assert!(wait(20, || holder(&api).as_deref() == Some("tessera-controller-abc")).await, "holder {:?}", holder(&api));
    // SIGTERM, as the kubelet stops a pod.
    assert!(Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap().success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(holder(&api), None, "the Lease was given up");
}

#[tokio::test]
async fn without_pod_name_it_refuses_to_start_naming_the_variable() {
    let api = ApiServer::start().await;
    let out = controller(api.url(), &[("POD_NAMESPACE", "tessera-system")]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "environment variable POD_NAME is not set: the manifests in deploy/kubernetes/ set it from the downward API"
        ),
        "{err}"
    );
}
