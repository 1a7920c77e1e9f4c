//! The member record JSON (docs/contract.md §1): never a panic, and a record that is accepted
//! round-trips through its canonical JSON.
#![no_main]
use eligd::member::Member;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &str| {
    if let Ok(member) = Member::from_json(json) {
        let again = Member::from_json(&member.to_json()).expect("the canonical form is accepted");
        assert_eq!(again, member);
    }
});
