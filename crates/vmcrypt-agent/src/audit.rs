//! The audit log: one JSON line for every key operation of the CLI and the agent (create,
//! fetch, cache hit, forget, rekey, backup, restore, reveal-key), with who asked, for what, and
//! how it ended, so that an operator can answer "who used which key, when" as they do from
//! their KMS's or Vault's audit devices.
//!
//! A record never holds key material: only names, ids, uuids, process facts and the error's
//! message (whose texts never carry keys either: vmcrypt-core's rule). A line is one
//! `write(2)` to a file opened `O_APPEND` (lines of several processes never interleave) and is
//! synced before the operation returns. The file is created 0600, never through a symlink.
//! `journald` sends each record to the journal instead (native protocol), with the JSON as
//! `MESSAGE` and `VMCRYPT_OPERATION`, `VMCRYPT_PROVIDER`, `VMCRYPT_KEY_ID` fields.
//!
//! An audit log that cannot be opened stops the command before it does anything. A record that
//! cannot be written later is an error in the process's log, and the key operation goes on: a
//! running VM's key must not wait on a full log disk.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use vmcrypt_core::provider::{KeyId, KeyProvider, KeyPurpose};
use vmcrypt_core::secret::Kek;
use vmcrypt_core::{Error, Result};

/// Where `journald` records go.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// What `--audit-log`, `VMCRYPT_AUDIT_LOG` or the config's `audit_log` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file, appended to.
    File(PathBuf),
    /// The systemd journal.
    Journald,
}

impl Target {
    /// `journald`, or a file path.
    pub fn parse(s: &str) -> Target {
        if s == "journald" {
            Target::Journald
        } else {
            Target::File(PathBuf::from(s))
        }
    }
}

enum Sink {
    File { file: Mutex<File>, path: PathBuf },
    Journal { sock: UnixDatagram, path: PathBuf },
}

/// Who asked the agent: the peer of its socket, from `SO_PEERCRED` and /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its user.
    pub uid: u32,
    /// Its process.
    pub pid: i32,
    /// Its command line (/proc/PID/cmdline, arguments joined by spaces, at most 512 bytes),
    /// when it could be read.
    pub command: Option<String>,
}

impl Peer {
    /// The peer `pid` of user `uid`, with its command line read now.
    pub fn of(uid: u32, pid: i32) -> Peer {
        Peer {
            uid,
            pid,
            command: command_line(&format!("/proc/{pid}/cmdline")),
        }
    }

    fn json(&self) -> Value {
        json!({"uid": self.uid, "pid": self.pid, "command": self.command})
    }
}

fn command_line(path: &str) -> Option<String> {
    let raw = std::fs::read(path).ok()?;
    let text: String = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut end = text.len().min(512);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_string())
}

/// One record, built up and then written by [`AuditLog::record`].
#[derive(Debug, Clone)]
pub struct Record {
    fields: Map<String, Value>,
}

impl Record {
    /// A record of `operation` (`create`, `fetch`, `cache-hit`, `forget`, `rekey`, `backup`,
    /// `restore`, `reveal-key`).
    pub fn new(operation: &str) -> Record {
        let mut fields = Map::new();
        fields.insert("operation".into(), operation.into());
        Record { fields }
    }

    /// Sets a field (`provider`, `key_id`, `disk`, `vm`, `file`, ...).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Record {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The disk or VM a [`KeyPurpose`] names.
    pub fn purpose(self, p: &KeyPurpose) -> Record {
        match p {
            KeyPurpose::Disk(u) => self.with("disk", u.as_str()),
            KeyPurpose::Vm(u) => self.with("vm", u.as_str()),
        }
    }

    /// The peer that asked (agent requests).
    pub fn peer(self, p: Option<&Peer>) -> Record {
        match p {
            Some(p) => self.with("peer", p.json()),
            None => self,
        }
    }

