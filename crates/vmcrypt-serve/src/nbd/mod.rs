//! The Network Block Device protocol (NetworkBlockDevice/nbd `doc/proto.md`), server side:
//! the wire formats ([`handshake`], [`wire`]), the handshake's order ([`negotiate`]), one
//! connection's transmission phase (`session`), and the server that accepts clients and
//! shares a worker pool among them ([`server`]).

pub mod handshake;
pub mod negotiate;
pub mod server;
mod session;
pub mod wire;

pub use negotiate::Offer;
pub use server::{NbdServer, ServeStats};
