use super::*;
use crate::channels::texts::{fits_sms, status_text, Lang};
use crate::channels::ussd::tests::{id, state, today, ACTIVE, CHILD};
use crate::eligibility::Outcome;

fn sms(state: &AppState, text: &str, from: &str) -> (String, &'static str) {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("from", from)
        .append_pair("text", text)
        .finish();
    check(reply(&mut session(state), Some(body.as_bytes()), today()))
}

/// Every reply: HTTP 200, `text/plain`, Persian, at most 134 UTF-16 units.
fn check(r: Reply) -> (String, &'static str) {
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    let body = String::from_utf8(r.body).unwrap();
    assert!(fits_sms(&body), "too long: {body}");
    assert!(
        !body.chars().any(|c| c.is_ascii_digit()),
        "ASCII digits: {body}"
    );
    (body, r.outcome)
}

#[test]
fn answers_an_id_in_any_script_with_the_masked_id_and_the_ussd_answer() {
    let state = state();
    for (i, text) in [ACTIVE, "۰۴۹۹۳۷۰۸۹۹", "٠٤٩٩٣٧٠٨٩٩", "  499370899 \n"]
        .iter()
        .enumerate()
    {
        let (body, outcome) = sms(&state, text, &format!("0912300{i:04}"));
        assert_eq!(outcome, "active", "{text}");
        assert!(body.starts_with("استعلام کد ملی ۰۴۹****۸۹۹\n"), "{body}");
        assert!(
            body.contains(status_text(Lang::Fa, Outcome::Active)),
            "{body}"
        );
        assert!(body.contains("۱۴۰۵/۱۲/۲۹"), "{body}");
        assert!(body.contains(FA.tracking), "{body}");
        assert!(!body.contains(ACTIVE), "{body}");
    }
    let (body, outcome) = sms(&state, CHILD, "09123009999");
    assert_eq!(outcome, "active");
    assert!(body.contains("۱۴۰۵/۱۰/۱۰"), "{body}"); // 2026-12-31
}

#[test]
fn every_status_and_the_unknown_and_invalid() {
    let state = state();
    for (member, status) in [
        (id(1001), Outcome::Expired),
        (id(1002), Outcome::Suspended),
        (id(1003), Outcome::Deceased),
        (id(1006), Outcome::MainInsuredInactive),
        (id(1007), Outcome::MainInsuredNotFound),
    ] {
        let (body, outcome) = sms(&state, &member, "09124000001");
        assert_eq!(outcome, status.as_str());
        assert!(body.contains(status_text(Lang::Fa, status)), "{body}");
    }
    let (body, outcome) = sms(&state, &id(1004), "09124000002");
    assert_eq!(outcome, "active");
    assert!(body.contains(FA.open_ended), "{body}");

    let (body, outcome) = sms(&state, &id(1010), "09124000002");
    assert_eq!(outcome, "member_not_found");
    assert!(body.starts_with(SMS.not_found.0), "{body}");
    for bad in ["0012345678", "abc", "12", "id 0012345678 please"] {
        let (body, outcome) = sms(&state, bad, "09124000003");
        assert_eq!(
            (body.as_str(), outcome),
            (SMS.invalid_id, "invalid_national_id")
        );
    }
}

#[test]
fn empty_or_unreadable_messages_get_the_help_text() {
    let state = state();
    assert_eq!(
        check(reply(&mut session(&state), None, today())),
        (SMS.help.to_string(), "invalid_request")
    );
    assert_eq!(sms(&state, "   ", "0912").1, "invalid_request");
    assert_eq!(
        check(reply(&mut session(&state), Some(b"from=0912"), today())).1,
        "invalid_request"
    );
    // Not what a gateway sends: undecodable, a field twice, no sender.
    for body in [
        &b"text=\xff\xfe&from=1"[..],
        b"text=%FF&from=1",
        b"from=1&from=2&text=0012345679",
        b"text=0012345679",
        b"from=&text=0012345679",
    ] {
        assert_eq!(
            check(reply(&mut session(&state), Some(body), today())),
            (SMS.help.to_string(), crate::channels::MALFORMED),
            "{body:?}"
        );
    }
}

#[test]
fn over_the_limit_a_phone_gets_the_polite_text() {
    let state = state().with_phone_requests_per_minute(2);
    assert_eq!(sms(&state, ACTIVE, "09125550000").1, "active");
    assert_eq!(sms(&state, "", "+989125550000").1, "invalid_request");
    let (body, outcome) = sms(&state, ACTIVE, "09125550000");
    assert_eq!((body.as_str(), outcome), (FA.rate_limited, "rate_limited"));
    assert_eq!(sms(&state, "", "09125550000").1, "rate_limited");
    assert_eq!(sms(&state, ACTIVE, "09125550001").1, "active");
}

#[test]
fn not_ready_until_an_index_is_loaded() {
    let state = AppState::new(1).unwrap();
    assert_eq!(
        sms(&state, ACTIVE, "0912"),
        (FA.not_ready.to_string(), "not_ready")
    );
}

#[test]
fn an_id_inside_a_few_words_or_as_the_card_prints_it_is_read() {
    let state = state();
    let active = id(1004);
    let dashed = format!("{}-{}-{}", &active[..3], &active[3..9], &active[9..]);
    for text in [
        format!("استعلام {active} لطفا"),
        format!("my national id is {dashed}."),
        format!("\u{200F}{dashed}\u{200E}"),
    ] {
        let (_, outcome) = sms(&state, &text, "09124000009");
        assert_eq!(outcome, "active", "{text}");
    }
}
