//! The Network Block Device protocol (NetworkBlockDevice/nbd `doc/proto.md`), server side.

pub mod handshake;
pub mod wire;
