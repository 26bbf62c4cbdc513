//! KMIP operations over one connection: request framing, response checks, typed results.

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::spec::{self, Operation, State, tag};
use crate::transport::Transport;
use crate::ttlv::{Item, Limits, Value};

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Major.
    pub major: i32,
    /// Minor.
    pub minor: i32,
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The versions this client speaks, best first. The operations it uses have the same encoding
/// in all of them.
pub const SUPPORTED_VERSIONS: [ProtocolVersion; 5] = [
    ProtocolVersion { major: 1, minor: 4 },
    ProtocolVersion { major: 1, minor: 3 },
    ProtocolVersion { major: 1, minor: 2 },
    ProtocolVersion { major: 1, minor: 1 },
    ProtocolVersion { major: 1, minor: 0 },
];

/// What `Query` reports.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// Operations the server supports (enumeration values).
    pub operations: Vec<u32>,
    /// Object types the server supports.
    pub object_types: Vec<u32>,
    /// Vendor Identification.
    pub vendor: Option<String>,
}

/// A KMIP client on one connection.
pub struct KmipClient {
    conn: Box<dyn Transport>,
    version: ProtocolVersion,
}

impl KmipClient {
    /// Wraps a connection; requests use KMIP 1.1 until [`KmipClient::negotiate`] picks another.
    pub fn new(conn: Box<dyn Transport>) -> Self {
        KmipClient {
            conn,
            version: ProtocolVersion { major: 1, minor: 1 },
        }
    }

    /// The server's host:port.
    pub fn server(&self) -> &str {
        self.conn.server()
    }

    /// The protocol version in use.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Picks the best version both sides speak (DiscoverVersions, KMIP 1.1+); a server that
    /// does not know DiscoverVersions speaks 1.0.
    ///
    /// # Errors
    /// Transport errors; [`Error::Protocol`] if no common version exists.
    pub fn negotiate(&mut self) -> Result<ProtocolVersion> {
        match self.discover_versions(&SUPPORTED_VERSIONS) {
            Ok(v) => {
                let best = v
                    .into_iter()
                    .find(|v| SUPPORTED_VERSIONS.contains(v))
                    .ok_or_else(|| Error::Protocol {
                        server: self.server().to_string(),
                        what: "no KMIP version in common".into(),
                    })?;
                self.version = best;
            }
            Err(Error::Operation { .. }) => self.version = ProtocolVersion { major: 1, minor: 0 },
            Err(e) => return Err(e),
        }
        Ok(self.version)
    }

