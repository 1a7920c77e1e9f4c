//! USSD and SMS end to end (docs/openapi.yaml): the whole menu in both languages, direct dial,
//! every digit script, every status of the fixture population, bad input of every kind,
//! per-phone rate limits, and every reply within its screen or message size. Expected
//! answers are rendered from the JSON API's answer for the same person today, so the tests
//! hold whatever the date.

use eligd::channels::texts::{self, fits_sms, fits_ussd_screen, Lang, EN, FA, MENU, SMS};
use eligd::dates::Day;
use eligd::eligibility::Outcome;
use hyper::{Method, StatusCode};

use crate::support::*;

const FORM: &str = "application/x-www-form-urlencoded";

fn ussd_form(text: &str, phone: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("sessionId", "ATUid_e2e")
        .append_pair("serviceCode", "*1420*4#")
        .append_pair("phoneNumber", phone)
        .append_pair("text", text)
        .finish()
}

fn sms_form(text: &str, from: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("from", from)
        .append_pair("text", text)
        .finish()
}

async fn post_raw(
    server: &TestServer,
    path: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Reply {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("content-type", c))
        .into_iter()
        .collect();
    request(Method::POST, &server.url(path), Some(body), &headers).await
}

/// A USSD reply checked for the gateway's invariants; returns (body, shown text).
fn screen(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let ct = reply.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let body = reply.text();
    let shown = body
        .strip_prefix("CON ")
        .or_else(|| body.strip_prefix("END "))
        .unwrap_or_else(|| panic!("no CON/END prefix: {body:?}"))
        .to_string();
    assert!(fits_ussd_screen(&shown), "does not fit one screen: {body}");
    (body, shown)
}

async fn ussd(server: &TestServer, text: &str, phone: &str) -> String {
    let reply = post_raw(
        server,
        "/ussd",
        ussd_form(text, phone).as_bytes(),
        Some(FORM),
    )
    .await;
    screen(&reply).0
}

async fn sms(server: &TestServer, text: &str, from: &str) -> String {
    let reply = post_raw(server, "/sms", sms_form(text, from).as_bytes(), Some(FORM)).await;
    sms_text(&reply)
}

fn sms_text(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let body = reply.text();
    assert!(fits_sms(&body), "SMS too long: {body}");
    assert!(!body.is_empty());
    body
}

/// ASCII digits of a string in any digit script.
fn ascii(s: &str) -> String {
    s.chars()
        .filter_map(eligd::national_id::digit_value)
        .map(|d| char::from(b'0' + d))
        .collect()
}

/// The tracking code on the last line of an answer, in ASCII.
fn tracking_of(body: &str) -> String {
    let code = ascii(body.lines().last().unwrap());
    assert_eq!(code.len(), 21, "{body}");
    code
}

/// The status and coverage end the JSON API gives this person today.
async fn today_answer(server: &TestServer, id: &str) -> (Outcome, Option<Day>) {
    let json = get(&eligibility_url(server, id, "")).await.json();
    let status = json["status"].as_str().unwrap();
    let outcome = Outcome::ALL
        .into_iter()
        .find(|o| o.as_str() == status)
        .unwrap();
    let end = json["coverage_until"]
        .as_str()
        .map(|d| Day::parse_iso(d).unwrap());
    (outcome, end)
}

/// The exact USSD answer expected for `id` in `lang`, given the tracking code shown.
async fn expected_answer(server: &TestServer, id: &str, lang: Lang, body: &str) -> String {
    let (outcome, end) = today_answer(server, id).await;
    format!(
        "END {}",
        texts::answer(lang, outcome, end, &tracking_of(body))
    )
}

fn everyone() -> Vec<String> {
    vec![
        Fixture::MAIN.to_string(),
        Fixture::CHILD.to_string(),
        Fixture::expired(),
        Fixture::suspended(),
        Fixture::deceased(),
        Fixture::pensioner(),
        Fixture::suspended_main(),
        Fixture::dependent_of_suspended(),
        Fixture::orphan(),
        Fixture::other_primary(),
    ]
}

