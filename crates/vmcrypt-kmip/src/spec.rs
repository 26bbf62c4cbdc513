//! Numbers from the KMIP specification (1.0-1.4) that this client uses: tags and enumerations.

use crate::ttlv::Tag;

/// Tags.
#[allow(missing_docs)]
pub mod tag {
    use super::Tag;
    pub const ACTIVATION_DATE: Tag = Tag(0x420001);
    pub const ATTRIBUTE: Tag = Tag(0x420008);
    pub const ATTRIBUTE_NAME: Tag = Tag(0x42000A);
    pub const ATTRIBUTE_VALUE: Tag = Tag(0x42000B);
    pub const BATCH_COUNT: Tag = Tag(0x42000D);
    pub const BATCH_ITEM: Tag = Tag(0x42000F);
    pub const COMPROMISE_OCCURRENCE_DATE: Tag = Tag(0x420021);
    pub const CRYPTOGRAPHIC_ALGORITHM: Tag = Tag(0x420028);
    pub const CRYPTOGRAPHIC_LENGTH: Tag = Tag(0x42002A);
    pub const KEY_BLOCK: Tag = Tag(0x420040);
    pub const KEY_FORMAT_TYPE: Tag = Tag(0x420042);
    pub const KEY_MATERIAL: Tag = Tag(0x420043);
    pub const KEY_VALUE: Tag = Tag(0x420045);
    pub const KEY_WRAPPING_DATA: Tag = Tag(0x420046);
    pub const NAME: Tag = Tag(0x420053);
    pub const NAME_TYPE: Tag = Tag(0x420054);
    pub const NAME_VALUE: Tag = Tag(0x420055);
    pub const OBJECT_TYPE: Tag = Tag(0x420057);
    pub const OPERATION: Tag = Tag(0x42005C);
    pub const PROTOCOL_VERSION: Tag = Tag(0x420069);
    pub const PROTOCOL_VERSION_MAJOR: Tag = Tag(0x42006A);
    pub const PROTOCOL_VERSION_MINOR: Tag = Tag(0x42006B);
    pub const QUERY_FUNCTION: Tag = Tag(0x420074);
    pub const REQUEST_HEADER: Tag = Tag(0x420077);
    pub const REQUEST_MESSAGE: Tag = Tag(0x420078);
    pub const REQUEST_PAYLOAD: Tag = Tag(0x420079);
    pub const RESPONSE_HEADER: Tag = Tag(0x42007A);
    pub const RESPONSE_MESSAGE: Tag = Tag(0x42007B);
    pub const RESPONSE_PAYLOAD: Tag = Tag(0x42007C);
    pub const RESULT_MESSAGE: Tag = Tag(0x42007D);
    pub const RESULT_REASON: Tag = Tag(0x42007E);
    pub const RESULT_STATUS: Tag = Tag(0x42007F);
    pub const REVOCATION_MESSAGE: Tag = Tag(0x420080);
    pub const REVOCATION_REASON: Tag = Tag(0x420081);
    pub const REVOCATION_REASON_CODE: Tag = Tag(0x420082);
    pub const SERVER_INFORMATION: Tag = Tag(0x420088);
    pub const STATE: Tag = Tag(0x42008D);
    pub const SYMMETRIC_KEY: Tag = Tag(0x42008F);
    pub const TEMPLATE_ATTRIBUTE: Tag = Tag(0x420091);
    pub const UNIQUE_IDENTIFIER: Tag = Tag(0x420094);
    pub const VENDOR_IDENTIFICATION: Tag = Tag(0x42009D);
}

/// KMIP operations used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum Operation {
    Create = 0x01,
    Locate = 0x08,
    Get = 0x0A,
    GetAttributes = 0x0B,
    Activate = 0x12,
    Revoke = 0x13,
    Destroy = 0x14,
    Query = 0x18,
    DiscoverVersions = 0x1E,
}

