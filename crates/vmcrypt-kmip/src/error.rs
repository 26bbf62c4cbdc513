//! The one error type of vmcrypt-kmip.

use std::time::Duration;

use crate::ttlv::TtlvError;

/// What kind of failure: decides whether the next server of a cluster is tried and which exit
/// code the CLI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server could not be reached, refused, closed, timed out, or failed TLS: try the next.
    Unreachable,
    /// The server answered something that is not valid KMIP: try the next.
    Protocol,
    /// The server answered with a KMIP failure (wrong state, not found, denied).
    Refused,
    /// Local configuration (files, names) is wrong: no server can help.
    Config,
}

/// An error from the KMIP client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// TCP connect failed.
    #[error("cannot connect to {server}")]
    Connect {
        /// host:port.
        server: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A deadline passed.
    #[error("{server} did not answer within {} s ({phase})", timeout.as_secs_f64())]
    Timeout {
        /// host:port.
        server: String,
        /// connect, TLS handshake, response.
        phase: &'static str,
        /// The deadline.
        timeout: Duration,
    },
    /// The TLS layer failed (certificate not trusted, handshake refused, ...).
    #[error("TLS with {server} failed")]
    Tls {
        /// host:port.
        server: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The connection broke (reset, closed early).
    #[error("connection to {server} failed during {phase}")]
    Io {
        /// host:port.
        server: String,
        /// What was being done.
        phase: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's bytes are not a valid TTLV message.
    #[error("{server} sent an invalid KMIP message")]
    Ttlv {
        /// host:port.
        server: String,
        /// What is wrong.
        #[source]
        source: TtlvError,
    },
    /// The message is valid TTLV but not the expected KMIP response.
    #[error("{server} sent an unexpected KMIP response: {what}")]
    Protocol {
        /// host:port.
        server: String,
        /// What is wrong.
        what: String,
    },
    /// The server answered with a failure.
    #[error("{server}: {operation} failed: {reason_name}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Operation {
        /// host:port.
        server: String,
        /// The operation.
        operation: &'static str,
        /// Result Status.
        status: u32,
        /// Result Reason, if given.
        reason: Option<u32>,
        /// The reason's spec name.
        reason_name: &'static str,
        /// Result Message, if given.
        message: Option<String>,
    },
    /// A key is not usable (not active, revoked, destroyed) or not what was asked for.
    #[error("{server}: key {key_id}: {what}")]
    KeyState {
        /// host:port.
        server: String,
        /// The key's unique identifier.
        key_id: String,
        /// What is wrong.
        what: String,
    },
    /// Local configuration is wrong.
    #[error("{0}")]
    Config(String),
    /// Every server of a cluster failed.
    #[error("all {} servers of key provider {provider:?} failed: {}", failures.len(), summary(failures))]
    AllFailed {
        /// The provider name.
        provider: String,
        /// Each server with its error, in the order tried.
        failures: Vec<(String, Error)>,
    },
}

fn summary(f: &[(String, Error)]) -> String {
    f.iter()
        .map(|(s, e)| format!("[{s}] {}", vmcrypt_core::error_line(e)))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Tls { .. }
            | Error::Io { .. } => ErrorKind::Unreachable,
            Error::Ttlv { .. } | Error::Protocol { .. } => ErrorKind::Protocol,
            Error::Operation { .. } | Error::KeyState { .. } => ErrorKind::Refused,
            Error::Config(_) => ErrorKind::Config,
            Error::AllFailed { failures, .. } => {
                // Retryable only if no server gave a definite answer.
                if failures
                    .iter()
                    .all(|(_, e)| matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::Protocol))
                {
                    ErrorKind::Unreachable
                } else {
                    ErrorKind::Refused
                }
            }
        }
    }
}

impl From<Error> for vmcrypt_core::Error {
    fn from(e: Error) -> Self {
        let provider = match &e {
            Error::AllFailed { provider, .. } => provider.clone(),
            _ => String::new(),
        };
        // The message is this error's own; what it wraps (the TLS, OS or TTLV error) stays the
        // source, so it comes out as a `caused by:` line. Every server's failure, with its
        // causes, is already in the message of `AllFailed`.
        let kind = e.kind();
        let reason = e.to_string();
        let source: Option<Box<dyn std::error::Error + Send + Sync>> = match e {
            Error::Connect { source, .. } | Error::Io { source, .. } => Some(Box::new(source)),
            Error::Tls { source, .. } => Some(Box::new(source)),
            Error::Ttlv { source, .. } => Some(Box::new(source)),
            _ => None,
        };
        match kind {
            ErrorKind::Unreachable | ErrorKind::Protocol => vmcrypt_core::Error::KeyService {
                provider,
                reason,
                source,
            },
            ErrorKind::Refused => vmcrypt_core::Error::KeyRefused {
                provider,
                reason,
                source,
            },
            ErrorKind::Config => vmcrypt_core::Error::InvalidInput {
                reason: match source {
                    Some(s) => format!("{reason}: {s}"),
                    None => reason,
                },
            },
        }
    }
}

/// Results of vmcrypt-kmip.
pub type Result<T, E = Error> = std::result::Result<T, E>;
