//! The native change event's wire format (docs/records.md, docs/contract.md §2): the one definition
//! of its field names and values. The relay writes events with [`NativeEvent`]; the feed
//! reads them by the same names ([`super::event`]).

use crate::member::Member;
use crate::national_id::NationalId;

pub const OP: &str = "op";
pub const NATIONAL_ID: &str = "national_id";
pub const VERSION: &str = "version";
pub const MEMBER: &str = "member";
pub const OP_UPSERT: &str = "upsert";
pub const OP_DELETE: &str = "delete";

/// A native change event: its fields in stream order, ready for XADD.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeEvent {
    pub fields: Vec<(&'static str, String)>,
}

impl NativeEvent {
    /// The event that makes `member` (at its version) what every replica holds.
    pub fn upsert(member: &Member) -> NativeEvent {
        NativeEvent {
            fields: vec![
                (OP, OP_UPSERT.to_string()),
                (NATIONAL_ID, member.national_id.to_string()),
                (VERSION, member.version.to_string()),
                (MEMBER, member.to_json()),
            ],
        }
    }

    /// The event that deletes `national_id` as of `version` (a tombstone on every replica).
    pub fn delete(national_id: NationalId, version: u64) -> NativeEvent {
        NativeEvent {
            fields: vec![
                (OP, OP_DELETE.to_string()),
                (NATIONAL_ID, national_id.to_string()),
                (VERSION, version.to_string()),
            ],
        }
    }
}