    /// How it ended: `"result": "ok"`, or `"error"` with the error's kind and message.
    pub fn result<T>(mut self, r: &Result<T>) -> Record {
        match r {
            Ok(_) => {
                self.fields.insert("result".into(), "ok".into());
            }
            Err(e) => {
                self.fields.insert("result".into(), "error".into());
                self.fields.insert("error".into(), e.to_string().into());
                self.fields
                    .insert("error_kind".into(), e.kind().as_str().into());
            }
        }
        self
    }
}

/// An open audit log, shared by every provider and request of a process.
pub struct AuditLog {
    sink: Sink,
    process: Value,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match &self.sink {
            Sink::File { path, .. } | Sink::Journal { path, .. } => path,
        };
        f.debug_struct("AuditLog").field("to", path).finish()
    }
}

impl AuditLog {
    /// Opens `target`: a file is created (0600, parent directories 0700) or appended to,
    /// never through a symlink; the journal's socket must exist.
    ///
    /// # Errors
    /// [`Error::Io`] when the file or the journal cannot be opened.
    pub fn open(target: &Target) -> Result<Arc<AuditLog>> {
        let sink = match target {
            Target::File(path) => {
                let file = vmcrypt_core::fsutil::open_append(path, 0o600).map_err(|e| match e {
                    Error::Io { source, .. } => Error::Io {
                        op: "open the audit log",
                        path: path.clone(),
                        source,
                    },
                    other => other,
                })?;
                Sink::File {
                    file: Mutex::new(file),
                    path: path.clone(),
                }
            }
            Target::Journald => Self::journal_sink(Path::new(JOURNAL_SOCKET))?,
        };
        Ok(Arc::new(AuditLog {
            sink,
            process: json!({
                "pid": std::process::id(),
                "uid": rustix::process::geteuid().as_raw(),
                "command": command_line("/proc/self/cmdline"),
            }),
        }))
    }

