//! How the node's engine names what pods hold: the device plugin's front door submits a hold
//! under a provisional key when the kubelet calls `Allocate`, and renames it after the container
//! once PodResources lists it. The node agent reads the same keys back to say which pod holds an
//! instance. One place for the format, so the two sides cannot drift.

use crate::repartition::PodRef;

/// The engine's name for the Kubernetes front door (`Work::External { door, .. }`).
pub const DOOR: &str = "kubernetes";
/// How the key of a hold whose pod the kubelet has not listed yet begins.
pub const PROVISIONAL: &str = "allocated:";

/// The key of a container's hold: `<namespace>/<pod>/<container>`.
pub fn container_key(namespace: &str, pod: &str, container: &str) -> String {
    format!("{namespace}/{pod}/{container}")
}

/// The namespace, pod and container a hold's key names; `None` for a provisional key or
/// anything else.
pub fn container_of_key(key: &str) -> Option<(&str, &str, &str)> {
    if key.starts_with(PROVISIONAL) {
        return None;
    }
    let mut parts = key.splitn(3, '/');
    let (namespace, name, container) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || name.is_empty() || container.is_empty() {
        return None;
    }
    Some((namespace, name, container))
}

/// The pod a hold's key names; `None` for a provisional key or anything else. PodResources
/// gives no pod UID, so the UID is empty (matching any pod of that name).
pub fn pod_of_key(key: &str) -> Option<PodRef> {
    let (namespace, name, _) = container_of_key(key)?;
    Some(PodRef { namespace: namespace.to_string(), name: name.to_string(), uid: String::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_pod_and_provisional_ones_none() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("ml/train-0/main", Some(("ml", "train-0"))),
            ("default/p/c", Some(("default", "p"))),
            ("allocated:MIG-1,MIG-2", None),
            ("ml/train-0", None),
            ("//c", None),
            ("", None),
        ];
        for (key, want) in cases {
            let got = pod_of_key(key);
            assert_eq!(got.as_ref().map(|p| (p.namespace.as_str(), p.name.as_str())), *want, "{key}");
        }
        assert_eq!(pod_of_key(&container_key("a", "b", "c")).unwrap().name, "b");
    }
}
