//! TTLV, KMIP's binary encoding: a 3-byte tag, a 1-byte type, a 4-byte big-endian length, then
//! the value padded with zeros to a multiple of 8 bytes. Structures hold a sequence of items.
//!
//! The decoder is written for hostile input: it never panics, checks every length against what
//! is left of its parent before using it (so a claimed 4 GiB never allocates), limits nesting
//! depth and message size, and rejects wrong fixed lengths, non-zero padding and invalid UTF-8.

use zeroize::Zeroizing;

/// A KMIP tag (the spec's 0x42xxxx values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(pub u32);

/// One TTLV item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its tag.
    pub tag: Tag,
    /// Its value.
    pub value: Value,
}

/// A TTLV value. Byte strings zeroize on drop: they carry key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// 0x01: a sequence of items.
    Structure(Vec<Item>),
    /// 0x02: 32-bit signed.
    Integer(i32),
    /// 0x03: 64-bit signed.
    LongInteger(i64),
    /// 0x04: big-endian two's complement, a multiple of 8 bytes.
    BigInteger(Vec<u8>),
    /// 0x05: 32-bit enumeration.
    Enumeration(u32),
    /// 0x06: boolean.
    Boolean(bool),
    /// 0x07: UTF-8 text.
    TextString(String),
    /// 0x08: bytes.
    ByteString(Zeroizing<Vec<u8>>),
    /// 0x09: seconds since the epoch.
    DateTime(i64),
    /// 0x0A: seconds.
    Interval(u32),
}

/// Why bytes are not valid TTLV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlvError {
    /// The input ended inside an item.
    #[error("truncated TTLV: item at byte {at} needs {need} bytes, {have} left")]
    Truncated {
        /// Offset of the item.
        at: usize,
        /// Bytes it needs.
        need: u64,
        /// Bytes left.
        have: usize,
    },
    /// An item type byte that KMIP does not define.
    #[error("unknown TTLV item type 0x{ty:02x} at byte {at}")]
    UnknownType {
        /// The type byte.
        ty: u8,
        /// Offset of the item.
        at: usize,
    },
    /// A fixed-size type with the wrong length.
    #[error("TTLV item at byte {at} has length {len}, its type needs {want}")]
    BadLength {
        /// Offset of the item.
        at: usize,
        /// The length given.
        len: u32,
        /// The length its type has.
        want: u32,
    },
    /// Padding bytes that are not zero, or a boolean that is not 0 or 1.
    #[error("malformed TTLV value at byte {at}: {what}")]
    Malformed {
        /// Offset of the item.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Structures nested deeper than the limit.
    #[error("TTLV nested deeper than {0} levels")]
    TooDeep(usize),
    /// A message larger than the limit.
    #[error("TTLV message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Bytes after the top-level item.
    #[error("{0} bytes after the end of the TTLV message")]
    Trailing(usize),
    /// A tag that is not in KMIP's 0x42xxxx range (or the extension range 0x54xxxx).
    #[error("TTLV tag 0x{tag:06x} at byte {at} is outside the KMIP ranges")]
    BadTag {
        /// The tag.
        tag: u32,
        /// Offset of the item.
        at: usize,
    },
}

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message accepted, in bytes.
    pub max_message: usize,
    /// Deepest structure nesting accepted.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Our responses are a few hundred bytes; 1 MiB leaves room for Query answers.
        Limits {
            max_message: 1024 * 1024,
            max_depth: 16,
        }
    }
}

impl Item {
    /// A new item.
    pub fn new(tag: Tag, value: Value) -> Item {
        Item { tag, value }
    }

    /// A structure item.
    pub fn structure(tag: Tag, children: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(children))
    }

    /// The children of a structure (empty for other types).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(c) => c,
            _ => &[],
        }
    }

    /// The first child with this tag.
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.children().iter().find(|c| c.tag == tag)
    }

    /// Every child with this tag.
    pub fn children_with(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |c| c.tag == tag)
    }

    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let t = self.tag.0.to_be_bytes();
        out.extend_from_slice(&t[1..]);
        let (ty, body): (u8, std::borrow::Cow<'_, [u8]>) = match &self.value {
            Value::Structure(children) => {
                let mut b = Vec::new();
                for c in children {
                    c.encode_into(&mut b);
                }
                (0x01, b.into())
            }
            Value::Integer(v) => (0x02, v.to_be_bytes().to_vec().into()),
            Value::LongInteger(v) => (0x03, v.to_be_bytes().to_vec().into()),
            Value::BigInteger(v) => (0x04, v.as_slice().into()),
            Value::Enumeration(v) => (0x05, v.to_be_bytes().to_vec().into()),
            Value::Boolean(v) => (0x06, u64::from(*v).to_be_bytes().to_vec().into()),
            Value::TextString(s) => (0x07, s.as_bytes().into()),
            Value::ByteString(b) => (0x08, b.as_slice().into()),
            Value::DateTime(v) => (0x09, v.to_be_bytes().to_vec().into()),
            Value::Interval(v) => (0x0A, v.to_be_bytes().to_vec().into()),
        };
        out.push(ty);
        // A length over u32 cannot be produced from our own messages (they are tiny); saturate
        // rather than wrap so a bug can never produce a self-inconsistent message.
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len() + pad(body.len()), 0);
    }

    /// Decodes exactly one item from `buf`.
    ///
    /// # Errors
    /// A [`TtlvError`] describing the first problem.
    pub fn decode(buf: &[u8], limits: Limits) -> Result<Item, TtlvError> {
        if buf.len() > limits.max_message {
            return Err(TtlvError::TooLarge {
                len: buf.len() as u64,
                max: limits.max_message,
            });
        }
        let (item, used) = decode_at(buf, 0, 0, limits.max_depth)?;
        if used != buf.len() {
            return Err(TtlvError::Trailing(buf.len() - used));
        }
        Ok(item)
    }
}

