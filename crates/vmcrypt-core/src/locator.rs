//! Key locators: the `vmware:key/...` strings that name and carry wrapped keys.
//!
//! Grammar (as VMware's crypto library writes it and govmomi's crypto/keylocator.go parses it):
//!
//! ```text
//! locator  = "vmware:key/" body
//! body     = "list/(" [ body *( "," body ) ] ")"
//!          | "pair/(" body "," FIELD "," FIELD ")"        ; locker, MAC name, base64 data
//!          | "fqid/" UID "/" FIELD "/" FIELD               ; unique id, key server id, key id
//!          | "null/" [ "<VMWARE-EMPTYSTRING>" ]
//!          | "rawkey/" FIELD | "phrase/" UID "/" FIELD | "role/" UID "/" FIELD
//!          | "ldap/" UID "/" FIELD "/" FIELD "/" PORT "/" BOOL "/" FIELD
//!          | "script/" UID "/" FIELD "/" FIELD
//! UID      = FIELD | "<VMWARE-NULL>"
//! ```
//!
//! A FIELD is any run of bytes other than `/ , ( )`; every byte that is not ASCII alphanumeric
//! is written as lowercase `%xx`, and `%xx` (either case) is decoded on input. Type names are
//! case-insensitive. Parsing accepts the whole grammar; vmcrypt itself writes `list`, `pair` and
//! `fqid` only.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The prefix of every key locator.
pub const PREFIX: &str = "vmware:key/";
/// The placeholder for an absent unique id.
pub const NULL_ELEM: &str = "<VMWARE-NULL>";
const EMPTY_ELEM: &str = "<VMWARE-EMPTYSTRING>";
/// Locators longer than this are refused before parsing (they live in one settings line).
pub const MAX_LEN: usize = 64 * 1024;
const MAX_DEPTH: usize = 16;

/// A parsed key locator.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyLocator {
    /// `null`: no key.
    Null,
    /// `rawkey`: a key in clear (parsed, never written by vmcrypt; never shown by `Debug`).
    RawKey(Zeroizing<String>),
    /// `phrase`: a key generated from a passphrase.
    Phrase {
        /// Unique id, if any.
        unique_id: Option<String>,
        /// Key generation data.
        data: String,
    },
    /// `role`: a well-known key.
    Role {
        /// Unique id, if any.
        unique_id: Option<String>,
        /// The role name.
        role: String,
    },
    /// `ldap`: key data in an LDAP server.
    Ldap {
        /// Unique id, if any.
        unique_id: Option<String>,
        /// Server.
        server: String,
        /// Domain.
        domain: String,
        /// Port.
        port: u32,
        /// Whether SSL is used.
        use_ssl: bool,
        /// Path.
        path: String,
    },
    /// `script`: key from an external script.
    Script {
        /// Unique id, if any.
        unique_id: Option<String>,
        /// Relative path of the script.
        rel_path: String,
        /// Signature.
        signature: String,
    },
    /// `fqid`: a key held by a key provider.
    Fqid {
        /// Unique id, usually absent (`<VMWARE-NULL>`).
        unique_id: Option<String>,
        /// The key provider (key server cluster) name.
        provider: String,
        /// The key id within the provider.
        key_id: String,
    },
    /// `list`: several locators, any of which may open the key.
    List(Vec<KeyLocator>),
    /// `pair`: data locked by the key the locker names.
    Pair {
        /// The locator of the locking key.
        locker: Box<KeyLocator>,
        /// The name of the locking algorithm.
        mac: String,
        /// The locked bytes.
        data: Vec<u8>,
    },
}

impl fmt::Debug for KeyLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLocator::RawKey(_) => f.write_str("RawKey(<redacted>)"),
            KeyLocator::Pair { locker, mac, data } => f
                .debug_struct("Pair")
                .field("locker", locker)
                .field("mac", mac)
                .field("data_len", &data.len())
                .finish(),
            other => f.write_str(&other.render()),
        }
    }
}

