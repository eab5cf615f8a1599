//! The plugin's checkpoint: what it prepared for which claim, on disk, so a restarted plugin
//! answers the kubelet's retries the same and gives back exactly what it made.
//!
//! One JSON file (`<plugin_dir>/checkpoint.json`), rewritten atomically (a temporary file
//! renamed over it, `fsync`ed) on every change, so a crash leaves the old state or the new one.
//! A claim is written **`Preparing`** before the engine is asked for anything, with each
//! device's placement and whether its instance existed before (`made`): whatever a crash
//! interrupts, the plugin knows which instances it may destroy (only those it made; adopted ones
//! never) and finds its hold again by the claim's UID (the engine's external work key). Once
//! the devices are held and the CDI spec is written the claim is **`Prepared`**, with each
//! device's hold, UUID and CDI ID, and a retry answers from it alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_host::files::{WriteOptions, write_atomic};
use tessera_kube_core::dra_claim::{ClaimRef, ClaimSharing};
use tessera_sched::PinnedInstance;

use super::error::DraError;

/// The checkpoint format this plugin writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Every claim the plugin prepared or is preparing, by claim UID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub claims: BTreeMap<String, ClaimEntry>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint { version: CHECKPOINT_VERSION, claims: BTreeMap::new() }
    }
}

/// How far a claim got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimPhase {
    /// Written before the engine was asked: the holds, the CDI spec and the MPS control daemon
    /// may or may not exist. The kubelet retries prepare for a pod that is not running, and
    /// the retry finishes it; an unprepare undoes whatever exists.
    Preparing,
    /// Every device is held and described in the claim's CDI spec.
    Prepared,
}

/// One claim in the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimEntry {
    pub claim: ClaimRef,
    pub phase: ClaimPhase,
    /// This driver's devices of the claim on this node, in the allocation's order.
    pub devices: Vec<ClaimDevice>,
    /// Who the claim's MPS control daemon runs as (`None`: root).
    #[serde(default)]
    pub run_as_user: Option<u32>,
    /// The claim's MPS control daemon's pipe directory, once started.
    #[serde(default)]
    pub mps_pipe_dir: Option<PathBuf>,
}

/// One allocated device of a claim and what was done for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimDevice {
    /// The claim's request it satisfies.
    pub request: String,
    pub pool: String,
    /// The published device name (`gpu-0-1g-10gb-p3`).
    pub device: String,
    #[serde(default)]
    pub share_id: Option<String>,
    pub gpu: u32,
    /// The instance held: its profile and first placement unit (MIG off: the model's full
    /// profile at 0, the whole GPU).
    pub profile_id: u32,
    pub start: u8,
    /// The profile's name, or `None` for a whole GPU with MIG off.
    pub profile: Option<String>,
    /// Whether the instance did not exist when the claim was first prepared: only such
    /// instances are destroyed on unprepare.
    pub made: bool,
    pub sharing: ClaimSharing,
    /// The engine's job holding it, once running.
    #[serde(default)]
    pub job: Option<u64>,
    /// The MIG device's UUID, or the GPU's (MIG off), once held.
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub gpu_instance_id: Option<u32>,
    /// Its fully qualified CDI device ID, once the spec is written.
    #[serde(default)]
    pub cdi_id: Option<String>,
}

impl ClaimDevice {
    /// The engine's pin for this device.
    pub fn pin(&self) -> PinnedInstance {
        PinnedInstance { gpu: self.gpu, profile_id: self.profile_id, start: self.start }
    }
}

/// The checkpoint file and its contents.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    state: Checkpoint,
}

impl CheckpointFile {
    /// Reads `path`; a missing file is an empty checkpoint. A file that cannot be read, parsed
    /// or is of another version is refused ([`DraError::Checkpoint`]).
    pub fn load(path: &Path) -> Result<CheckpointFile, DraError> {
        let refuse = |problem: String| DraError::Checkpoint { path: path.to_path_buf(), problem };
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let state: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| refuse(e.to_string()))?;
                if state.version != CHECKPOINT_VERSION {
                    return Err(refuse(format!(
                        "version {} is not the version this plugin reads ({CHECKPOINT_VERSION})",
                        state.version
                    )));
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(refuse(e.to_string())),
        };
        Ok(CheckpointFile { path: path.to_path_buf(), state })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The claim with this UID.
    pub fn get(&self, uid: &str) -> Option<&ClaimEntry> {
        self.state.claims.get(uid)
    }

    /// Every claim, by UID.
    pub fn claims(&self) -> &BTreeMap<String, ClaimEntry> {
        &self.state.claims
    }

    /// Records `entry` (replacing the claim's), on disk before this returns; on failure the
    /// file and the contents stay as they were.
    pub fn put(&mut self, entry: ClaimEntry) -> Result<(), String> {
        let uid = entry.claim.uid.clone();
        let before = self.state.claims.insert(uid.clone(), entry);
        self.save().inspect_err(|_| match before {
            Some(b) => {
                self.state.claims.insert(uid, b);
            }
            None => {
                self.state.claims.remove(&uid);
            }
        })
    }

    /// Forgets the claim, on disk before this returns (nothing to do when it is not there).
    pub fn remove(&mut self, uid: &str) -> Result<(), String> {
        let Some(before) = self.state.claims.remove(uid) else { return Ok(()) };
        self.save().inspect_err(|_| {
            self.state.claims.insert(uid.to_string(), before);
        })
    }

    fn save(&self) -> Result<(), String> {
        let mut bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_atomic(&self.path, &bytes, WriteOptions::PRIVATE_DURABLE)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str) -> ClaimEntry {
        ClaimEntry {
            claim: ClaimRef { namespace: "ns".into(), name: "c".into(), uid: uid.into() },
            phase: ClaimPhase::Preparing,
            devices: vec![ClaimDevice {
                request: "gpu".into(),
                pool: "node-a".into(),
                device: "gpu-0-1g-10gb-p3".into(),
                share_id: None,
                gpu: 0,
                profile_id: 19,
                start: 3,
                profile: Some("1g.10gb".into()),
                made: true,
                sharing: ClaimSharing::Mps { active_thread_pct: Some(50), pinned_mem_mib: None },
                job: None,
                uuid: None,
                gpu_instance_id: None,
                cdi_id: None,
            }],
            run_as_user: Some(1000),
            mps_pipe_dir: None,
        }
    }

    #[test]
    fn claims_survive_a_reload_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin").join("checkpoint.json");
        let mut file = CheckpointFile::load(&path).unwrap();
        assert!(file.claims().is_empty());
        file.put(entry("u1")).unwrap();
        file.put(entry("u2")).unwrap();
        file.remove("u1").unwrap();
        file.remove("gone").unwrap();
        let again = CheckpointFile::load(&path).unwrap();
        assert_eq!(again.claims().keys().collect::<Vec<_>>(), ["u2"]);
        assert_eq!(again.get("u2"), Some(&entry("u2")));
    }

    #[test]
    fn an_unreadable_checkpoint_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = CheckpointFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("checkpoint.json"), "{e}");
        std::fs::write(&path, r#"{"version": 9, "claims": {}}"#).unwrap();
        let e = CheckpointFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        let mut file = CheckpointFile::load(&plugin.join("checkpoint.json")).unwrap();
        // The checkpoint's directory is a file now: every write fails.
        std::fs::write(&plugin, "").unwrap();
        assert!(file.put(entry("u1")).is_err());
        assert!(file.get("u1").is_none());
    }
}
