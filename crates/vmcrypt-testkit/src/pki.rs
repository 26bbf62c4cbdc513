//! A throwaway PKI made with the `openssl` command line tool.

use std::path::{Path, PathBuf};
use std::process::Command;

const EXTENSIONS: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kms.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
# PyKMIP refuses client certificates without clientAuth.
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Paths of every certificate and key (PEM; keys in PKCS#8).
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate with an RSA key, from the same CA.
    pub client_rsa_cert: PathBuf,
    pub client_rsa_key: PathBuf,
    /// A second CA nobody trusts, and certificates from it.
    pub rogue_ca: PathBuf,
    pub rogue_server_cert: PathBuf,
    pub rogue_server_key: PathBuf,
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| {
        panic!("the `openssl` command is needed to make test certificates ({e}); install it with `apt-get install openssl`")
    });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

impl Pki {
    /// Makes every certificate in `dir`.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let cnf = dir.join("openssl.cnf");
        std::fs::write(&cnf, EXTENSIONS).expect("openssl.cnf");
        let key = |name: &str, rsa: bool| {
            let p = dir.join(format!("{name}.key"));
            if rsa {
                openssl(&[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    s(&p),
                ]);
            } else {
                openssl(&[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    s(&p),
                ]);
            }
            p
        };
        let ca = |name: &str, cn: &str| {
            let k = key(name, false);
            let c = dir.join(format!("{name}.crt"));
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                s(&k),
                "-sha256",
                "-days",
                "3650",
                "-subj",
                &format!("/CN={cn}"),
                "-config",
                s(&cnf),
                "-extensions",
                "ca",
                "-out",
                s(&c),
            ]);
            (c, k)
        };
        let leaf = |name: &str, cn: &str, ca: &(PathBuf, PathBuf), profile: &str, rsa: bool| {
            let k = key(name, rsa);
            let csr = dir.join(format!("{name}.csr"));
            let c = dir.join(format!("{name}.crt"));
            openssl(&[
                "req",
                "-new",
                "-key",
                s(&k),
                "-subj",
                &format!("/CN={cn}"),
                "-config",
                s(&cnf),
                "-out",
                s(&csr),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                s(&csr),
                "-CA",
                s(&ca.0),
                "-CAkey",
                s(&ca.1),
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha256",
                "-extfile",
                s(&cnf),
                "-extensions",
                profile,
                "-out",
                s(&c),
            ]);
            (c, k)
        };
        let main = ca("ca", "vmcrypt test CA");
        let server = leaf("server", "localhost", &main, "server", false);
        let client = leaf("client", "vmcrypt-test-client", &main, "client", false);
        let client_rsa = leaf("client-rsa", "vmcrypt-test-client", &main, "client", true);
        let rogue = ca("rogue-ca", "untrusted test CA");
        let rogue_server = leaf("rogue-server", "localhost", &rogue, "server", false);
        let rogue_client = leaf(
            "rogue-client",
            "vmcrypt-test-client",
            &rogue,
            "client",
            false,
        );
        Pki {
            dir: dir.to_path_buf(),
            ca: main.0,
            server_cert: server.0,
            server_key: server.1,
            client_cert: client.0,
            client_key: client.1,
            client_rsa_cert: client_rsa.0,
            client_rsa_key: client_rsa.1,
            rogue_ca: rogue.0,
            rogue_server_cert: rogue_server.0,
            rogue_server_key: rogue_server.1,
            rogue_client_cert: rogue_client.0,
            rogue_client_key: rogue_client.1,
        }
    }
}