impl KeyLocator {
    /// Parses a locator string.
    ///
    /// # Errors
    /// [`Error::InvalidLocator`] with what is wrong.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() > MAX_LEN {
            return Err(bad(format!("longer than {MAX_LEN} bytes")));
        }
        let rest = s
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &s[PREFIX.len()..])
            .ok_or_else(|| bad(format!("does not start with {PREFIX:?}")))?;
        let mut p = Parser {
            s: rest.as_bytes(),
            pos: 0,
        };
        let kl = p.body(0)?;
        if p.pos != p.s.len() {
            return Err(bad(format!(
                "unexpected text at byte {}",
                p.pos + PREFIX.len()
            )));
        }
        Ok(kl)
    }

    /// Renders the locator in the form VMware writes.
    pub fn render(&self) -> String {
        let mut out = String::from(PREFIX);
        self.render_body(&mut out);
        out
    }

    fn render_body(&self, out: &mut String) {
        match self {
            KeyLocator::Null => out.push_str("null/"),
            KeyLocator::RawKey(k) => {
                out.push_str("rawkey/");
                escape(k, out);
            }
            KeyLocator::Phrase { unique_id, data } => {
                out.push_str("phrase/");
                uid(unique_id, out);
                out.push('/');
                escape(data, out);
            }
            KeyLocator::Role { unique_id, role } => {
                out.push_str("role/");
                uid(unique_id, out);
                out.push('/');
                escape(role, out);
            }
            KeyLocator::Ldap {
                unique_id,
                server,
                domain,
                port,
                use_ssl,
                path,
            } => {
                out.push_str("ldap/");
                uid(unique_id, out);
                for f in [
                    server.as_str(),
                    domain.as_str(),
                    &port.to_string(),
                    if *use_ssl { "TRUE" } else { "FALSE" },
                    path,
                ] {
                    out.push('/');
                    escape(f, out);
                }
            }
            KeyLocator::Script {
                unique_id,
                rel_path,
                signature,
            } => {
                out.push_str("script/");
                uid(unique_id, out);
                out.push('/');
                escape(rel_path, out);
                out.push('/');
                escape(signature, out);
            }
            KeyLocator::Fqid {
                unique_id,
                provider,
                key_id,
            } => {
                out.push_str("fqid/");
                uid(unique_id, out);
                out.push('/');
                escape(provider, out);
                out.push('/');
                escape(key_id, out);
            }
            KeyLocator::List(items) => {
                out.push_str("list/(");
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    it.render_body(out);
                }
                out.push(')');
            }
            KeyLocator::Pair { locker, mac, data } => {
                out.push_str("pair/(");
                locker.render_body(out);
                out.push(',');
                escape(mac, out);
                out.push(',');
                escape(&B64.encode(data), out);
                out.push(')');
            }
        }
    }
}

impl fmt::Display for KeyLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLocator::RawKey(_) => f.write_str("vmware:key/rawkey/<redacted>"),
            other => f.write_str(&other.render()),
        }
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidLocator {
        reason: reason.into(),
    }
}

fn escape(field: &str, out: &mut String) {
    for b in field.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
}

