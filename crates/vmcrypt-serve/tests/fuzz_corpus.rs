//! Replays the cargo-fuzz corpus of the NBD decoders (fuzz/corpus/nbd_request) with the fuzz
//! target's checks.

#[test]
fn nbd_request_corpus_replays() {
    let inputs = vmcrypt_testkit::fuzz_corpus("nbd_request");
    assert!(inputs.len() >= 50, "the corpus has {} inputs", inputs.len());
    for data in &inputs {
        vmcrypt_serve::fuzzing::check(data);
    }
}
