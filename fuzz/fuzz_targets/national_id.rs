//! National IDs as typed, pasted or found in an SMS: never a panic, and an ID that parses
//! prints back to itself.
#![no_main]
use eligd::national_id::NationalId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(id) = NationalId::parse_typed(text) {
        assert_eq!(NationalId::parse(&id.to_string()), Ok(id));
    }
    if let Some(found) = NationalId::find_in_text(text) {
        assert!(text.contains(found));
        let _ = NationalId::parse_typed(found);
    }
});
