//! `POST /v1/public/credit` against the real binary: no key, the page's answer (never a
//! name), limited per client address with `X-Forwarded-For` trusted only from
//! `--trusted-proxies`, audited with channel `web`, and gone with `--no-public-page`.

use crate::support::wait_for;
use crate::support::{http, http_get, serve, serve_env};

fn ask(addr: &str, body: &str, forwarded_for: Option<&str>) -> crate::support::Answer {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(f) = forwarded_for {
        headers.push(("x-forwarded-for", f));
    }
    http(addr, "POST", "/v1/public/credit", &headers, body.as_bytes())
}

fn demo_id(eligd: &crate::support::Served) -> String {
    wait_for("the demo samples logged", 10, || {
        eligd.log().contains("demo_national_id=")
    });
    let log = eligd.log();
    let rest = log.split("demo_national_id=").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_public_answer_needs_no_key_and_carries_no_name() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let o = crate::support::eligd(&[
        "keys",
        "add",
        "--keys-file",
        keys.to_str().unwrap(),
        "--client",
        "c",
        "--channel",
        "http",
        "--rate",
        "10",
    ]);
    assert!(o.status.success());
    let audit = dir.path().join("audit.log");
    let eligd = serve_env(
        &[
            "--demo-members",
            "2000",
            "--api-keys",
            keys.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[("ELIGD_AUDIT_KEY", "00112233445566778899aabbccddeeff")],
    );
    let id = demo_id(&eligd);
    // The JSON API needs a key; the public endpoint does not.
    assert_eq!(
        http_get(&eligd.addr, &format!("/v1/members/{id}/eligibility")).0,
        401
    );
    let a = ask(&eligd.addr, &format!(r#"{{"national_id": "{id}"}}"#), None);
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    let fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "coverage_until",
            "coverage_until_jalali",
            "data_as_of",
            "eligible",
            "status",
            "tracking_code"
        ]
    );
    assert!(v["data_as_of"].as_str().unwrap().ends_with('Z'));
    // Bad input: a clear error, the same table as the JSON API.
    for (body, code) in [
        (r#"{"national_id": "12"}"#, "invalid_national_id"),
        (
            r#"{"national_id": "0012345679", "booklet_no": "1"}"#,
            "invalid_request",
        ),
        ("{", "invalid_request"),
        (
            r#"{"booklet_no": "999999999999999999"}"#,
            "booklet_not_found",
        ),
    ] {
        let a = ask(&eligd.addr, body, None);
        assert_eq!(a.json()["error"]["code"], code, "{body}");
    }
    // Audited with channel web, and counted.
    wait_for("the audit lines", 10, || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .contains(r#""channel":"web""#)
    });
    let (_, metrics) = http_get(&eligd.addr, "/metrics");
    assert!(
        metrics.contains(r#"eligd_inquiries_total{channel="web",outcome="#),
        "{metrics}"
    );
}

#[test]
fn the_limit_follows_the_client_address_and_a_spoofed_header_does_not_move_it() {
    // Untrusted peer: its X-Forwarded-For is ignored, so new "addresses" share one limit.
    let eligd = serve(&[
        "--demo-members",
        "2000",
        "--public-requests-per-minute",
        "3",
    ]);
    let id = demo_id(&eligd);
    let body = format!(r#"{{"national_id": "{id}"}}"#);
    let statuses: Vec<u16> = (0..5)
        .map(|i| ask(&eligd.addr, &body, Some(&format!("198.51.100.{i}"))).status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "spoofed headers must not reset the limit"
    );
    let refused = ask(&eligd.addr, &body, None);
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert!(refused.header("retry-after").is_some());

    // Behind a trusted proxy (loopback here), each forwarded client has its own limit.
    let proxied = serve(&[
        "--demo-members",
        "2000",
        "--public-requests-per-minute",
        "3",
        "--trusted-proxies",
        "127.0.0.0/8",
    ]);
    for client in ["198.51.100.1", "198.51.100.2"] {
        let statuses: Vec<u16> = (0..4)
            .map(|_| ask(&proxied.addr, &body, Some(&format!("6.6.6.6, {client}"))).status)
            .collect();
        assert_eq!(statuses, [200, 200, 200, 429], "{client}");
    }
}

#[test]
fn no_public_page_removes_the_page_and_the_endpoint() {
    let eligd = serve(&["--demo-members", "2000", "--no-public-page"]);
    assert_eq!(http_get(&eligd.addr, "/").0, 404);
    assert_eq!(http_get(&eligd.addr, "/manifest.webmanifest").0, 404);
    assert_eq!(
        ask(&eligd.addr, r#"{"national_id": "0012345679"}"#, None).status,
        404
    );
    let with = serve(&["--demo-members", "2000"]);
    let page = http(&with.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(http_get(&with.addr, "/sw.js").0, 200);
    let o = crate::support::eligd(&["serve", "--trusted-proxies", "10.0.0.0/99"]);
    crate::support::assert_clean_failure(&o, "prefix length");
}
