//! Talking to an agent over its socket: [`AgentClient`] and the [`AgentProvider`] it hands out,
//! which any operation of this library takes like a local provider.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{self, FailKind, Frame, Request, Response, Status};
use vmcrypt_core::provider::{KeyId, KeyProvider, KeyPurpose};
use vmcrypt_core::secret::Kek;
use vmcrypt_core::{Error, Result};

/// How long a client waits for an answer: longer than an agent walking a cluster of hung
/// servers at the default 60 s timeout each.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(900);

/// A client of the agent serving on a socket. Each request uses its own connection (a Unix
/// connect costs microseconds), so a client is cheap, `Send` and `Sync`.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    /// A client for the agent on `socket` (nothing is contacted yet).
    pub fn new(socket: &Path) -> Self {
        AgentClient {
            socket: socket.to_path_buf(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, provider: &str, e: &dyn std::fmt::Display) -> Error {
        Error::key_service(provider, format!("agent at {}: {e}", self.socket.display()))
    }

    /// Sends one request and reads its response. A failure the agent reports comes back as the
    /// matching library error (an unreachable provider as [`Error::KeyService`], and so on).
    ///
    /// # Errors
    /// [`Error::KeyService`] when the agent cannot be reached or answers garbage; what the
    /// agent reported.
    pub fn call(&self, req: &Request) -> Result<Response> {
        let provider = match req {
            Request::Fetch { provider, .. } | Request::Create { provider, .. } => provider.as_str(),
            Request::Status | Request::Forget { .. } => "agent",
        };
        let mut s =
            UnixStream::connect(&self.socket).map_err(|e| self.unreachable(provider, &e))?;
        s.set_read_timeout(Some(RESPONSE_TIMEOUT))
            .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(10))))
            .map_err(|e| self.unreachable(provider, &e))?;
        // If the write fails the agent may have refused this peer and closed: its reason is
        // then waiting to be read.
        let written = proto::write_frame(&mut s, &req.encode());
        let body = match proto::read_frame(&mut s, proto::MAX_RESPONSE) {
            Ok(Frame::Body(b)) => b,
            _ if written.is_err() => {
                let e = written.err().map(|e| e.to_string()).unwrap_or_default();
                return Err(self.unreachable(provider, &e));
            }
            Ok(Frame::Closed) => {
                return Err(self.unreachable(provider, &"closed the connection without answering"));
            }
            Ok(Frame::TooLarge(n)) => {
                return Err(self.unreachable(provider, &format!("answered {n} bytes")));
            }
            Err(e) => return Err(self.unreachable(provider, &e)),
        };
        let resp =
            Response::decode(req, &body).map_err(|e| self.unreachable(provider, &e.to_string()))?;
        match resp {
            Response::Failed {
                kind,
                provider: p,
                message,
            } => {
                let p = if p.is_empty() {
                    provider.to_string()
                } else {
                    p
                };
                Err(match kind {
                    FailKind::KeyService => {
                        Error::key_service(p, format!("{message} (through the agent)"))
                    }
                    FailKind::KeyRefused => Error::key_refused(p, message),
                    FailKind::InvalidInput => Error::input(format!("agent: {message}")),
                    FailKind::Other => Error::key_service(
                        p,
                        format!("agent at {}: {message}", self.socket.display()),
                    ),
                })
            }
            ok => Ok(ok),
        }
    }

    /// The agent's state.
    ///
    /// # Errors
    /// As [`AgentClient::call`].
    pub fn status(&self) -> Result<Status> {
        match self.call(&Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(self.unreachable("", &format!("unexpected answer {other:?}"))),
        }
    }

    /// Makes the agent forget cached keys: one (`provider` and `key_id`), every key of a
    /// provider (`key_id` `None`), or all (both `None`). Returns how many it forgot.
    ///
    /// # Errors
    /// As [`AgentClient::call`].
    pub fn forget(&self, provider: Option<&str>, key_id: Option<&str>) -> Result<u32> {
        let req = Request::Forget {
            provider: provider.unwrap_or_default().to_string(),
            key_id: key_id.unwrap_or_default().to_string(),
        };
        match self.call(&req)? {
            Response::Forgotten(n) => Ok(n),
            other => Err(self.unreachable("agent", &format!("unexpected answer {other:?}"))),
        }
    }

    /// The named provider of the agent.
    pub fn provider(&self, name: &str) -> AgentProvider {
        AgentProvider {
            client: self.clone(),
            name: name.to_string(),
        }
    }
}

/// One of the agent's providers, used through the socket.
#[derive(Debug, Clone)]
pub struct AgentProvider {
    client: AgentClient,
    name: String,
}

impl KeyProvider for AgentProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn create_kek(&self, purpose: &KeyPurpose) -> Result<(KeyId, Kek)> {
        let req = Request::Create {
            provider: self.name.clone(),
            purpose: purpose.clone(),
        };
        match self.client.call(&req)? {
            Response::Created(id, k) => Ok((KeyId::new(id)?, k)),
            other => Err(self
                .client
                .unreachable(&self.name, &format!("unexpected answer {other:?}"))),
        }
    }

    fn fetch_kek(&self, id: &KeyId) -> Result<Kek> {
        let req = Request::Fetch {
            provider: self.name.clone(),
            key_id: id.to_string(),
        };
        match self.client.call(&req)? {
            Response::Key(k) => Ok(k),
            other => Err(self
                .client
                .unreachable(&self.name, &format!("unexpected answer {other:?}"))),
        }
    }
}

/// The client as the registry of the disk and VM jobs of this library: every key operation
/// goes to the agent.
impl vmcrypt_core::provider::ProviderRegistry for AgentClient {
    fn provider(&self, name: &str) -> Result<std::sync::Arc<dyn KeyProvider>> {
        Ok(std::sync::Arc::new(AgentClient::provider(self, name)))
    }
}
