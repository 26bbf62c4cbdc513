//! vmcrypt-kmip: a KMIP 1.x client for vmcrypt's key providers.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

pub mod ttlv;
