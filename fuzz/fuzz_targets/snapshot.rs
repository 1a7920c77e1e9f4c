//! Snapshot files: the header's checks and the body's validation (rkyv's structural check,
//! then the record rules) refuse what they cannot trust, never a panic.
#![no_main]
use eligd::index::snapshot::{decode_header, HEADER_LEN};
use eligd::index::validate_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(&data[..data.len().min(HEADER_LEN)]);
    let body = data.get(HEADER_LEN..).unwrap_or(data);
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(body);
    let _ = validate_body(&aligned, 1);
});
