//! Change feed entries, native and Debezium: the input is split at NUL bytes into field,
//! value, field, value… A bad entry is a rejection with a reason, never a panic.
#![no_main]
use eligd::feed::event::parse_entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts: Vec<Vec<u8>> = data.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let fields: Vec<(Vec<u8>, Vec<u8>)> = parts
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
        .collect();
    if let Err(rejection) = parse_entry(&fields) {
        let _ = rejection.reason();
        let _ = rejection.to_string();
    }
});
