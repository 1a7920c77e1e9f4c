//! FHIR CoverageEligibilityRequest bodies through the channel and the pipeline: any body
//! gets a CoverageEligibilityResponse or an OperationOutcome, never a panic.
#![no_main]
use std::sync::{Arc, OnceLock};

use eligd::app::AppState;
use eligd::channels::fhir;
use eligd::dates::Day;
use eligd::demo::Generator;
use eligd::index::Index;
use eligd::inquiry::{begin, Arrival, Channel};
use libfuzzer_sys::fuzz_target;

fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let state = AppState::new(0).expect("node 0");
        let index = Index::from_members(Generator::new(200, 1, Day::today())).expect("demo");
        state.install_index(Arc::new(index), 0.0);
        state
    })
}

fuzz_target!(|body: &[u8]| {
    let state = state();
    if let Ok(mut session) = begin(state, Arrival::anonymous(Channel::Fhir, fhir::ROUTE)) {
        let reply = fhir::coverage_eligibility(&mut session, body, Day::today());
        let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
        let kind = json["resourceType"].as_str().expect("a resource");
        assert!(kind == "CoverageEligibilityResponse" || kind == "OperationOutcome");
    }
});
