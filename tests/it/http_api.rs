//! The HTTP API of docs/openapi.yaml and docs/operations.md against a running server: every status, the answer's
//! fields, booklets, batches, tracking codes and the operations endpoints.

use std::collections::HashSet;

use hyper::{Method, StatusCode};

use crate::support::*;

async fn ask(server: &TestServer, id: &str, query: &str) -> serde_json::Value {
    let reply = get(&eligibility_url(
        server,
        id,
        &format!("date={AS_OF}&{query}"),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn the_contract_example_dependent() {
    let server = TestServer::start().await;
    let a = ask(&server, Fixture::CHILD, "service=pharmacy").await;
    assert_eq!(a["national_id"], "0012345679");
    assert_eq!(a["as_of"], AS_OF);
    assert_eq!(a["eligible"], true);
    assert_eq!(a["status"], "active");
    assert_eq!(a["coverage_until"], "2026-12-31");
    assert_eq!(a["days_remaining"], 39);
    assert_eq!(a["kind"], "dependent");
    assert_eq!(a["relation"], "child");
    assert_eq!(a["scheme"], "mandatory");
    assert_eq!(
        a["main_insured"],
        serde_json::json!({"national_id": "049****899", "status": "active", "coverage_until": "2027-03-20"})
    );
    assert_eq!(a["services"], serde_json::json!(["outpatient", "pharmacy"]));
    assert_eq!(
        a["service"],
        serde_json::json!({"code": "pharmacy", "covered": true})
    );
    assert_eq!(a["special_conditions"], serde_json::json!(["dialysis"]));
    assert_eq!(a["primary_insurer"], "sso");
    assert_eq!(a["name"], "علی ر***");
    assert_eq!(a["data_version"], 42);
    let code = a["tracking_code"].as_str().unwrap();
    assert_eq!(code.len(), 21);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(&code[8..10], "05", "node id in the tracking code");
}

#[tokio::test]
async fn every_status_of_the_contract() {
    let server = TestServer::start().await;
    let cases = [
        (Fixture::MAIN.to_string(), "", "active", true),
        (Fixture::expired(), "", "expired", false),
        (Fixture::suspended(), "", "suspended", false),
        (Fixture::deceased(), "", "deceased", false),
        (
            Fixture::dependent_of_suspended(),
            "",
            "main_insured_inactive",
            false,
        ),
        (Fixture::orphan(), "", "main_insured_not_found", false),
        (
            Fixture::CHILD.to_string(),
            "service=dental",
            "service_not_covered",
            false,
        ),
        (Fixture::pensioner(), "", "active", true),
    ];
    for (id, query, status, eligible) in cases {
        let a = ask(&server, &id, query).await;
        assert_eq!(a["status"], status, "{id}");
        assert_eq!(a["eligible"], eligible, "{id}");
    }
}

#[tokio::test]
async fn fields_that_appear_only_when_they_apply() {
    let server = TestServer::start().await;
    let main = ask(&server, Fixture::MAIN, "").await;
    assert!(main.get("main_insured").is_none());
    assert!(main.get("service").is_none());
    assert_eq!(main["relation"], serde_json::Value::Null);
    assert_eq!(main["name"], "رضا ر***");
    let pensioner = ask(&server, &Fixture::pensioner(), "").await;
    assert_eq!(pensioner["coverage_until"], serde_json::Value::Null);
    assert_eq!(pensioner["days_remaining"], serde_json::Value::Null);
    assert_eq!(pensioner["name"], serde_json::Value::Null);
    let expired = ask(&server, &Fixture::expired(), "").await;
    assert_eq!(expired["days_remaining"], -1);
    assert_eq!(expired["name"], "Sara A***");
    let on_last_day = ask(&server, &Fixture::expired(), "").await;
    assert_eq!(on_last_day["coverage_until"], "2026-11-21");
    let reply = get(&eligibility_url(
        &server,
        &Fixture::expired(),
        "date=2026-11-21",
    ))
    .await;
    assert_eq!(reply.json()["days_remaining"], 0);
    assert_eq!(reply.json()["status"], "active");
    let orphan = ask(&server, &Fixture::orphan(), "").await;
    assert_eq!(orphan["main_insured"]["status"], "not_found");
    let inactive = ask(&server, &Fixture::dependent_of_suspended(), "").await;
    assert_eq!(inactive["main_insured"]["status"], "suspended");
    assert_eq!(
        ask(&server, &Fixture::other_primary(), "").await["primary_insurer"],
        "armed_forces"
    );
}

#[tokio::test]
async fn the_national_id_is_never_echoed_unmasked_for_the_main_insured_nor_the_name_in_full() {
    let server = TestServer::start().await;
    let reply = get(&eligibility_url(&server, Fixture::CHILD, "")).await;
    let text = reply.text();
    assert!(!text.contains(Fixture::MAIN));
    assert!(!text.contains("رضایی"));
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["content-type"], "application/json");
}

#[tokio::test]
async fn ids_in_every_digit_script_and_padded_forms() {
    let server = TestServer::start().await;
    for form in [
        Fixture::CHILD.to_string(),
        persian(Fixture::CHILD),
        arabic_indic(Fixture::CHILD),
        "12345679".to_string(),
        persian("12345679"),
        format!("{}{}", persian("0012"), arabic_indic("345679")),
    ] {
        let a = ask(&server, &form, "").await;
        assert_eq!(a["national_id"], Fixture::CHILD, "{form}");
    }
}

#[tokio::test]
async fn the_default_date_is_today_in_tehran() {
    let server = TestServer::start().await;
    let a = get(&eligibility_url(&server, Fixture::MAIN, ""))
        .await
        .json();
    assert_eq!(a["as_of"], eligd::dates::Day::today().to_string());
}

#[tokio::test]
async fn not_found_and_not_eligible_are_different_things() {
    let server = TestServer::start().await;
    let reply = get(&eligibility_url(&server, &Fixture::unknown(), "")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "member_not_found");
    assert_eq!(
        reply.json()["error"]["tracking_code"]
            .as_str()
            .unwrap()
            .len(),
        21
    );
    // An invalid ID is a client error, never "not found".
    let reply = get(&eligibility_url(&server, "0012345678", "")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_national_id");
}

#[tokio::test]
async fn booklet_lookup() {
    let server = TestServer::start().await;
    let reply = get(&server.url(&format!(
        "/v1/booklets/930123456789/eligibility?date={AS_OF}&service=dental"
    )))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let a = reply.json();
    assert_eq!(a["national_id"], Fixture::MAIN);
    assert_eq!(a["service"]["covered"], true);
    // Leading zeros matter, and Persian digits are read.
    let reply = get(&server.url(&format!(
        "/v1/booklets/{}/eligibility",
        encode_path(&persian("000777"))
    )))
    .await;
    assert_eq!(reply.json()["national_id"], Fixture::CHILD);
    let reply = get(&server.url("/v1/booklets/777/eligibility")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "booklet_not_found");
}

#[tokio::test]
async fn batch_answers_in_order_with_per_entry_errors() {
    let server = TestServer::start().await;
    let body = serde_json::json!({
        "national_ids": [Fixture::CHILD, "0012345678", Fixture::unknown(), persian(Fixture::MAIN), Fixture::expired()],
        "date": AS_OF, "service": "pharmacy"
    });
    let reply = post(&server.url("/v1/eligibility/batch"), &body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let results = reply.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["status"], "active");
    assert_eq!(results[0]["service"]["code"], "pharmacy");
    assert_eq!(results[1]["national_id"], "0012345678");
    assert_eq!(results[1]["error"]["code"], "invalid_national_id");
    assert_eq!(results[2]["error"]["code"], "member_not_found");
    assert_eq!(results[3]["national_id"], Fixture::MAIN);
    assert_eq!(results[4]["status"], "expired");
    let codes: HashSet<String> = results
        .iter()
        .map(|r| {
            r["tracking_code"]
                .as_str()
                .or(r["error"]["tracking_code"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(codes.len(), 5, "every entry has its own tracking code");

    let empty = post(
        &server.url("/v1/eligibility/batch"),
        r#"{"national_ids": []}"#,
    )
    .await;
    assert_eq!(empty.json(), serde_json::json!({"results": []}));
    let full: Vec<String> = (0..100).map(|_| Fixture::MAIN.to_string()).collect();
    let reply = post(
        &server.url("/v1/eligibility/batch"),
        &serde_json::json!({"national_ids": full}).to_string(),
    )
    .await;
    assert_eq!(reply.json()["results"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn tracking_codes_are_unique_across_many_answers() {
    let server = TestServer::start().await;
    let mut codes = HashSet::new();
    for _ in 0..200 {
        let a = get(&eligibility_url(&server, Fixture::MAIN, ""))
            .await
            .json();
        assert!(codes.insert(a["tracking_code"].as_str().unwrap().to_string()));
    }
}

#[tokio::test]
async fn not_ready_until_an_index_is_loaded() {
    let server = TestServer::start_empty().await;
    assert_eq!(get(&server.url("/healthz")).await.status, StatusCode::OK);
    let ready = get(&server.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    assert!(ready.json()["reason"].as_str().unwrap().contains("loading"));
    for reply in [
        get(&eligibility_url(&server, Fixture::MAIN, "")).await,
        get(&server.url("/v1/booklets/930123456789/eligibility")).await,
        post(
            &server.url("/v1/eligibility/batch"),
            r#"{"national_ids": []}"#,
        )
        .await,
    ] {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.error_code(), "not_ready");
        assert_eq!(reply.headers["retry-after"], "1");
    }
    // Bad input is a 400 even while loading, on every route.
    for reply in [
        get(&eligibility_url(&server, "0012345678", "")).await,
        get(&eligibility_url(&server, Fixture::MAIN, "date=2026-02-30")).await,
        get(&server.url("/v1/booklets/12x/eligibility")).await,
        post(
            &server.url("/v1/eligibility/batch"),
            r#"{"national_ids": [], "date": "yesterday"}"#,
        )
        .await,
    ] {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    server
        .state
        .install_index(std::sync::Arc::new(fixture_index()), 0.0);
    let ready = get(&server.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.json(),
        serde_json::json!({"ready": true, "members": 10})
    );
    assert_eq!(
        get(&eligibility_url(&server, Fixture::MAIN, ""))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn metrics_count_by_route_pattern_without_ids() {
    let server = TestServer::start().await;
    get(&eligibility_url(&server, Fixture::MAIN, "")).await;
    get(&eligibility_url(&server, &Fixture::expired(), "")).await;
    get(&eligibility_url(&server, "0012345678", "")).await;
    get(&server.url("/no/such/route")).await;
    post(
        &server.url("/v1/eligibility/batch"),
        &format!(r#"{{"national_ids": ["{}"]}}"#, Fixture::CHILD),
    )
    .await;
    // Prometheus asks for OpenMetrics; anyone else gets the classic text format.
    let open = crate::support::request(
        Method::GET,
        &server.url("/metrics"),
        None,
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    )
    .await;
    assert!(open.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open.text().ends_with("# EOF\n"));
    let reply = get(&server.url("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.text();
    assert!(text.contains("# TYPE eligd_requests_total counter\n"));
    for line in [
        r#"eligd_requests_total{route="/v1/members/{national_id}/eligibility",channel="http",outcome="active"} 1"#,
        r#"eligd_requests_total{route="/v1/members/{national_id}/eligibility",channel="http",outcome="expired"} 1"#,
        r#"eligd_requests_total{route="/v1/members/{national_id}/eligibility",channel="http",outcome="invalid_national_id"} 1"#,
        r#"eligd_requests_total{route="unknown",channel="http",outcome="not_found"} 1"#,
        r#"eligd_requests_total{route="/v1/eligibility/batch",channel="http",outcome="ok"} 1"#,
        r#"eligd_inquiries_total{channel="http",outcome="active"} 2"#,
        r#"eligd_request_duration_seconds_bucket{le="0.000025",route="/v1/members/{national_id}/eligibility",channel="http"}"#,
        "eligd_index_members 10",
        "eligd_snapshot_load_seconds",
        "eligd_build_info{version=",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    let base_bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("eligd_index_base_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("eligd_index_base_bytes is exported");
    assert!(base_bytes > 0, "the base's size is reported");
    for id in [Fixture::MAIN, "0012345678", Fixture::CHILD] {
        assert!(!text.contains(id), "a national ID leaked into metrics");
    }
    assert!(!text.contains("/no/such/route"));
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops_listening() {
    let server = TestServer::start().await;
    let addr = server.addr;
    assert_eq!(get(&server.url("/healthz")).await.status, StatusCode::OK);
    server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn head_is_answered_like_get_without_a_body() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let reply = request(hyper::Method::HEAD, &server.url(path), None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.body.is_empty(), "{path}");
    }
    let reply = request(
        hyper::Method::HEAD,
        &server.url("/v1/eligibility/batch"),
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}
