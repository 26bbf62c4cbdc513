//! One report for every job, disk or VM: what it did, with no key material. It serializes to
//! the JSON document the CLI prints with `--json` (schema in docs/cli.md); fields a job has
//! nothing to say about are left out.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// What a job did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// `encrypted`, `decrypted`, `rekey` or `resume` for a disk; `encrypted`, `decrypted`,
    /// `rekeyed (shallow)`, `rekeyed (deep)` or `resume` for a VM.
    pub operation: &'static str,
    /// For a rekey: `shallow` (new KEK, no data rewritten) or `deep` (new DEK, every sector).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<&'static str>,
    /// The disk (the output disk when written elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
    /// The VMX, for a VM job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmx: Option<PathBuf>,
    /// The VM's vmcrypt uuid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_uuid: Option<String>,
    /// The disk's payload file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<PathBuf>,
    /// The disk's metadata file (sidecar or descriptor) when it is encrypted afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PathBuf>,
    /// A VM's disks, in VMX order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<PathBuf>>,
    /// Payload bytes processed by this run.
    pub bytes: u64,
    /// Wall time of the job.
    #[serde(rename = "seconds", serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Provider of the KEK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Key id of the KEK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// XTS data unit size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<usize>,
    /// Key generation after the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Whether the job finished a run that an earlier one had started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// For `resume` of a disk: the state it was in (`encrypting`, `decrypting`, `rekeying`,
    /// `encrypted`), absent for a plain disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<&'static str>,
    /// For `resume` of a disk: the payload byte the job continued from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// For a job run online by the process serving the disk: its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
    /// For an online job the command stopped following (Ctrl-C): true, and the job goes on
    /// in the server; `bytes` is how far it had come.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached: Option<bool>,
}

impl Report {
    /// Payload throughput of the job in GB/s (0 for an instant job).
    pub fn gbps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 / secs / 1e9
        } else {
            0.0
        }
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
