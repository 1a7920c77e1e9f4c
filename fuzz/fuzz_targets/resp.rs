//! RESP replies from Redis (or from something pretending to be Redis): every decoder
//! answers an error for bytes it cannot read, never a panic.
#![no_main]
use eligd::redis::{decode, decode_entries, decode_xread};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let _ = decode_xread(data);
    let _ = decode_entries(data);
});
