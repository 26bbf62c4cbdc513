//! Replays the cargo-fuzz corpora of the settings codec and the key locator parser
//! (fuzz/corpus/{settings_parse,locator_parse}) with the fuzz targets' checks. The agent
//! protocol's corpus is replayed by vmcrypt-agent's tests.

use std::path::Path;

use vmcrypt_core::locator::KeyLocator;
use vmcrypt_core::settings::{Flavor, Settings};

fn corpus(name: &str) -> Vec<Vec<u8>> {
    vmcrypt_testkit::fuzz_corpus(name)
}

#[test]
fn settings_corpus_replays() {
    let inputs = corpus("settings_parse");
    assert!(inputs.len() >= 2);
    for data in inputs {
        for flavor in [Flavor::Vmx, Flavor::Descriptor] {
            if let Ok(s) = Settings::parse(&data, flavor, Path::new("corpus")) {
                // A descriptor's text ends at its first NUL (as QEMU reads it); the rest renders
                // as NUL padding at least as long.
                let out = s.render();
                let out = out.as_bytes();
                match data.iter().position(|b| *b == 0) {
                    Some(end) if flavor == Flavor::Descriptor => {
                        assert_eq!(&out[..end], &data[..end]);
                        assert!(out[end..].iter().all(|b| *b == 0) && out.len() >= data.len());
                    }
                    _ => assert_eq!(out, data.as_slice()),
                }
            }
        }
    }
}

#[test]
fn locator_corpus_replays() {
    let inputs = corpus("locator_parse");
    assert!(inputs.len() >= 2);
    for data in inputs {
        if let Ok(s) = std::str::from_utf8(&data)
            && let Ok(kl) = KeyLocator::parse(s)
        {
            assert_eq!(
                KeyLocator::parse(&kl.render()).expect("own rendering parses"),
                kl
            );
        }
    }
}