#[tokio::test]
async fn the_whole_menu_in_both_languages() {
    let server = TestServer::start().await;
    let phone = "+989121000001";
    assert_eq!(ussd(&server, "", phone).await, format!("CON {MENU}"));
    assert_eq!(
        ussd(&server, "1", phone).await,
        format!("CON {}", FA.prompt)
    );
    let body = ussd(&server, &format!("1*{}", Fixture::CHILD), phone).await;
    assert_eq!(
        body,
        expected_answer(&server, Fixture::CHILD, Lang::Fa, &body).await
    );
    assert!(body.contains(FA.tracking));

    assert_eq!(
        ussd(&server, "2", phone).await,
        format!("CON {}", EN.prompt)
    );
    let body = ussd(&server, &format!("2*{}", Fixture::CHILD), phone).await;
    assert_eq!(
        body,
        expected_answer(&server, Fixture::CHILD, Lang::En, &body).await
    );
    assert!(body.starts_with("END Booklet credit: "), "{body}");
    // Persian menu choices typed in Persian digits work too.
    assert_eq!(
        ussd(&server, "۲", phone).await,
        format!("CON {}", EN.prompt)
    );
}

#[tokio::test]
async fn every_status_of_the_fixture_population_in_both_languages() {
    let server = TestServer::start().await;
    let mut seen = std::collections::HashSet::new();
    for (i, id) in everyone().iter().enumerate() {
        let phone = format!("0912200{i:04}");
        let fa = ussd(&server, &format!("1*{id}"), &phone).await;
        assert_eq!(
            fa,
            expected_answer(&server, id, Lang::Fa, &fa).await,
            "{id}"
        );
        let en = ussd(&server, &format!("2*{id}"), &phone).await;
        assert_eq!(
            en,
            expected_answer(&server, id, Lang::En, &en).await,
            "{id}"
        );
        seen.insert(today_answer(&server, id).await.0);
    }
    // The fixture covers these statuses (on the fixture's as-of date all four; today the
    // dates may have moved, so only the statuses that do not depend on the date are asserted).
    for status in [
        Outcome::Suspended,
        Outcome::Deceased,
        Outcome::MainInsuredInactive,
        Outcome::MainInsuredNotFound,
    ] {
        assert!(seen.contains(&status), "{status:?} not exercised");
    }
}

#[tokio::test]
async fn direct_dial_every_digit_script_and_padding() {
    let server = TestServer::start().await;
    let main = Fixture::MAIN;
    for (i, typed) in [
        main.to_string(),
        persian(main),
        arabic_indic(main),
        main[1..].to_string(),
        persian(&main[1..]),
        Fixture::CHILD[2..].to_string(),
    ]
    .iter()
    .enumerate()
    {
        let phone = format!("0935100{i:04}");
        let id = if typed.chars().count() == 8 {
            Fixture::CHILD
        } else {
            main
        };
        let body = ussd(&server, typed, &phone).await;
        assert_eq!(
            body,
            expected_answer(&server, id, Lang::Fa, &body).await,
            "{typed}"
        );
        let body = ussd(&server, &format!("2*{typed}"), &phone).await;
        assert_eq!(
            body,
            expected_answer(&server, id, Lang::En, &body).await,
            "{typed}"
        );
    }
}