impl Operation {
    /// The spec's name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "Create",
            Operation::Locate => "Locate",
            Operation::Get => "Get",
            Operation::GetAttributes => "GetAttributes",
            Operation::Activate => "Activate",
            Operation::Revoke => "Revoke",
            Operation::Destroy => "Destroy",
            Operation::Query => "Query",
            Operation::DiscoverVersions => "DiscoverVersions",
        }
    }
}

/// Result Status values.
pub mod result_status {
    /// Success.
    pub const SUCCESS: u32 = 0;
    /// Operation failed.
    pub const OPERATION_FAILED: u32 = 1;
    /// Operation pending (asynchronous; not requested by this client).
    pub const OPERATION_PENDING: u32 = 2;
    /// Operation undone.
    pub const OPERATION_UNDONE: u32 = 3;
}

/// The spec's name for a Result Reason.
pub fn result_reason_name(r: u32) -> &'static str {
    match r {
        0x01 => "Item Not Found",
        0x02 => "Response Too Large",
        0x03 => "Authentication Not Successful",
        0x04 => "Invalid Message",
        0x05 => "Operation Not Supported",
        0x06 => "Missing Data",
        0x07 => "Invalid Field",
        0x08 => "Feature Not Supported",
        0x09 => "Operation Canceled By Requester",
        0x0A => "Cryptographic Failure",
        0x0B => "Illegal Operation",
        0x0C => "Permission Denied",
        0x0D => "Object Archived",
        0x0E => "Index Out Of Bounds",
        0x0F => "Application Namespace Not Supported",
        0x10 => "Key Format Type Not Supported",
        0x11 => "Key Compression Type Not Supported",
        0x12 => "Encoding Option Error",
        0x13 => "Key Value Not Present",
        0x100 => "General Failure",
        _ => "Unknown Reason",
    }
}

/// Result Reason: Item Not Found.
pub const REASON_ITEM_NOT_FOUND: u32 = 0x01;

/// Object Type: Symmetric Key.
pub const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 0x02;
/// Cryptographic Algorithm: AES.
pub const ALGORITHM_AES: u32 = 0x03;
/// Cryptographic Usage Mask bits: Encrypt | Decrypt.
pub const USAGE_ENCRYPT_DECRYPT: i32 = 0x04 | 0x08;
/// Key Format Type: Raw.
pub const KEY_FORMAT_RAW: u32 = 0x01;
/// Key Format Type: Transparent Symmetric Key.
pub const KEY_FORMAT_TRANSPARENT_SYMMETRIC: u32 = 0x07;
/// Name Type: Uninterpreted Text String.
pub const NAME_TYPE_TEXT: u32 = 0x01;
/// Revocation Reason Code: Cessation of Operation.
pub const REVOCATION_CESSATION: u32 = 0x06;
/// Revocation Reason Code: Key Compromise.
pub const REVOCATION_KEY_COMPROMISE: u32 = 0x02;
/// Query Function: Query Operations.
pub const QUERY_OPERATIONS: u32 = 0x01;
/// Query Function: Query Objects.
pub const QUERY_OBJECTS: u32 = 0x02;
/// Query Function: Query Server Information.
pub const QUERY_SERVER_INFORMATION: u32 = 0x03;

/// Object states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum State {
    PreActive,
    Active,
    Deactivated,
    Compromised,
    Destroyed,
    DestroyedCompromised,
    Unknown(u32),
}

impl State {
    /// From the enumeration value.
    pub fn from_u32(v: u32) -> State {
        match v {
            1 => State::PreActive,
            2 => State::Active,
            3 => State::Deactivated,
            4 => State::Compromised,
            5 => State::Destroyed,
            6 => State::DestroyedCompromised,
            other => State::Unknown(other),
        }
    }

    /// The spec's name.
    pub fn name(self) -> &'static str {
        match self {
            State::PreActive => "Pre-Active",
            State::Active => "Active",
            State::Deactivated => "Deactivated",
            State::Compromised => "Compromised",
            State::Destroyed => "Destroyed",
            State::DestroyedCompromised => "Destroyed Compromised",
            State::Unknown(_) => "unknown",
        }
    }
}
