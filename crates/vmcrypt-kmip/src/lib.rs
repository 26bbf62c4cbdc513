//! vmcrypt-kmip: a KMIP 1.x client for vmcrypt's key providers.
//!
//! - [`ttlv`]: the binary encoding, decoded defensively (limits, strict lengths, no panics);
//! - [`client`]: DiscoverVersions, Query, Create, Activate, Get, GetAttributes, Locate, Revoke
//!   and Destroy over one connection, with every result status mapped to a typed error;
//! - [`transport`]: mutual TLS with rustls (TLS 1.2 and 1.3, ECDSA or RSA client keys) and a
//!   deadline on connect, handshake and every whole response;
//! - [`provider`]: a [`vmcrypt_core::provider::KeyProvider`] over an ordered list of servers
//!   that replicate the same keys, with the failover rules of docs/kmip.md.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

pub mod client;
mod error;
mod failover;
pub mod provider;
mod settings;
pub mod spec;
pub mod transport;
pub mod ttlv;

pub use error::{Error, ErrorKind, Result};