#[tokio::test]
async fn unknown_invalid_and_garbage_get_short_messages() {
    let server = TestServer::start().await;
    let unknown = Fixture::unknown();
    let body = ussd(&server, &format!("1*{unknown}"), "0901").await;
    assert_eq!(
        body,
        format!("END {}", texts::not_found(Lang::Fa, &tracking_of(&body)))
    );
    let body = ussd(&server, &format!("2*{unknown}"), "0901").await;
    assert_eq!(
        body,
        format!("END {}", texts::not_found(Lang::En, &tracking_of(&body)))
    );

    let cases = [
        ("1*0012345678", format!("END {}", FA.invalid_id)),
        ("2*0012345678", format!("END {}", EN.invalid_id)),
        ("1*abc", format!("END {}", FA.invalid_id)),
        ("2*12", format!("END {}", EN.invalid_id)),
        ("0000000000", format!("END {}", FA.invalid_id)),
        ("3", format!("END {}", FA.invalid_input)),
        ("1*2*3", format!("END {}", FA.invalid_input)),
        ("2*1*3", format!("END {}", EN.invalid_input)),
        ("*#", format!("END {}", FA.invalid_input)),
        ("hello", format!("END {}", FA.invalid_input)),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        assert_eq!(
            &ussd(&server, text, &format!("0902000{i:04}")).await,
            expected,
            "{text}"
        );
    }
    // Very long text, and bytes that are not UTF-8.
    let long = "1*".repeat(20_000);
    assert_eq!(
        ussd(&server, &long, "0903").await,
        format!("END {}", FA.invalid_input)
    );
    let long = format!("2*{}", "9".repeat(30_000));
    assert_eq!(
        ussd(&server, &long, "0904").await,
        format!("END {}", EN.invalid_id)
    );
    // Bytes that are not UTF-8: not a callback a gateway sends.
    for body in [
        &b"sessionId=1&phoneNumber=0905&text=1*%FF%FE\xff"[..],
        b"sessionId=1&phoneNumber=0905&text=%FF",
    ] {
        let reply = post_raw(&server, "/ussd", body, Some(FORM)).await;
        assert_eq!(screen(&reply).0, format!("END {}", FA.invalid_input));
    }
}

