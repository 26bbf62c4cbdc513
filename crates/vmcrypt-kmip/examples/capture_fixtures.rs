//! Records a fixed sequence of KMIP exchanges with a real PyKMIP server into
//! testdata/kmip/pykmip-0.11/, the byte fixtures that tests/fixtures.rs replays offline.
//!
//!     cargo run -p vmcrypt-kmip --example capture_fixtures
//!
//! The key it creates is a throwaway on a throwaway server.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vmcrypt_kmip::client::{KmipClient, SUPPORTED_VERSIONS};
use vmcrypt_kmip::spec;
use vmcrypt_kmip::transport::{Timeouts, TlsTransport, Transport, client_config};
use zeroize::Zeroizing;

type Log = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

struct Recorder {
    inner: TlsTransport,
    log: Log,
}

impl Transport for Recorder {
    fn round_trip(&mut self, request: &[u8]) -> vmcrypt_kmip::Result<Zeroizing<Vec<u8>>> {
        let resp = self.inner.round_trip(request)?;
        self.log
            .lock()
            .expect("log")
            .push((request.to_vec(), resp.to_vec()));
        Ok(resp)
    }

    fn server(&self) -> &str {
        self.inner.server()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let cluster = vmcrypt_testkit::pykmip::Cluster::start(1);
    let pki = &cluster.pki;
    let cfg = client_config(&pki.ca, &pki.client_cert, &pki.client_key).expect("tls config");
    let t = TlsTransport::connect(&cluster.servers[0], "127.0.0.1", cfg, Timeouts::default())
        .expect("connect");
    let log: Log = Arc::default();
    let mut c = KmipClient::new(Box::new(Recorder {
        inner: t,
        log: log.clone(),
    }));
    let name = "vmcrypt-fixture-key";
    let mut steps: Vec<&str> = Vec::new();
    c.discover_versions(&SUPPORTED_VERSIONS)
        .expect("DiscoverVersions");
    steps.push("discover-versions");
    c.negotiate().expect("negotiate");
    steps.push("negotiate");
    c.query().expect("Query");
    steps.push("query");
    let uid = c.create_aes256(name).expect("Create");
    steps.push("create");
    c.activate(&uid).expect("Activate");
    steps.push("activate");
    c.state(&uid).expect("GetAttributes");
    steps.push("get-attributes-state");
    c.get_aes256(&uid).expect("Get");
    steps.push("get");
    c.locate_by_name(name).expect("Locate");
    steps.push("locate");
    let _ = c.destroy(&uid).expect_err("Destroy of an active key fails");
    steps.push("destroy-active-fails");
    c.revoke(&uid, spec::REVOCATION_CESSATION).expect("Revoke");
    steps.push("revoke");
    c.destroy(&uid).expect("Destroy");
    steps.push("destroy");
    let _ = c.get_aes256(&uid).expect_err("Get after Destroy fails");
    steps.push("get-destroyed-fails");

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kmip/pykmip-0.11");
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let log = log.lock().expect("log");
    assert_eq!(log.len(), steps.len());
    for (i, ((req, resp), step)) in log.iter().zip(&steps).enumerate() {
        let text = format!(
            "# source: PyKMIP 0.11.0 server (vmcrypt test kit), captured by examples/capture_fixtures.rs\n\
             # step {i}: {step}; key name {name:?}, unique identifier {uid:?}\n\
             # expect: the response decodes, re-encodes to the same bytes, and gives the typed result of the step\n\
             request = {}\nresponse = {}\n",
            hex(req),
            hex(resp)
        );
        std::fs::write(dir.join(format!("{i:02}-{step}.txt")), text).expect("write fixture");
    }
    println!("wrote {} fixtures to {}", log.len(), dir.display());
}
