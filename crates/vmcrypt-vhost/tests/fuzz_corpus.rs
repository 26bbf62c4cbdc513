//! Replays the cargo-fuzz corpus of the virtio-blk request decoder (fuzz/corpus/vhost_request)
//! with the fuzz target's checks.

#[test]
fn vhost_request_corpus_replays() {
    let inputs = vmcrypt_testkit::fuzz_corpus("vhost_request");
    assert!(inputs.len() >= 20, "the corpus has {} inputs", inputs.len());
    for data in &inputs {
        vmcrypt_vhost::fuzzing::check(data);
    }
}
