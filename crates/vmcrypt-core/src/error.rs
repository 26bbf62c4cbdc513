//! The one public error type of vmcrypt-core, and the kinds callers match on.

use std::path::PathBuf;

/// What went wrong, coarsely: the CLI maps kinds to exit codes.
///
/// Each has a stable name ([`ErrorKind::as_str`]), which JSON output and the serving
/// process's control socket carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing a file failed.
    Io,
    /// The request or the input data cannot be used (wrong size, already encrypted, ...).
    InvalidInput,
    /// A settings file (VMX, VMDK descriptor, sidecar, keystore) is not valid.
    InvalidSettings,
    /// A wrapped key did not unwrap, or the image does not match its metadata.
    UnwrapFailed,
    /// The input is valid but not supported by this version.
    Unsupported,
    /// A key provider could not be reached (safe to retry).
    KeyService,
    /// A key provider answered and refused (not found, revoked, destroyed, denied).
    KeyRefused,
    /// The job was cancelled.
    Cancelled,
    /// Another job or program holds the disk; nothing was changed (safe to retry later).
    InUse,
    /// The operating system refused what vmcrypt needs (randomness, locked memory).
    System,
}

/// An error from vmcrypt-core. Messages are short and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done ("read", "write", "create", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A settings file could not be parsed or is missing a required entry.
    #[error("invalid settings in {}{}: {reason}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    InvalidSettings {
        /// The file.
        path: PathBuf,
        /// The 1-based line, when one line is at fault.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A key locator string is not in the `vmware:key/...` grammar.
    #[error("invalid key locator: {reason}")]
    InvalidLocator {
        /// What is wrong.
        reason: String,
    },
    /// A wrapped key failed to unwrap: wrong key, tampered, or copied from another disk.
    /// Deliberately opaque: no hint which check failed.
    #[error(
        "wrapped key did not unwrap (wrong key, tampered metadata, or metadata of another disk)"
    )]
    UnwrapFailed,
    /// A backup did not open under the passphrase given: a wrong passphrase (or a backup
    /// altered since it was made). Told apart from [`Error::UnwrapFailed`], which is about
    /// disks and KEKs, so the operator knows to try the passphrase again.
    #[error("wrong passphrase for the backup {} (or the backup was altered); nothing was restored", path.display())]
    WrongPassphrase {
        /// The backup file.
        path: PathBuf,
    },
    /// The image does not match what its metadata records.
    #[error("{} does not match its metadata: {reason}", path.display())]
    Integrity {
        /// The payload file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The request cannot be carried out on this input.
    #[error("{reason}")]
    InvalidInput {
        /// What is wrong, with the path if there is one.
        reason: String,
    },
    /// The disk or VM is not encrypted.
    #[error("{} is not encrypted", path.display())]
    NotEncrypted {
        /// The disk or VMX.
        path: PathBuf,
    },
    /// The disk is encrypted already.
    #[error("{} is already encrypted", path.display())]
    AlreadyEncrypted {
        /// The disk.
        path: PathBuf,
    },
    /// An in-place disk job or a VM job was interrupted: `vmcrypt resume` finishes it, and
    /// every other job refuses the disk until then.
    #[error("{} has an interrupted job (state {state}): run `vmcrypt resume {}` to finish it first", path.display(), resume.display())]
    JobUnderWay {
        /// The disk or VMX.
        path: PathBuf,
        /// Its state (`encrypting`, `decrypting`, `rekeying`).
        state: &'static str,
        /// What to resume: the disk, or the VMX of the VM job it is part of.
        resume: PathBuf,
    },
    /// A disk of an encrypted VM, asked to change on its own: its VM's job does it.
    #[error("{} belongs to a VM: {advice}", path.display())]
    BelongsToVm {
        /// The disk.
        path: PathBuf,
        /// What to run instead.
        advice: String,
    },
    /// A file vmcrypt would create exists: it never overwrites one.
    #[error("{} already exists; not overwriting it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A path that must name a regular file names something else (a directory, a FIFO, a
    /// device).
    #[error("{} is not a regular file", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// Valid input that this version does not support.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What is not supported.
        what: String,
    },
    /// A key provider failed.
    #[error("key provider {provider:?}: {reason}")]
    KeyService {
        /// The provider name.
        provider: String,
        /// What happened.
        reason: String,
        /// The provider's own error (a KMIP client's, with its causes), if it has one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A key provider answered, and refused: the key is unknown, not active, revoked or
    /// destroyed, or the request was denied. Retrying will not help.
    #[error("key provider {provider:?} refused: {reason}")]
    KeyRefused {
        /// The provider name.
        provider: String,
        /// What it said.
        reason: String,
        /// The provider's own error, if it has one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The operating system gave no randomness: no key, nonce or uuid can be made. Not a key
    /// provider's fault, and retrying will not help until the system is fixed.
    #[error("no randomness from the operating system: {reason}")]
    NoRandomness {
        /// What the OS said.
        reason: String,
    },
    /// A key schedule could not be put in locked, non-dumpable memory (RLIMIT_MEMLOCK too
    /// low, most often); the reason says how to raise the limit.
    #[error("{reason}")]
    NoLockedMemory {
        /// What the OS said, and the fix.
        reason: String,
    },
    /// The native keystore is missing, unreadable or unsafe.
    #[error("keystore {}: {reason}", path.display())]
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another vmcrypt job, another thread of this process, or another program (QEMU) holds
    /// a file of the disk; nothing was changed.
    #[error("{} is in use by {holder}; nothing was changed", path.display())]
    InUse {
        /// The file that is held.
        path: PathBuf,
        /// Who holds it, as far as can be known.
        holder: String,
    },
    /// The sector cipher refused its input.
    #[error("sector cipher")]
    Xts(#[from] vmcrypt_xts::Error),
    /// The process that serves the disk carried out the request and failed (its error, as
    /// it reported it over the control socket).
    #[error("the server of {} (pid {pid}): {message}", disk.display())]
    Served {
        /// The disk.
        disk: PathBuf,
        /// The serving process.
        pid: u32,
        /// The kind of its error.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// The job was cancelled before it finished.
    #[error("cancelled{}", if *restored { "; the disk was put back as it was" } else { "" })]
    Cancelled {
        /// Payload bytes that had been processed when the job stopped.
        done: u64,
        /// Whether an in-place job undid its work (the disk is as before the command).
        restored: bool,
    },
}

impl From<vmcrypt_secmem::Error> for Error {
    fn from(e: vmcrypt_secmem::Error) -> Self {
        Error::Unsupported {
            what: e.to_string(),
        }
    }
}

impl ErrorKind {
    const ALL: [ErrorKind; 10] = [
        ErrorKind::Io,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidSettings,
        ErrorKind::UnwrapFailed,
        ErrorKind::Unsupported,
        ErrorKind::KeyService,
        ErrorKind::KeyRefused,
        ErrorKind::Cancelled,
        ErrorKind::InUse,
        ErrorKind::System,
    ];

    /// The kind's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::InvalidSettings => "invalid_settings",
            ErrorKind::UnwrapFailed => "unwrap_failed",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::KeyService => "key_service",
            ErrorKind::KeyRefused => "key_refused",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::InUse => "in_use",
            ErrorKind::System => "system",
        }
    }

    /// The kind named `name` ([`ErrorKind::as_str`]).
    pub fn parse(name: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::InvalidSettings { .. }
            | Error::InvalidLocator { .. }
            | Error::Keystore { .. } => ErrorKind::InvalidSettings,
            Error::UnwrapFailed | Error::Integrity { .. } | Error::WrongPassphrase { .. } => {
                ErrorKind::UnwrapFailed
            }
            Error::InvalidInput { .. }
            | Error::NotEncrypted { .. }
            | Error::AlreadyEncrypted { .. }
            | Error::JobUnderWay { .. }
            | Error::BelongsToVm { .. }
            | Error::Exists { .. }
            | Error::NotRegularFile { .. }
            | Error::Xts(_) => ErrorKind::InvalidInput,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::KeyService { .. } => ErrorKind::KeyService,
            Error::KeyRefused { .. } => ErrorKind::KeyRefused,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::InUse { .. } => ErrorKind::InUse,
            Error::NoRandomness { .. } | Error::NoLockedMemory { .. } => ErrorKind::System,
            Error::Served { kind, .. } => *kind,
        }
    }

    /// A mapper from an OS error to [`Error::Io`] doing `op` on `path`:
    /// `.map_err(Error::io("read", path))`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// [`Error::InvalidInput`] with this reason.
    pub fn input(reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            reason: reason.into(),
        }
    }

    /// [`Error::KeyService`] with no underlying error.
    pub fn key_service(provider: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::KeyService {
            provider: provider.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// [`Error::KeyRefused`] with no underlying error.
    pub fn key_refused(provider: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::KeyRefused {
            provider: provider.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// [`Error::JobUnderWay`] for `path`, to be resumed as itself.
    pub(crate) fn job_under_way(path: &std::path::Path, state: &'static str) -> Error {
        Error::JobUnderWay {
            path: path.to_path_buf(),
            state,
            resume: path.to_path_buf(),
        }
    }

    /// [`Error::NotEncrypted`] for `path`.
    pub(crate) fn not_encrypted(path: &std::path::Path) -> Error {
        Error::NotEncrypted {
            path: path.to_path_buf(),
        }
    }

    pub(crate) fn settings(
        path: impl Into<PathBuf>,
        line: Option<usize>,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidSettings {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }
}

/// The messages of an error's sources, outermost first (the error itself not included): the
/// `caused by:` lines of an error report.
pub fn error_causes(e: &dyn std::error::Error) -> Vec<String> {
    std::iter::successors(e.source(), |s| s.source())
        .map(|s| s.to_string())
        .collect()
}

/// An error and its causes on one line, joined by ": ".
pub fn error_line(e: &dyn std::error::Error) -> String {
    std::iter::once(e.to_string())
        .chain(error_causes(e))
        .collect::<Vec<_>>()
        .join(": ")
}

/// Results of vmcrypt-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