    fn journal_sink(path: &Path) -> Result<Sink> {
        let sock = UnixDatagram::unbound().map_err(Error::io("open a socket for", path))?;
        sock.connect(path)
            .map_err(Error::io("connect to the journal at", path))?;
        Ok(Sink::Journal {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// Writes `rec`, with the time and this process, as one line. A failure is logged, not
    /// returned (module docs).
    pub fn record(&self, rec: Record) {
        let mut fields = Map::new();
        fields.insert("time".into(), rfc3339_now().into());
        fields.extend(rec.fields);
        fields.insert("process".into(), self.process.clone());
        let line = Value::Object(fields.clone()).to_string();
        let written = match &self.sink {
            Sink::File { file, .. } => {
                let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
                let mut buf = line.into_bytes();
                buf.push(b'\n');
                f.write_all(&buf).and_then(|()| f.sync_data())
            }
            Sink::Journal { sock, .. } => {
                let field = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or("");
                let mut msg = String::from("SYSLOG_IDENTIFIER=vmcrypt\nPRIORITY=6\n");
                for (name, key) in [
                    ("VMCRYPT_OPERATION", "operation"),
                    ("VMCRYPT_PROVIDER", "provider"),
                    ("VMCRYPT_KEY_ID", "key_id"),
                    ("VMCRYPT_RESULT", "result"),
                ] {
                    // Values are single-line by construction (JSON strings escape newlines).
                    let v = field(key).replace('\n', " ");
                    msg.push_str(&format!("{name}={v}\n"));
                }
                msg.push_str(&format!("MESSAGE={line}\n"));
                sock.send(msg.as_bytes()).map(|_| ())
            }
        };
        if let Err(e) = written {
            tracing::error!(
                "cannot write the audit log ({self:?}): {e}; the key operation goes on"
            );
        }
    }
}

/// Now, as `2026-12-04T19:20:01.123456Z`.
fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A provider whose every create and fetch is recorded: what the CLI's providers are when an
/// audit log is set.
pub struct Audited {
    inner: Arc<dyn KeyProvider>,
    log: Arc<AuditLog>,
}

impl Audited {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn KeyProvider>, log: Arc<AuditLog>) -> Audited {
        Audited { inner, log }
    }
}

impl KeyProvider for Audited {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn create_kek(&self, purpose: &KeyPurpose) -> Result<(KeyId, Kek)> {
        let r = self.inner.create_kek(purpose);
        let mut rec = Record::new("create")
            .with("provider", self.name())
            .purpose(purpose);
        if let Ok((id, _)) = &r {
            rec = rec.with("key_id", id.as_str());
        }
        self.log.record(rec.result(&r));
        r
    }

    fn servers(&self) -> Vec<vmcrypt_core::provider::ServerStat> {
        self.inner.servers()
    }

    fn fetch_kek(&self, id: &KeyId) -> Result<Kek> {
        let r = self.inner.fetch_kek(id);
        self.log.record(
            Record::new("fetch")
                .with("provider", self.name())
                .with("key_id", id.as_str())
                .result(&r),
        );
        r
    }

    fn fetch_kek_for(&self, id: &KeyId, purpose: &KeyPurpose) -> Result<Kek> {
        let r = self.inner.fetch_kek_for(id, purpose);
        self.log.record(
            Record::new("fetch")
                .with("provider", self.name())
                .with("key_id", id.as_str())
                .purpose(purpose)
                .result(&r),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        let now = rfc3339_now();
        assert_eq!(now.len(), 27, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }

    #[test]
    fn records_are_json_lines_appended_to_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("log/audit.jsonl");
        let log = AuditLog::open(&Target::File(path.clone())).expect("open");
        log.record(
            Record::new("create")
                .with("provider", "n")
                .with("key_id", "k1")
                .purpose(&KeyPurpose::Vm("vm-1".into()))
                .result(&Ok::<(), Error>(())),
        );
        log.record(
            Record::new("fetch")
                .with("provider", "n")
                .result(&Err::<(), _>(Error::UnwrapFailed)),
        );
        drop(log);
        let again = AuditLog::open(&Target::File(path.clone())).expect("reopen");
        again.record(Record::new("forget").result(&Ok::<(), Error>(())));
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["operation"], "create");
        assert_eq!(lines[0]["vm"], "vm-1");
        assert_eq!(lines[0]["result"], "ok");
        assert_eq!(lines[0]["process"]["pid"], std::process::id());
        assert_eq!(lines[1]["result"], "error");
        assert_eq!(lines[1]["error_kind"], "unwrap_failed");
        assert_eq!(lines[2]["operation"], "forget");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never through a symlink.
        let link = d.path().join("link.jsonl");
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &link).expect("symlink");
        assert!(AuditLog::open(&Target::File(link)).is_err());
        assert!(!d.path().join("elsewhere").exists());
    }

    #[test]
    fn journal_records_carry_fields_and_the_json() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("journal.sock");
        let journal = UnixDatagram::bind(&path).expect("bind");
        let log = AuditLog {
            sink: AuditLog::journal_sink(&path).expect("connect"),
            process: json!({"pid": 1}),
        };
        log.record(
            Record::new("fetch")
                .with("provider", "kms")
                .with("key_id", "k-7")
                .result(&Ok::<(), Error>(())),
        );
        let mut buf = [0u8; 4096];
        let n = journal.recv(&mut buf).expect("recv");
        let msg = String::from_utf8_lossy(&buf[..n]);
        for want in [
            "SYSLOG_IDENTIFIER=vmcrypt\n",
            "VMCRYPT_OPERATION=fetch\n",
            "VMCRYPT_PROVIDER=kms\n",
            "VMCRYPT_KEY_ID=k-7\n",
            "VMCRYPT_RESULT=ok\n",
        ] {
            assert!(msg.contains(want), "{msg}");
        }
        let json_line = msg
            .lines()
            .find_map(|l| l.strip_prefix("MESSAGE="))
            .expect("MESSAGE");
        let v: Value = serde_json::from_str(json_line).expect("json");
        assert_eq!(v["key_id"], "k-7");
        assert!(AuditLog::open(&Target::File(d.path().to_path_buf())).is_err());
    }
}
