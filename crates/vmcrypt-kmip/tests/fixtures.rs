//! Byte fixtures of real PyKMIP 0.11 exchanges (testdata/kmip/pykmip-0.11, recorded by
//! examples/capture_fixtures.rs), replayed offline: every message decodes and re-encodes to the
//! same bytes, our requests are byte-identical to the recorded ones, and each response gives
//! the typed result of its step.

use std::collections::VecDeque;
use std::path::PathBuf;

use vmcrypt_kmip::client::{KmipClient, ProtocolVersion, SUPPORTED_VERSIONS};
use vmcrypt_kmip::spec::{self, State};
use vmcrypt_kmip::transport::Transport;
use vmcrypt_kmip::ttlv::{Item, Limits};
use vmcrypt_kmip::{Error, Result};
use zeroize::Zeroizing;

struct Fixture {
    name: String,
    request: Vec<u8>,
    response: Vec<u8>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kmip/pykmip-0.11");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read fixture");
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                    .map(unhex)
                    .unwrap_or_else(|| panic!("{}: no {k}", p.display()))
            };
            Fixture {
                name: p.file_name().expect("name").to_string_lossy().into_owned(),
                request: field("request"),
                response: field("response"),
            }
        })
        .collect()
}

struct Replay(VecDeque<Fixture>);

impl Transport for Replay {
    fn round_trip(&mut self, request: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let f = self.0.pop_front().expect("more requests than fixtures");
        assert_eq!(
            request,
            f.request.as_slice(),
            "{}: our request differs from the recorded one",
            f.name
        );
        Ok(Zeroizing::new(f.response))
    }

    fn server(&self) -> &str {
        "fixture"
    }
}

#[test]
fn every_message_round_trips_byte_for_byte() {
    let all = fixtures();
    assert_eq!(all.len(), 12);
    for f in &all {
        for (what, bytes) in [("request", &f.request), ("response", &f.response)] {
            let item = Item::decode(bytes, Limits::default())
                .unwrap_or_else(|e| panic!("{} {what}: {e}", f.name));
            assert_eq!(
                &item.encode(),
                bytes,
                "{} {what} re-encodes differently",
                f.name
            );
        }
    }
}

#[test]
fn replayed_session_gives_typed_results() {
    let mut c = KmipClient::new(Box::new(Replay(fixtures().into())));
    let versions = c
        .discover_versions(&SUPPORTED_VERSIONS)
        .expect("DiscoverVersions");
    assert_eq!(
        versions.first(),
        Some(&ProtocolVersion { major: 1, minor: 4 }),
        "{versions:?}"
    );
    assert_eq!(
        c.negotiate().expect("negotiate"),
        ProtocolVersion { major: 1, minor: 4 }
    );
    let info = c.query().expect("Query");
    assert!(info.operations.contains(&(spec::Operation::Create as u32)));
    assert_eq!(
        info.vendor.as_deref(),
        Some("PyKMIP 0.11.0 Software Server")
    );
    let uid = c.create_aes256("vmcrypt-fixture-key").expect("Create");
    c.activate(&uid).expect("Activate");
    assert_eq!(c.state(&uid).expect("GetAttributes"), State::Active);
    assert_eq!(c.get_aes256(&uid).expect("Get").len(), 32);
    assert_eq!(
        c.locate_by_name("vmcrypt-fixture-key").expect("Locate"),
        vec![uid.clone()]
    );
    let e = c.destroy(&uid).expect_err("Destroy of an active key");
    assert!(matches!(e, Error::Operation { .. }), "{e}");
    c.revoke(&uid, spec::REVOCATION_CESSATION).expect("Revoke");
    c.destroy(&uid).expect("Destroy");
    let e = c.get_aes256(&uid).expect_err("Get after Destroy");
    assert!(
        matches!(
            e,
            Error::Operation {
                reason: Some(spec::REASON_ITEM_NOT_FOUND),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tampered_responses_are_errors_not_panics() {
    // Every single-byte change of every recorded response either still decodes or is an error.
    for f in fixtures() {
        for i in 0..f.response.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = f.response.clone();
                b[i] ^= flip;
                let _ = Item::decode(&b, Limits::default());
            }
        }
    }
}
