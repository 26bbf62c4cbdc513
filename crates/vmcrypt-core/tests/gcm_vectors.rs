//! The wrap's AEAD primitive against NIST CAVP AES-256-GCM vectors (96-bit IV, 128-bit tag,
//! the wrap's parameters): every encrypt vector reproduced, every decrypt vector opened, and
//! every record marked FAIL rejected.

use std::path::PathBuf;

use vmcrypt_core::Error;
use vmcrypt_core::wrap::{aead_open, aead_seal};

fn read(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/wrap")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

struct Record {
    fields: Vec<(String, String)>,
    fail: bool,
}

impl Record {
    fn get(&self, k: &str) -> Vec<u8> {
        let v = self
            .fields
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k}"));
        unhex(&v.1)
    }
}

fn records(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut cur: Option<Record> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Count = ") {
            out.extend(cur.take());
            cur = Some(Record {
                fields: Vec::new(),
                fail: false,
            });
        } else if line == "FAIL" {
            if let Some(r) = &mut cur {
                r.fail = true;
            }
        } else if let (Some(r), Some((k, v))) = (&mut cur, line.split_once(" = ")) {
            r.fields.push((k.to_string(), v.to_string()));
        } else if let (Some(r), Some(k)) = (&mut cur, line.strip_suffix(" =")) {
            r.fields.push((k.to_string(), String::new()));
        }
    }
    out.extend(cur);
    out
}

#[test]
fn cavp_encrypt_vectors() {
    let recs = records(&read("cavp-gcmEncryptExtIV256-iv96-tag128.rsp"));
    for r in &recs {
        let key: [u8; 32] = r.get("Key").try_into().expect("32-byte key");
        let iv: [u8; 12] = r.get("IV").try_into().expect("12-byte IV");
        let mut want = r.get("CT");
        want.extend(r.get("Tag"));
        assert_eq!(
            aead_seal(&key, &iv, &r.get("AAD"), &r.get("PT")).expect("seal"),
            want
        );
    }
    assert_eq!(recs.len(), 375);
}

#[test]
fn cavp_decrypt_vectors_including_every_invalid_one() {
    let recs = records(&read("cavp-gcmDecrypt256-iv96-tag128.rsp"));
    let (mut ok, mut rejected) = (0, 0);
    for r in &recs {
        let key: [u8; 32] = r.get("Key").try_into().expect("32-byte key");
        let iv: [u8; 12] = r.get("IV").try_into().expect("12-byte IV");
        let mut sealed = r.get("CT");
        sealed.extend(r.get("Tag"));
        let res = aead_open(&key, &iv, &r.get("AAD"), &sealed);
        if r.fail {
            assert!(
                matches!(res, Err(Error::UnwrapFailed)),
                "a FAIL vector opened"
            );
            rejected += 1;
        } else {
            assert_eq!(*res.expect("valid vector"), r.get("PT"));
            ok += 1;
        }
    }
    assert_eq!((ok, rejected), (184, 191));
}