#[tokio::test]
async fn missing_fields_wrong_content_types_and_oversize_bodies() {
    let server = TestServer::start().await;
    let id = Fixture::MAIN;
    // Without `text` (some gateways leave empty fields out): the first screen.
    let reply = post_raw(
        &server,
        "/ussd",
        b"sessionId=1&phoneNumber=0908&serviceCode=*1420%2A4%23",
        Some(FORM),
    )
    .await;
    assert_eq!(screen(&reply).0, format!("CON {MENU}"));
    // No fields, no session, no phone number, undecodable, a field twice: a short END (never
    // the menu, and never an answer that sidesteps the per-phone limit), counted apart.
    for body in [
        &b""[..],
        b"sessionId=1&serviceCode=*1420%2A4%23",
        b"\xff\xfe\x00",
        format!("text={id}").as_bytes(),
        format!("sessionId=1&phoneNumber=0912&phoneNumber=0913&text={id}").as_bytes(),
    ] {
        let reply = post_raw(&server, "/ussd", body, Some(FORM)).await;
        assert_eq!(
            screen(&reply).0,
            format!("END {}", FA.invalid_input),
            "{body:?}"
        );
    }
    let (_, metrics) = {
        let m = get(&server.url("/metrics")).await;
        (m.status, m.text())
    };
    assert!(
        metrics.contains(
            r#"eligd_requests_total{route="/ussd",channel="ussd",outcome="malformed_callback"} 5"#
        ),
        "{metrics}"
    );
    let _ = (id, Lang::Fa);
    // The content type is not what decides: a form is read as a form.
    for ct in [
        None,
        Some("application/json"),
        Some("text/plain; charset=utf-8"),
    ] {
        let reply = post_raw(&server, "/ussd", ussd_form("2", "0906").as_bytes(), ct).await;
        assert_eq!(screen(&reply).0, format!("CON {}", EN.prompt), "{ct:?}");
    }
    // JSON instead of a form: no fields are found.
    let reply = post_raw(
        &server,
        "/ussd",
        br#"{"text":"1"}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(screen(&reply).0, format!("END {}", FA.invalid_input));
    // Over 64 KiB: the body is not read, and the gateway still gets a screen.
    let huge = format!("phoneNumber=0907&text={}", "1".repeat(70 * 1024));
    let reply = post_raw(&server, "/ussd", huge.as_bytes(), Some(FORM)).await;
    assert_eq!(screen(&reply).0, format!("END {}", FA.invalid_input));
    let reply = post_raw(&server, "/sms", huge.as_bytes(), Some(FORM)).await;
    assert_eq!(sms_text(&reply), SMS.help);
    // GET is not the gateway's path: the router answers 405.
    assert_eq!(
        get(&server.url("/ussd")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        get(&server.url("/sms")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn not_ready_until_the_index_is_loaded() {
    let server = TestServer::start_empty().await;
    let id = Fixture::MAIN;
    assert_eq!(ussd(&server, "", "0908").await, format!("CON {MENU}"));
    assert_eq!(
        ussd(&server, &format!("1*{id}"), "0908").await,
        format!("END {}", FA.not_ready)
    );
    assert_eq!(
        ussd(&server, &format!("2*{id}"), "0908").await,
        format!("END {}", EN.not_ready)
    );
    assert_eq!(sms(&server, id, "0908").await, FA.not_ready);
}

#[tokio::test]
async fn one_phone_is_rate_limited_while_another_is_answered() {
    let server = TestServer::start().await;
    let id = Fixture::MAIN;
    let limit = server.state.phone_limits.rate_per_minute();
    assert_eq!(limit, 10);
    for i in 0..limit {
        // The same number in other spellings counts as one phone.
        let phone = ["09121234567", "+989121234567", "00989121234567"][i as usize % 3];
        let body = ussd(&server, id, phone).await;
        assert_ne!(body, format!("END {}", FA.rate_limited), "inquiry {i}");
    }
    assert_eq!(
        ussd(&server, id, "09121234567").await,
        format!("END {}", FA.rate_limited)
    );
    assert_eq!(
        ussd(&server, &format!("2*{id}"), "9121234567").await,
        format!("END {}", EN.rate_limited)
    );
    // SMS from the same phone shares the allowance.
    assert_eq!(sms(&server, id, "+98 912 123 4567").await, FA.rate_limited);
    // Menus still open, and every other phone is answered.
    assert_eq!(
        ussd(&server, "", "09121234567").await,
        format!("CON {MENU}")
    );
    let body = ussd(&server, id, "09127654321").await;
    assert_eq!(body, expected_answer(&server, id, Lang::Fa, &body).await);
    let body = sms(&server, id, "09127654321").await;
    assert!(body.contains(FA.tracking), "{body}");

    // Neither the phone numbers nor the national ID reach the metrics.
    let metrics = get(&server.url("/metrics")).await.text();
    for secret in ["9121234567", "9127654321", id, &id[1..]] {
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }
    assert!(
        metrics.contains(r#"channel="ussd",outcome="rate_limited""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn sms_valid_invalid_unknown_and_over_limit() {
    let server = TestServer::start().await;
    for (i, id) in everyone().iter().enumerate() {
        let from = format!("0913000{i:04}");
        for typed in [id.clone(), persian(id), format!("  {}  ", arabic_indic(id))] {
            let body = sms(&server, &typed, &from).await;
            let (outcome, end) = today_answer(&server, id).await;
            let masked = eligd::national_id::NationalId::parse(id).unwrap().masked();
            let expected = texts::sms_answer(&masked, outcome, end, &tracking_of(&body));
            assert_eq!(body, expected, "{typed}");
            assert!(!body.contains(id.as_str()));
        }
    }
    let body = sms(&server, &Fixture::unknown(), "0914").await;
    let masked = eligd::national_id::NationalId::parse(&Fixture::unknown())
        .unwrap()
        .masked();
    assert_eq!(body, texts::sms_not_found(&masked, &tracking_of(&body)));
    for bad in ["0012345678", "abc", "12", "1*0012345678"] {
        assert_eq!(sms(&server, bad, "0915").await, SMS.invalid_id, "{bad}");
    }
    assert_eq!(sms(&server, "", "0916").await, SMS.help);
    let reply = post_raw(&server, "/sms", b"from=0916", Some(FORM)).await;
    assert_eq!(sms_text(&reply), SMS.help);

    // The eleventh message within the minute gets the polite text; another phone does not.
    for _ in 0..10 {
        assert_ne!(
            sms(&server, Fixture::MAIN, "09171112233").await,
            FA.rate_limited
        );
    }
    assert_eq!(
        sms(&server, Fixture::MAIN, "09171112233").await,
        FA.rate_limited
    );
    assert_eq!(sms(&server, "", "09171112233").await, FA.rate_limited);
    assert_ne!(
        sms(&server, Fixture::MAIN, "09171112234").await,
        FA.rate_limited
    );
}
