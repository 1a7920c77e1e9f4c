//! USSD gateway callbacks, the whole way through the channel and the inquiry pipeline: any
//! body gets a `CON`/`END` text, never a panic.
#![no_main]
use std::sync::{Arc, OnceLock};

use eligd::app::AppState;
use eligd::channels::ussd;
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
    if let Ok(mut session) = begin(state, Arrival::anonymous(Channel::Ussd, ussd::ROUTE)) {
        let reply = ussd::reply(&mut session, Some(body), Day::today());
        assert!(reply.body.starts_with(b"CON ") || reply.body.starts_with(b"END "));
    }
});
