use super::*;
use crate::channels::texts::{fits_ussd_screen, EN, FA, MENU};
use crate::eligibility::Outcome;
use crate::index::Index;
use crate::member::Member;
use crate::metrics::InquiryLabels;
use crate::national_id::NationalId;
use std::sync::Arc;

pub(crate) const ACTIVE: &str = "0499370899";
pub(crate) const CHILD: &str = "0012345679";

pub(crate) fn id(prefix: u32) -> String {
    NationalId::from_prefix(prefix).unwrap().to_string()
}

fn member(id: &str, extra: serde_json::Value) -> Member {
    let mut v = serde_json::json!({
        "national_id": id, "version": 1, "kind": "main", "scheme": "mandatory",
        "status": "active", "coverage_until": "2027-03-20",
        "services": ["outpatient", "pharmacy"], "display_name": "رضا رضایی",
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    Member::from_json(&v.to_string()).unwrap()
}

/// A small population: active main, dependent child, expired, suspended, deceased,
/// pensioner (open-ended), a dependent of a suspended main, an orphan dependent.
pub(crate) fn state() -> AppState {
    use serde_json::json;
    let members = vec![
        member(ACTIVE, json!({})),
        member(
            CHILD,
            json!({"kind": "dependent", "relation": "child", "main_national_id": ACTIVE,
                "coverage_until": "2026-12-31"}),
        ),
        member(&id(1001), json!({"coverage_until": "2026-11-21"})),
        member(&id(1002), json!({"status": "suspended"})),
        member(&id(1003), json!({"status": "deceased"})),
        member(
            &id(1004),
            json!({"kind": "pensioner", "scheme": "pensioner", "coverage_until": null}),
        ),
        member(&id(1005), json!({"status": "suspended"})),
        member(
            &id(1006),
            json!({"kind": "dependent", "relation": "spouse", "main_national_id": id(1005)}),
        ),
        member(
            &id(1007),
            json!({"kind": "dependent", "relation": "child", "main_national_id": id(1008)}),
        ),
    ];
    let state = AppState::new(3).unwrap();
    state.install_index(Arc::new(Index::from_members(members).unwrap()), 0.0);
    state
}

pub(crate) fn today() -> Day {
    Day::parse_iso("2026-11-22").unwrap()
}

fn form(text: &str, phone: &str) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("sessionId", "ATUid_1")
        .append_pair("serviceCode", "*1420*4#")
        .append_pair("phoneNumber", phone)
        .append_pair("text", text)
        .finish()
        .into_bytes()
}

/// Sends `text` and checks the invariants of every reply: HTTP 200, `text/plain`, a
/// `CON `/`END ` prefix and a shown text that fits one screen.
fn send(state: &AppState, text: &str, phone: &str) -> (String, &'static str) {
    check(reply(
        &mut session(state),
        Some(&form(text, phone)),
        today(),
    ))
}

fn check(r: Reply) -> (String, &'static str) {
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    let body = String::from_utf8(r.body).unwrap();
    let shown = body
        .strip_prefix("CON ")
        .or_else(|| body.strip_prefix("END "))
        .unwrap_or_else(|| panic!("no CON/END prefix: {body}"));
    assert!(fits_ussd_screen(shown), "does not fit: {body}");
    (body, r.outcome)
}

fn inquiries(state: &AppState, outcome: &'static str) -> u64 {
    state
        .metrics
        .inquiries
        .get_or_create(&InquiryLabels {
            channel: "ussd",
            outcome,
        })
        .get()
}

#[test]
fn reads_the_typed_path() {
    let cases: &[(&str, Step<'_>)] = &[
        ("", Step::Menu),
        ("  ", Step::Menu),
        ("1", Step::Prompt(Lang::Fa)),
        ("۱", Step::Prompt(Lang::Fa)),
        ("٢", Step::Prompt(Lang::En)),
        ("2", Step::Prompt(Lang::En)),
        ("1*0012345679", Step::Lookup(Lang::Fa, "0012345679")),
        ("2*۰۰۱۲۳۴۵۶۷۹", Step::Lookup(Lang::En, "۰۰۱۲۳۴۵۶۷۹")),
        ("2*abc", Step::Lookup(Lang::En, "abc")),
        ("1*", Step::Lookup(Lang::Fa, "")),
        ("0012345679", Step::Lookup(Lang::Fa, "0012345679")),
        ("٠٠١٢٣٤٥٦٧٩", Step::Lookup(Lang::Fa, "٠٠١٢٣٤٥٦٧٩")),
        ("12", Step::Lookup(Lang::Fa, "12")),
        ("3", Step::Invalid(Lang::Fa)),
        ("0", Step::Invalid(Lang::Fa)),
        ("abc", Step::Invalid(Lang::Fa)),
        ("1*2*3", Step::Invalid(Lang::Fa)),
        ("2*0012345679*1", Step::Invalid(Lang::En)),
        ("3*0012345679", Step::Invalid(Lang::Fa)),
        ("*", Step::Invalid(Lang::Fa)),
        ("11", Step::Lookup(Lang::Fa, "11")),
        ("\u{FFFD}", Step::Invalid(Lang::Fa)),
    ];
    for (text, expected) in cases {
        assert_eq!(&step(text), expected, "{text:?}");
    }
}

#[test]
fn menu_then_prompt_then_answer_in_both_languages() {
    let state = state();
    let (body, outcome) = send(&state, "", "09120000001");
    assert_eq!(
        (body.as_str(), outcome),
        (format!("CON {MENU}").as_str(), "menu")
    );
    assert_eq!(
        send(&state, "1", "09120000001"),
        (format!("CON {}", FA.prompt), "prompt")
    );
    assert_eq!(
        send(&state, "2", "09120000001"),
        (format!("CON {}", EN.prompt), "prompt")
    );

    let (fa, outcome) = send(&state, &format!("1*{ACTIVE}"), "09120000001");
    assert_eq!(outcome, "active");
    assert!(fa.starts_with(&format!("END {}\n", FA.statuses[0])), "{fa}");
    assert!(fa.contains("۱۴۰۵/۱۲/۲۹"), "{fa}");
    assert!(fa.contains(FA.tracking), "{fa}");

    let (en, outcome) = send(&state, &format!("2*{ACTIVE}"), "09120000001");
    assert_eq!(outcome, "active");
    assert!(
        en.starts_with("END Booklet credit: valid\nCovered until: 2027-03-20\nTracking code: 1405"),
        "{en}"
    );
    assert_eq!(inquiries(&state, "active"), 2);
}

#[test]
fn every_status_is_answered_and_counted() {
    let state = state();
    let cases = [
        (ACTIVE.to_string(), Outcome::Active),
        (CHILD.to_string(), Outcome::Active),
        (id(1001), Outcome::Expired),
        (id(1002), Outcome::Suspended),
        (id(1003), Outcome::Deceased),
        (id(1004), Outcome::Active),
        (id(1006), Outcome::MainInsuredInactive),
        (id(1007), Outcome::MainInsuredNotFound),
    ];
    for (i, (member, status)) in cases.iter().enumerate() {
        for lang in Lang::ALL {
            let prefix = if lang == Lang::Fa { "1" } else { "2" };
            let phone = format!("0912000{i:04}");
            let (body, outcome) = send(&state, &format!("{prefix}*{member}"), &phone);
            assert_eq!(outcome, status.as_str(), "{member}");
            assert!(body.contains(texts::status_text(lang, *status)), "{body}");
        }
    }
    // The child's coverage is its own end (earlier than the main insured's).
    let (child, _) = send(&state, &format!("2*{CHILD}"), "09129999999");
    assert!(child.contains("Covered until: 2026-12-31"), "{child}");
    // The pensioner's is open-ended.
    let (fa, _) = send(&state, &id(1004), "09129999998");
    assert!(fa.contains(FA.open_ended), "{fa}");
    let (en, _) = send(&state, &format!("2*{}", id(1004)), "09129999998");
    assert!(en.contains(EN.open_ended), "{en}");
}

#[test]
fn direct_dial_and_every_digit_script_and_padding() {
    let state = state();
    let persian = "۰۰۱۲۳۴۵۶۷۹";
    let arabic = "٠٠١٢٣٤٥٦٧٩";
    for (i, raw) in [
        CHILD,
        "12345679",
        persian,
        arabic,
        "۱۲۳۴۵۶۷۹",
        " 0012345679 ",
    ]
    .iter()
    .enumerate()
    {
        let phone = format!("0935000{i:04}");
        let (body, outcome) = send(&state, raw, &phone);
        assert_eq!(outcome, "active", "{raw}");
        assert!(
            body.starts_with(&format!("END {}", FA.statuses[0])),
            "{body}"
        );
        let (body, outcome) = send(&state, &format!("2*{raw}"), &phone);
        assert_eq!(outcome, "active", "{raw}");
        assert!(body.starts_with("END Booklet credit: valid"), "{body}");
    }
    // The 9-digit form of an ID with one leading zero.
    let (_, outcome) = send(&state, &format!("1*{}", &ACTIVE[1..]), "09350000099");
    assert_eq!(outcome, "active");
}

#[test]
fn invalid_unknown_and_garbage_get_short_messages_in_the_chosen_language() {
    let state = state();
    let cases: &[(&str, String, &str)] = &[
        (
            "1*0012345678",
            format!("END {}", FA.invalid_id),
            "invalid_national_id",
        ),
        (
            "2*0012345678",
            format!("END {}", EN.invalid_id),
            "invalid_national_id",
        ),
        (
            "1*abc",
            format!("END {}", FA.invalid_id),
            "invalid_national_id",
        ),
        (
            "2*",
            format!("END {}", EN.invalid_id),
            "invalid_national_id",
        ),
        (
            "1111111111",
            format!("END {}", FA.invalid_id),
            "invalid_national_id",
        ),
        ("3", format!("END {}", FA.invalid_input), "invalid_request"),
        (
            "1*2*3",
            format!("END {}", FA.invalid_input),
            "invalid_request",
        ),
        (
            "2*1*3",
            format!("END {}", EN.invalid_input),
            "invalid_request",
        ),
        (
            "hello",
            format!("END {}", FA.invalid_input),
            "invalid_request",
        ),
    ];
    for (i, (text, expected, outcome)) in cases.iter().enumerate() {
        let got = send(&state, text, &format!("0901000{i:04}"));
        assert_eq!(&got, &(expected.clone(), *outcome), "{text}");
    }
    let (body, outcome) = send(&state, &format!("2*{}", id(1010)), "09010009999");
    assert_eq!(outcome, "member_not_found");
    assert!(
        body.starts_with(&format!("END {}\nTracking code: ", EN.not_found)),
        "{body}"
    );
    let (body, _) = send(&state, &id(1010), "09010009999");
    assert!(
        body.starts_with(&format!("END {}\n{}", FA.not_found, FA.tracking)),
        "{body}"
    );
    assert_eq!(inquiries(&state, "member_not_found"), 2);
    assert_eq!(inquiries(&state, "invalid_national_id"), 5);
}

#[test]
fn unreadable_bodies_and_missing_fields_still_get_text() {
    let state = state();
    let (body, outcome) = check(reply(&mut session(&state), None, today()));
    assert_eq!(
        (body, outcome),
        (format!("END {}", FA.invalid_input), "invalid_request")
    );
    // Not a callback a gateway sends: no fields, no session, no phone, undecodable, a field
    // twice. A short END, never the menu, counted as malformed.
    for body in [
        &b""[..],
        b"sessionId=1",
        b"phoneNumber=0912&text=",
        b"sessionId=1&phoneNumber=&text=",
        b"\xff\xfe\x00text=\xff",
        b"sessionId=1&phoneNumber=0912&text=1*%FF%FE",
        b"sessionId=1&phoneNumber=0912&text=1&text=2",
        b"sessionId=1&phoneNumber=0912&phoneNumber=0913&text=",
    ] {
        assert_eq!(
            check(reply(&mut session(&state), Some(body), today())),
            (
                format!("END {}", FA.invalid_input),
                crate::channels::MALFORMED
            ),
            "{body:?}"
        );
    }
    let long = format!("sessionId=1&phoneNumber=0912&text={}", "1*".repeat(30_000));
    assert_eq!(
        check(reply(&mut session(&state), Some(long.as_bytes()), today())).1,
        "invalid_request"
    );
    let long = format!("sessionId=1&phoneNumber=0912&text={}", "9".repeat(60_000));
    assert_eq!(
        check(reply(&mut session(&state), Some(long.as_bytes()), today())).1,
        "invalid_national_id"
    );
    // The card's dashes and invisible marks copied with the ID are read.
    let dashed = format!("{}-{}-{}", &ACTIVE[..3], &ACTIVE[3..9], &ACTIVE[9..]);
    let r = check(reply(
        &mut session(&state),
        Some(form(&format!("1*\u{200F}{dashed}"), "0912").as_slice()),
        today(),
    ));
    assert_eq!(r.1, "active");
}

#[test]
fn not_ready_until_an_index_is_loaded() {
    let state = AppState::new(1).unwrap();
    assert_eq!(send(&state, "", "0912").1, "menu");
    let (body, outcome) = send(&state, &format!("1*{ACTIVE}"), "0912");
    assert_eq!(
        (body, outcome),
        (format!("END {}", FA.not_ready), "not_ready")
    );
    let (body, _) = send(&state, &format!("2*{ACTIVE}"), "0912");
    assert_eq!(body, format!("END {}", EN.not_ready));
    // An invalid ID is still told as such.
    assert_eq!(send(&state, "1*123", "0912").1, "invalid_national_id");
    assert_eq!(inquiries(&state, "not_ready"), 2);
}

#[test]
fn one_phone_is_limited_while_others_are_answered() {
    let state = state().with_phone_requests_per_minute(3);
    for _ in 0..3 {
        assert_eq!(send(&state, ACTIVE, "+989121112233").1, "active");
    }
    // The same number in another spelling is the same phone.
    let (body, outcome) = send(&state, &format!("2*{ACTIVE}"), "09121112233");
    assert_eq!(
        (body, outcome),
        (format!("END {}", EN.rate_limited), "rate_limited")
    );
    let (body, _) = send(&state, ACTIVE, "9121112233");
    assert_eq!(body, format!("END {}", FA.rate_limited));
    // Invalid guesses are limited too; menus and prompts are not.
    assert_eq!(send(&state, "1*123", "09121112233").1, "rate_limited");
    assert_eq!(send(&state, "", "09121112233").1, "menu");
    assert_eq!(send(&state, "2", "09121112233").1, "prompt");
    assert_eq!(send(&state, ACTIVE, "09124445566").1, "active");
    assert_eq!(inquiries(&state, "rate_limited"), 3);
}