/// The total length (header included) of the message whose 8-byte header is `header`, for
/// readers that must know how much to read; checked against `limits` before anything is read.
///
/// # Errors
/// [`TtlvError::TooLarge`] or [`TtlvError::UnknownType`] / [`TtlvError::BadTag`].
pub fn message_len(header: &[u8; 8], limits: Limits) -> Result<usize, TtlvError> {
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    check_tag(tag, 0)?;
    if header[3] != 0x01 {
        return Err(TtlvError::Malformed {
            at: 0,
            what: "a KMIP message must be a structure",
        });
    }
    let len = u64::from(u32::from_be_bytes([
        header[4], header[5], header[6], header[7],
    ]));
    let total = 8 + len + pad(len as usize) as u64;
    if total > limits.max_message as u64 {
        return Err(TtlvError::TooLarge {
            len: total,
            max: limits.max_message,
        });
    }
    Ok(total as usize)
}

fn pad(len: usize) -> usize {
    (8 - len % 8) % 8
}

fn check_tag(tag: u32, at: usize) -> Result<(), TtlvError> {
    match tag >> 16 {
        0x42 | 0x54 => Ok(()),
        _ => Err(TtlvError::BadTag { tag, at }),
    }
}

fn decode_at(
    buf: &[u8],
    at: usize,
    depth: usize,
    max_depth: usize,
) -> Result<(Item, usize), TtlvError> {
    let rest = buf.get(at..).unwrap_or(&[]);
    let Some(h) = rest.get(..8) else {
        return Err(TtlvError::Truncated {
            at,
            need: 8,
            have: rest.len(),
        });
    };
    let tag = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    check_tag(tag, at)?;
    let ty = h[3];
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let padded = u64::from(len) + pad(len as usize) as u64;
    let body_all = &rest[8..];
    if padded > body_all.len() as u64 {
        return Err(TtlvError::Truncated {
            at,
            need: 8 + padded,
            have: rest.len(),
        });
    }
    // Both fit in usize now: they are at most body_all.len().
    let (len_us, padded_us) = (len as usize, padded as usize);
    let body = &body_all[..len_us];
    if body_all[len_us..padded_us].iter().any(|b| *b != 0) {
        return Err(TtlvError::Malformed {
            at,
            what: "non-zero padding",
        });
    }
    let fixed = |want: u32| -> Result<(), TtlvError> {
        if len != want {
            return Err(TtlvError::BadLength { at, len, want });
        }
        Ok(())
    };
    let arr4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    let arr8 = |b: &[u8]| [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    let value = match ty {
        0x01 => {
            if depth >= max_depth {
                return Err(TtlvError::TooDeep(max_depth));
            }
            let mut children = Vec::new();
            let start = at + 8;
            let end = start + len_us;
            let mut pos = start;
            while pos < end {
                // Children are decoded within the parent's bytes only.
                let (child, used) = decode_at(&buf[..end], pos, depth + 1, max_depth)?;
                children.push(child);
                pos += used;
            }
            Value::Structure(children)
        }
        0x02 => {
            fixed(4)?;
            Value::Integer(i32::from_be_bytes(arr4(body)))
        }
        0x03 => {
            fixed(8)?;
            Value::LongInteger(i64::from_be_bytes(arr8(body)))
        }
        0x04 => {
            if len % 8 != 0 {
                return Err(TtlvError::Malformed {
                    at,
                    what: "big integer length is not a multiple of 8",
                });
            }
            Value::BigInteger(body.to_vec())
        }
        0x05 => {
            fixed(4)?;
            Value::Enumeration(u32::from_be_bytes(arr4(body)))
        }
        0x06 => {
            fixed(8)?;
            match u64::from_be_bytes(arr8(body)) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => {
                    return Err(TtlvError::Malformed {
                        at,
                        what: "boolean is not 0 or 1",
                    });
                }
            }
        }
        0x07 => Value::TextString(
            std::str::from_utf8(body)
                .map_err(|_| TtlvError::Malformed {
                    at,
                    what: "text string is not UTF-8",
                })?
                .to_string(),
        ),
        0x08 => Value::ByteString(Zeroizing::new(body.to_vec())),
        0x09 => {
            fixed(8)?;
            Value::DateTime(i64::from_be_bytes(arr8(body)))
        }
        0x0A => {
            fixed(4)?;
            Value::Interval(u32::from_be_bytes(arr4(body)))
        }
        other => return Err(TtlvError::UnknownType { ty: other, at }),
    };
    Ok((
        Item {
            tag: Tag(tag),
            value,
        },
        8 + padded_us,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn spec_example_encodings() {
        // KMIP 1.1 spec section 9.1.2 examples.
        let i = Item::new(Tag(0x420020), Value::Integer(8));
        assert_eq!(i.encode(), hex("42002002000000040000000800000000"));
        let t = Item::new(Tag(0x420020), Value::TextString("Hello World".into()));
        assert_eq!(
            t.encode(),
            hex("420020070000000B48656C6C6F20576F726C640000000000")
        );
        let s = Item::structure(
            Tag(0x420020),
            vec![
                Item::new(Tag(0x420004), Value::Enumeration(254)),
                Item::new(Tag(0x420005), Value::Integer(255)),
            ],
        );
        assert_eq!(
            s.encode(),
            hex("42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000")
        );
        for item in [i, t, s] {
            assert_eq!(Item::decode(&item.encode(), lim()).expect("decodes"), item);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn hostile_inputs_are_errors() {
        // A structure claiming 4 GiB: an error, no allocation.
        assert!(matches!(
            Item::decode(&hex("42007B01FFFFFFF0"), lim()),
            Err(TtlvError::Truncated { .. })
        ));
        // Child longer than its parent.
        let bad = hex("420020010000000842000402000000040000000100000000");
        assert!(Item::decode(&bad, lim()).is_err());
        // Wrong fixed length, unknown type, bad padding, bad bool, bad UTF-8, bad tag, trailing bytes.
        for h in [
            "42002002000000080000000800000000",
            "4200200B000000040000000800000000",
            "42002002000000040000000800000001",
            "42002006000000080000000000000002",
            "4200200700000002FFFE000000000000",
            "11002002000000040000000800000000",
            "420020020000000400000008000000000000000000000000",
            "",
            "420020",
        ] {
            assert!(Item::decode(&hex(h), lim()).is_err(), "{h}");
        }
        // Depth limit.
        let mut item = Item::new(Tag(0x420001), Value::Integer(1));
        for _ in 0..20 {
            item = Item::structure(Tag(0x420001), vec![item]);
        }
        assert_eq!(
            Item::decode(&item.encode(), lim()),
            Err(TtlvError::TooDeep(16))
        );
        // Size limit.
        let big = Item::new(
            Tag(0x420001),
            Value::ByteString(Zeroizing::new(vec![0; 4096])),
        );
        assert!(matches!(
            Item::decode(
                &big.encode(),
                Limits {
                    max_message: 1024,
                    max_depth: 4
                }
            ),
            Err(TtlvError::TooLarge { .. })
        ));
    }

    #[test]
    fn message_len_checks_before_reading() {
        assert_eq!(
            message_len(&[0x42, 0, 0x7B, 1, 0, 0, 0, 0x10], lim()),
            Ok(0x18)
        );
        assert!(message_len(&[0x42, 0, 0x7B, 1, 0xFF, 0xFF, 0xFF, 0xFF], lim()).is_err());
        assert!(message_len(&[0x42, 0, 0x7B, 2, 0, 0, 0, 4], lim()).is_err());
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Integer),
            any::<i64>().prop_map(Value::LongInteger),
            prop::collection::vec(any::<u8>(), 0..3)
                .prop_map(|v| Value::BigInteger(v.into_iter().flat_map(|b| [b; 8]).collect())),
            any::<u32>().prop_map(Value::Enumeration),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,20}".prop_map(Value::TextString),
            prop::collection::vec(any::<u8>(), 0..40)
                .prop_map(|v| Value::ByteString(Zeroizing::new(v))),
            any::<i64>().prop_map(Value::DateTime),
            any::<u32>().prop_map(Value::Interval),
        ]
    }

    fn item() -> impl Strategy<Value = Item> {
        let tag = (0x420000u32..0x4200FF).prop_map(Tag);
        let l = (tag.clone(), leaf()).prop_map(|(t, v)| Item::new(t, v));
        l.prop_recursive(4, 32, 6, move |inner| {
            (tag.clone(), prop::collection::vec(inner, 0..6))
                .prop_map(|(t, c)| Item::structure(t, c))
        })
    }

    proptest! {
        #[test]
        fn round_trip(it in item()) {
            let bytes = it.encode();
            prop_assert_eq!(bytes.len() % 8, 0);
            prop_assert_eq!(Item::decode(&bytes, lim()).expect("own encoding decodes"), it);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Item::decode(&bytes, lim());
        }

        #[test]
        fn mutated_encodings_never_panic(it in item(), pos in any::<prop::sample::Index>(), val in any::<u8>()) {
            let mut bytes = it.encode();
            if !bytes.is_empty() {
                let i = pos.index(bytes.len());
                bytes[i] = val;
            }
            let _ = Item::decode(&bytes, lim());
        }
    }
}
