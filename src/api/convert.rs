//! Conversions between wire values and domain values, shared by every service.
//!
//! Public ids travel as `uint32` so that REST JSON shows them as numbers, as the legacy API's examples do
//! (proto3 JSON prints 64-bit integers as strings). The database keeps 64-bit keys; widening
//! the protos to `int64`/`uint64` later is wire-compatible for gRPC clients.

use chrono::{DateTime, Utc};

use crate::domain::{Error, Result};

/// A required id field: 0 (the proto default) means it was not given.
pub fn required_id(field: &str, id: u32) -> Result<i64> {
    if id == 0 {
        return Err(Error::invalid(field, "is required and must be a positive id"));
    }
    Ok(i64::from(id))
}

/// An optional id field: present but 0 is an error, not "absent".
pub fn optional_id(field: &str, id: Option<u32>) -> Result<Option<i64>> {
    id.map(|id| required_id(field, id)).transpose()
}

/// A stored id on its way out. Ids beyond u32 would be a schema change, not a client error.
pub fn wire_id(id: i64) -> Result<u32> {
    u32::try_from(id).map_err(|_| Error::Internal(anyhow::anyhow!("id {id} does not fit the wire type")))
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}