fn uid(u: &Option<String>, out: &mut String) {
    match u {
        // Written as the reference system writes it: the literal token, unescaped (govmomi's
        // writer emits it so). Both forms are read.
        None => out.push_str(NULL_ELEM),
        Some(s) => escape(s, out),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn body(&mut self, depth: usize) -> Result<KeyLocator> {
        if depth > MAX_DEPTH {
            return Err(bad("nested too deeply"));
        }
        let ty = self.field()?.to_ascii_lowercase();
        self.expect(b'/')?;
        Ok(match ty.as_str() {
            "null" => {
                let f = self.field()?;
                if !(f.is_empty() || f == EMPTY_ELEM) {
                    return Err(bad("null locator with content"));
                }
                KeyLocator::Null
            }
            "rawkey" => KeyLocator::RawKey(Zeroizing::new(self.field()?)),
            "phrase" => {
                let unique_id = self.uid()?;
                self.expect(b'/')?;
                KeyLocator::Phrase {
                    unique_id,
                    data: self.field()?,
                }
            }
            "role" => {
                let unique_id = self.uid()?;
                self.expect(b'/')?;
                KeyLocator::Role {
                    unique_id,
                    role: self.field()?,
                }
            }
            "ldap" => {
                let unique_id = self.uid()?;
                let mut f = Vec::new();
                for _ in 0..5 {
                    self.expect(b'/')?;
                    f.push(self.field()?);
                }
                let port = f[2].parse().map_err(|_| bad("ldap port is not a number"))?;
                let use_ssl = match f[3].to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("ldap useSSL is not a boolean")),
                };
                let mut it = f.into_iter();
                let server = it.next().unwrap_or_default();
                let domain = it.next().unwrap_or_default();
                let path = it.nth(2).unwrap_or_default();
                KeyLocator::Ldap {
                    unique_id,
                    server,
                    domain,
                    port,
                    use_ssl,
                    path,
                }
            }
            "script" => {
                let unique_id = self.uid()?;
                self.expect(b'/')?;
                let rel_path = self.field()?;
                self.expect(b'/')?;
                KeyLocator::Script {
                    unique_id,
                    rel_path,
                    signature: self.field()?,
                }
            }
            "fqid" => {
                let unique_id = self.uid()?;
                self.expect(b'/')?;
                let provider = self.field()?;
                self.expect(b'/')?;
                let key_id = self.field()?;
                if key_id.is_empty() {
                    return Err(bad("fqid without a key id"));
                }
                KeyLocator::Fqid {
                    unique_id,
                    provider,
                    key_id,
                }
            }
            "list" => {
                self.expect(b'(')?;
                let mut items = Vec::new();
                if self.peek() != Some(b')') {
                    loop {
                        items.push(self.body(depth + 1)?);
                        match self.next() {
                            Some(b',') => continue,
                            Some(b')') => break,
                            _ => return Err(bad("list element not followed by ',' or ')'")),
                        }
                    }
                } else {
                    self.pos += 1;
                }
                KeyLocator::List(items)
            }
            "pair" => {
                self.expect(b'(')?;
                let locker = Box::new(self.body(depth + 1)?);
                self.expect(b',')?;
                let mac = self.field()?;
                self.expect(b',')?;
                let data = B64
                    .decode(self.field()?.as_bytes())
                    .map_err(|_| bad("pair data is not base64"))?;
                self.expect(b')')?;
                KeyLocator::Pair { locker, mac, data }
            }
            other => return Err(bad(format!("unknown locator type {other:?}"))),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        match self.next() {
            Some(x) if x == c => Ok(()),
            Some(x) => Err(bad(format!(
                "expected {:?} at byte {}, found {:?}",
                c as char,
                self.pos - 1 + PREFIX.len(),
                x as char
            ))),
            None => Err(bad(format!("expected {:?}, found the end", c as char))),
        }
    }

    /// A field up to the next delimiter, with `%xx` decoded.
    fn field(&mut self) -> Result<String> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                b'/' | b',' | b'(' | b')' => break,
                b'%' => {
                    let hex = self
                        .s
                        .get(self.pos + 1..self.pos + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            bad(format!("bad %-escape at byte {}", self.pos + PREFIX.len()))
                        })?;
                    out.push(hex);
                    self.pos += 3;
                }
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| bad("field is not UTF-8"))
    }

    fn uid(&mut self) -> Result<Option<String>> {
        let f = self.field()?;
        Ok(if f == NULL_ELEM { None } else { Some(f) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_vmware_keysafe() {
        let s = "vmware:key/list/(pair/(fqid/<VMWARE%2dNULL>/KMS%5fCluster/5b8c%2d11,HMAC%2dSHA%2d256,QUJD),null/)";
        let kl = KeyLocator::parse(s).expect("valid");
        let KeyLocator::List(items) = &kl else {
            panic!("not a list")
        };
        assert_eq!(items.len(), 2);
        let KeyLocator::Pair { locker, mac, data } = &items[0] else {
            panic!("not a pair")
        };
        assert_eq!(mac, "HMAC-SHA-256");
        assert_eq!(data, b"ABC");
        assert_eq!(
            **locker,
            KeyLocator::Fqid {
                unique_id: None,
                provider: "KMS_Cluster".into(),
                key_id: "5b8c-11".into()
            }
        );
        assert_eq!(items[1], KeyLocator::Null);
        assert_eq!(KeyLocator::parse(&kl.render()).expect("round trip"), kl);
        // Written as the reference system writes it, and the literal form is read the same.
        let written = kl.render();
        assert!(
            written.starts_with("vmware:key/list/(pair/(fqid/<VMWARE-NULL>/KMS%5fCluster/"),
            "{written}"
        );
        assert_eq!(
            KeyLocator::parse(&s.replace("<VMWARE%2dNULL>", "<VMWARE-NULL>")).expect("literal"),
            kl
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "vmware:key/",
            "vmware:key/bogus/",
            "vmware:key/list/(",
            "vmware:key/list/(null/",
            "vmware:key/pair/(null/,X,%%%)",
            "vmware:key/pair/(null/,X,!!notbase64)",
            "vmware:key/fqid/<VMWARE%2dNULL>/p/",
            "vmware:key/fqid/a/b/c)",
            "vmware:key/null/x",
            "vmware:key/ldap/u/s/d/port/TRUE/p",
            "other:key/null/",
        ] {
            assert!(KeyLocator::parse(s).is_err(), "{s:?} parsed");
        }
        let deep = format!("vmware:key/{}null/{}", "list/(".repeat(40), ")".repeat(40));
        assert!(KeyLocator::parse(&deep).is_err());
    }

    #[test]
    fn rawkey_is_redacted() {
        let kl = KeyLocator::parse("vmware:key/rawkey/c2VjcmV0").expect("valid");
        assert!(!format!("{kl:?}").contains("c2VjcmV0"));
        assert!(!format!("{kl}").contains("c2VjcmV0"));
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -~]{0,12}"
    }

    fn locator() -> impl Strategy<Value = KeyLocator> {
        let uid = prop_oneof![Just(None), "[a-z0-9-]{1,8}".prop_map(Some)];
        let leaf = prop_oneof![
            Just(KeyLocator::Null),
            (uid.clone(), text(), "[ -~]{1,12}").prop_map(|(unique_id, provider, key_id)| {
                KeyLocator::Fqid {
                    unique_id,
                    provider,
                    key_id,
                }
            }),
            (uid.clone(), text())
                .prop_map(|(unique_id, role)| KeyLocator::Role { unique_id, role }),
            (uid.clone(), text())
                .prop_map(|(unique_id, data)| KeyLocator::Phrase { unique_id, data }),
            (uid.clone(), text(), text()).prop_map(|(unique_id, rel_path, signature)| {
                KeyLocator::Script {
                    unique_id,
                    rel_path,
                    signature,
                }
            }),
            (uid, text(), text(), any::<u32>(), any::<bool>(), text()).prop_map(
                |(unique_id, server, domain, port, use_ssl, path)| KeyLocator::Ldap {
                    unique_id,
                    server,
                    domain,
                    port,
                    use_ssl,
                    path
                }
            ),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(KeyLocator::List),
                (inner, text(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(
                    |(l, mac, data)| KeyLocator::Pair {
                        locker: Box::new(l),
                        mac,
                        data
                    }
                ),
            ]
        })
    }

    proptest! {
        #[test]
        fn render_parse_round_trip(kl in locator()) {
            let s = kl.render();
            prop_assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{}", s);
            prop_assert_eq!(KeyLocator::parse(&s).expect("own rendering parses"), kl);
        }

        #[test]
        fn parse_never_panics(s in "vmware:key/[a-z/(),%0-9A-F<>-]{0,60}") {
            let _ = KeyLocator::parse(&s);
        }
    }
}
