//! Replays the cargo-fuzz corpora of the settings codec and the key locator parser
//! (fuzz/corpus/{settings_parse,locator_parse}) with the fuzz targets' checks.

use std::path::{Path, PathBuf};

use vmcrypt_core::locator::KeyLocator;
use vmcrypt_core::settings::{Flavor, Settings};

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect()
}

#[test]
fn settings_corpus_replays() {
    let inputs = corpus("settings_parse");
    assert!(inputs.len() >= 2);
    for data in inputs {
        for flavor in [Flavor::Vmx, Flavor::Descriptor] {
            if let Ok(s) = Settings::parse(&data, flavor, Path::new("corpus")) {
                assert_eq!(s.render().as_bytes(), data.as_slice());
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
