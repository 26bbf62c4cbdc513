//! Replays the cargo-fuzz corpus of the agent protocol (fuzz/corpus/agent_proto) with the fuzz
//! target's checks.

fn corpus(name: &str) -> Vec<Vec<u8>> {
    vmcrypt_testkit::fuzz_corpus(name)
}

#[test]
fn agent_proto_corpus_replays() {
    use vmcrypt_agent::proto::{Request, Response};
    use vmcrypt_core::provider::KeyPurpose;
    let inputs = corpus("agent_proto");
    assert!(inputs.len() >= 8);
    let kinds = [
        Request::Fetch {
            provider: "p".into(),
            key_id: "k".into(),
        },
        Request::Create {
            provider: "p".into(),
            purpose: KeyPurpose::Vm("u".into()),
        },
        Request::Status,
        Request::Forget {
            provider: String::new(),
            key_id: String::new(),
        },
    ];
    let mut decoded = 0;
    for data in inputs {
        if let Ok(r) = Request::decode(&data) {
            assert_eq!(r.encode().as_slice(), data.as_slice());
            decoded += 1;
        }
        for req in &kinds {
            if let Ok(resp) = Response::decode(req, &data) {
                assert_eq!(resp.encode().as_slice(), data.as_slice());
                decoded += 1;
            }
        }
    }
    assert!(decoded >= 8, "the seeds decode");
}