    /// DiscoverVersions: the versions of `offer` the server accepts, its preference first.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn discover_versions(&mut self, offer: &[ProtocolVersion]) -> Result<Vec<ProtocolVersion>> {
        let payload = offer.iter().map(|v| version_item(*v)).collect();
        let resp = self.call(Operation::DiscoverVersions, payload)?;
        resp.children_with(tag::PROTOCOL_VERSION)
            .map(|pv| {
                Ok(ProtocolVersion {
                    major: self.int(pv, tag::PROTOCOL_VERSION_MAJOR)?,
                    minor: self.int(pv, tag::PROTOCOL_VERSION_MINOR)?,
                })
            })
            .collect()
    }

    /// Query: operations, object types and vendor.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn query(&mut self) -> Result<ServerInfo> {
        let payload = [
            spec::QUERY_OPERATIONS,
            spec::QUERY_OBJECTS,
            spec::QUERY_SERVER_INFORMATION,
        ]
        .into_iter()
        .map(|f| Item::new(tag::QUERY_FUNCTION, Value::Enumeration(f)))
        .collect();
        let resp = self.call(Operation::Query, payload)?;
        let enums = |t| {
            resp.children_with(t)
                .filter_map(|i| match i.value {
                    Value::Enumeration(v) => Some(v),
                    _ => None,
                })
                .collect()
        };
        Ok(ServerInfo {
            operations: enums(tag::OPERATION),
            object_types: enums(tag::OBJECT_TYPE),
            vendor: resp
                .child(tag::VENDOR_IDENTIFICATION)
                .and_then(|i| match &i.value {
                    Value::TextString(s) => Some(s.clone()),
                    _ => None,
                }),
        })
    }

    /// Create: a new AES-256 symmetric key for encrypt and decrypt, named `name`. Returns its
    /// unique identifier.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn create_aes256(&mut self, name: &str) -> Result<String> {
        let attrs = vec![
            attribute(
                "Cryptographic Algorithm",
                Value::Enumeration(spec::ALGORITHM_AES),
            ),
            attribute("Cryptographic Length", Value::Integer(256)),
            attribute(
                "Cryptographic Usage Mask",
                Value::Integer(spec::USAGE_ENCRYPT_DECRYPT),
            ),
            attribute("Name", Value::Structure(name_fields(name))),
        ];
        let payload = vec![
            Item::new(
                tag::OBJECT_TYPE,
                Value::Enumeration(spec::OBJECT_TYPE_SYMMETRIC_KEY),
            ),
            Item::structure(tag::TEMPLATE_ATTRIBUTE, attrs),
        ];
        let resp = self.call(Operation::Create, payload)?;
        self.text(&resp, tag::UNIQUE_IDENTIFIER)
    }

    /// Activate.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn activate(&mut self, uid: &str) -> Result<()> {
        self.call(Operation::Activate, vec![uid_item(uid)])
            .map(|_| ())
    }

    /// Get: the raw bytes of a symmetric key. Refuses wrapped keys and anything but a 256-bit
    /// AES key.
    ///
    /// # Errors
    /// Transport, protocol and operation errors; [`Error::KeyState`] for an unusable key.
    pub fn get_aes256(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>> {
        let payload = vec![
            uid_item(uid),
            Item::new(
                tag::KEY_FORMAT_TYPE,
                Value::Enumeration(spec::KEY_FORMAT_RAW),
            ),
        ];
        let resp = self.call(Operation::Get, payload)?;
        let bad = |what: &str| Error::KeyState {
            server: self.server().to_string(),
            key_id: uid.to_string(),
            what: what.to_string(),
        };
        if self.enumeration(&resp, tag::OBJECT_TYPE)? != spec::OBJECT_TYPE_SYMMETRIC_KEY {
            return Err(bad("is not a symmetric key"));
        }
        let block = resp
            .child(tag::SYMMETRIC_KEY)
            .and_then(|k| k.child(tag::KEY_BLOCK))
            .ok_or_else(|| self.protocol("Get response without a symmetric key block"))?;
        if block.child(tag::KEY_WRAPPING_DATA).is_some() {
            return Err(bad(
                "is wrapped by the server; vmcrypt needs it in the clear over TLS",
            ));
        }
        if let Some(alg) = block.child(tag::CRYPTOGRAPHIC_ALGORITHM)
            && alg.value != Value::Enumeration(spec::ALGORITHM_AES)
        {
            return Err(bad("is not an AES key"));
        }
        let format = self.enumeration(block, tag::KEY_FORMAT_TYPE)?;
        let value = block
            .child(tag::KEY_VALUE)
            .ok_or_else(|| self.protocol("key block without a key value"))?;
        let material = value
            .child(tag::KEY_MATERIAL)
            .ok_or_else(|| self.protocol("key value without key material"))?;
        let bytes = match (&material.value, format) {
            (Value::ByteString(b), spec::KEY_FORMAT_RAW) => b.clone(),
            (Value::Structure(_), spec::KEY_FORMAT_TRANSPARENT_SYMMETRIC) => {
                match material.child(crate::ttlv::Tag(0x42003F)) {
                    Some(Item {
                        value: Value::ByteString(b),
                        ..
                    }) => b.clone(),
                    _ => return Err(self.protocol("transparent key without key bytes")),
                }
            }
            _ => return Err(bad("has a key format vmcrypt cannot use")),
        };
        if bytes.len() != 32 {
            return Err(bad(&format!("is {} bits, not 256", bytes.len() * 8)));
        }
        Ok(bytes)
    }

    /// GetAttributes for the State attribute.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn state(&mut self, uid: &str) -> Result<State> {
        let payload = vec![
            uid_item(uid),
            Item::new(tag::ATTRIBUTE_NAME, Value::TextString("State".into())),
        ];
        let resp = self.call(Operation::GetAttributes, payload)?;
        for a in resp.children_with(tag::ATTRIBUTE) {
            if a.child(tag::ATTRIBUTE_NAME).map(|n| &n.value)
                == Some(&Value::TextString("State".into()))
            {
                return Ok(State::from_u32(self.enumeration(a, tag::ATTRIBUTE_VALUE)?));
            }
        }
        Err(self.protocol("GetAttributes response without a State"))
    }

    /// Locate by Name: the unique identifiers of objects with that name.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn locate_by_name(&mut self, name: &str) -> Result<Vec<String>> {
        let payload = vec![attribute("Name", Value::Structure(name_fields(name)))];
        let resp = self.call(Operation::Locate, payload)?;
        resp.children_with(tag::UNIQUE_IDENTIFIER)
            .map(|i| match &i.value {
                Value::TextString(s) => Ok(s.clone()),
                _ => Err(self.protocol("Unique Identifier is not text")),
            })
            .collect()
    }

    /// Revoke with a reason code ([`spec::REVOCATION_CESSATION`], [`spec::REVOCATION_KEY_COMPROMISE`]).
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn revoke(&mut self, uid: &str, reason: u32) -> Result<()> {
        let mut payload = vec![
            uid_item(uid),
            Item::structure(
                tag::REVOCATION_REASON,
                vec![Item::new(
                    tag::REVOCATION_REASON_CODE,
                    Value::Enumeration(reason),
                )],
            ),
        ];
        if reason == spec::REVOCATION_KEY_COMPROMISE {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            payload.push(Item::new(
                tag::COMPROMISE_OCCURRENCE_DATE,
                Value::DateTime(now),
            ));
        }
        self.call(Operation::Revoke, payload).map(|_| ())
    }

    /// Destroy.
    ///
    /// # Errors
    /// Transport, protocol and operation errors.
    pub fn destroy(&mut self, uid: &str) -> Result<()> {
        self.call(Operation::Destroy, vec![uid_item(uid)])
            .map(|_| ())
    }

    /// Sends one request and returns the response payload (an empty structure if the server
    /// sent none), after checking the whole response envelope.
    fn call(&mut self, op: Operation, payload: Vec<Item>) -> Result<Item> {
        let request = Item::structure(
            tag::REQUEST_MESSAGE,
            vec![
                Item::structure(
                    tag::REQUEST_HEADER,
                    vec![
                        version_item(self.version),
                        Item::new(tag::BATCH_COUNT, Value::Integer(1)),
                    ],
                ),
                Item::structure(
                    tag::BATCH_ITEM,
                    vec![
                        Item::new(tag::OPERATION, Value::Enumeration(op as u32)),
                        Item::structure(tag::REQUEST_PAYLOAD, payload),
                    ],
                ),
            ],
        );
        let bytes = Zeroizing::new(request.encode());
        tracing::debug!(
            server = self.server(),
            operation = op.name(),
            "KMIP request"
        );
        let raw = self.conn.round_trip(&bytes)?;
        let msg = Item::decode(&raw, Limits::default()).map_err(|e| Error::Ttlv {
            server: self.server().to_string(),
            source: e,
        })?;
        self.check_response(msg, op)
    }

    fn check_response(&self, msg: Item, op: Operation) -> Result<Item> {
        if msg.tag != tag::RESPONSE_MESSAGE {
            return Err(self.protocol("not a Response Message"));
        }
        let header = msg
            .child(tag::RESPONSE_HEADER)
            .ok_or_else(|| self.protocol("no Response Header"))?;
        if self.int(header, tag::BATCH_COUNT)? != 1 {
            return Err(self.protocol("batch count is not 1"));
        }
        let batch: Vec<&Item> = msg.children_with(tag::BATCH_ITEM).collect();
        let [item] = batch.as_slice() else {
            return Err(self.protocol("not exactly one Batch Item"));
        };
        if let Some(o) = item.child(tag::OPERATION)
            && o.value != Value::Enumeration(op as u32)
        {
            return Err(self.protocol(&format!(
                "answer is for another operation than {}",
                op.name()
            )));
        }
        let status = self.enumeration(item, tag::RESULT_STATUS)?;
        if status != spec::result_status::SUCCESS {
            let reason = item.child(tag::RESULT_REASON).and_then(|r| match r.value {
                Value::Enumeration(v) => Some(v),
                _ => None,
            });
            let message = item
                .child(tag::RESULT_MESSAGE)
                .and_then(|m| match &m.value {
                    // Server text goes into our errors: keep it short and printable.
                    Value::TextString(s) => {
                        Some(s.chars().filter(|c| !c.is_control()).take(200).collect())
                    }
                    _ => None,
                });
            return Err(Error::Operation {
                server: self.server().to_string(),
                operation: op.name(),
                status,
                reason,
                reason_name: reason.map(spec::result_reason_name).unwrap_or(
                    if status == spec::result_status::OPERATION_PENDING {
                        "Operation Pending"
                    } else {
                        "no reason given"
                    },
                ),
                message,
            });
        }
        let payload = item
            .children()
            .iter()
            .find(|c| c.tag == tag::RESPONSE_PAYLOAD)
            .cloned()
            .unwrap_or_else(|| Item::structure(tag::RESPONSE_PAYLOAD, vec![]));
        if !matches!(payload.value, Value::Structure(_)) {
            return Err(self.protocol("Response Payload is not a structure"));
        }
        Ok(payload)
    }

    fn protocol(&self, what: &str) -> Error {
        Error::Protocol {
            server: self.server().to_string(),
            what: what.to_string(),
        }
    }

    fn int(&self, parent: &Item, t: crate::ttlv::Tag) -> Result<i32> {
        match parent.child(t).map(|i| &i.value) {
            Some(Value::Integer(v)) => Ok(*v),
            _ => Err(self.protocol(&format!("missing integer 0x{:06x}", t.0))),
        }
    }

    fn enumeration(&self, parent: &Item, t: crate::ttlv::Tag) -> Result<u32> {
        match parent.child(t).map(|i| &i.value) {
            Some(Value::Enumeration(v)) => Ok(*v),
            _ => Err(self.protocol(&format!("missing enumeration 0x{:06x}", t.0))),
        }
    }

    fn text(&self, parent: &Item, t: crate::ttlv::Tag) -> Result<String> {
        match parent.child(t).map(|i| &i.value) {
            Some(Value::TextString(s)) => Ok(s.clone()),
            _ => Err(self.protocol(&format!("missing text 0x{:06x}", t.0))),
        }
    }
}

fn version_item(v: ProtocolVersion) -> Item {
    Item::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(v.major)),
            Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(v.minor)),
        ],
    )
}

fn uid_item(uid: &str) -> Item {
    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(uid.to_string()))
}

fn attribute(name: &str, value: Value) -> Item {
    Item::structure(
        tag::ATTRIBUTE,
        vec![
            Item::new(tag::ATTRIBUTE_NAME, Value::TextString(name.to_string())),
            Item::new(tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn name_fields(name: &str) -> Vec<Item> {
    vec![
        Item::new(tag::NAME_VALUE, Value::TextString(name.to_string())),
        Item::new(tag::NAME_TYPE, Value::Enumeration(spec::NAME_TYPE_TEXT)),
    ]
}
