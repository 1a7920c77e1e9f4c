//! Bad input of every kind gets the error of the contract's table and never takes the
//! server down.

use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn expect(reply: Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.error_code(), code, "{}", reply.text());
    let tracking = reply.json()["error"]["tracking_code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(tracking.len(), 21);
    assert!(!reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn invalid_national_ids() {
    let server = TestServer::start().await;
    for bad in [
        "0012345678",
        "1111111111",
        "0000000000",
        "123",
        "00123456790",
        "abc",
        "0012345679x",
        "%20",
        "-1",
        "%FF%FE",
        "%D9%A1%D9%A2",
        "0012%2F345679",
        "１２３４５６７９",
    ] {
        let reply = get(&server.url(&format!("/v1/members/{bad}/eligibility"))).await;
        expect(reply, StatusCode::BAD_REQUEST, "invalid_national_id").await;
    }
}

#[tokio::test]
async fn invalid_dates_and_services() {
    let server = TestServer::start().await;
    for query in [
        "date=2026-02-30",
        "date=2026-13-01",
        "date=22-11-2026",
        "date=",
        "date=2026-11-22T10:00:00",
        "date=%DB%B2%DB%B0%DB%B2%DB%B6-11-22",
        "date=1405-09-01",
        "date=2026-11-22&date=nope",
        "date=9999-01-01",
    ] {
        let reply = get(&eligibility_url(&server, Fixture::MAIN, query)).await;
        expect(reply, StatusCode::BAD_REQUEST, "invalid_date").await;
    }
    for query in [
        "service=spa",
        "service=",
        "service=Pharmacy",
        "service=pharmacy%20",
    ] {
        let reply = get(&eligibility_url(&server, Fixture::MAIN, query)).await;
        expect(reply, StatusCode::BAD_REQUEST, "invalid_service").await;
    }
    let reply = get(&server.url("/v1/booklets/930123456789/eligibility?service=x")).await;
    expect(reply, StatusCode::BAD_REQUEST, "invalid_service").await;
    let body = r#"{"national_ids": ["0012345679"], "date": "2026-02-30"}"#;
    expect(
        post(&server.url("/v1/eligibility/batch"), body).await,
        StatusCode::BAD_REQUEST,
        "invalid_date",
    )
    .await;
    let body = r#"{"national_ids": ["0012345679"], "service": "spa"}"#;
    expect(
        post(&server.url("/v1/eligibility/batch"), body).await,
        StatusCode::BAD_REQUEST,
        "invalid_service",
    )
    .await;
}

#[tokio::test]
async fn invalid_booklet_numbers() {
    let server = TestServer::start().await;
    for bad in ["abc", "93-01", "1234567890123456789", "%FF"] {
        let reply = get(&server.url(&format!("/v1/booklets/{bad}/eligibility"))).await;
        expect(reply, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn bad_batch_bodies() {
    let server = TestServer::start().await;
    let url = server.url("/v1/eligibility/batch");
    for body in [
        "",
        "{",
        "not json",
        "[]",
        "null",
        r#"{"national_ids": "0012345679"}"#,
        r#"{"national_ids": [12345679]}"#,
        r#"{"ids": ["0012345679"]}"#,
        r#"{"national_ids": ["0012345679"], "extra": 1}"#,
        r#"{"national_ids": null}"#,
        r#"{"national_ids": ["0012345679"]} trailing"#,
    ] {
        expect(
            post(&url, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    let reply = request(
        Method::POST,
        &url,
        Some(b"{\"national_ids\": [\"\xff\"]}"),
        &[],
    )
    .await;
    expect(reply, StatusCode::BAD_REQUEST, "invalid_request").await;
    let too_many: Vec<String> = (0..101).map(|_| Fixture::MAIN.to_string()).collect();
    let reply = post(
        &url,
        &serde_json::json!({ "national_ids": too_many }).to_string(),
    )
    .await;
    expect(reply, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn oversize_bodies_get_413_with_or_without_a_declared_length() {
    let server = TestServer::start().await;
    let url = server.url("/v1/eligibility/batch");
    let big = format!(
        r#"{{"national_ids": ["{}"]}}"#,
        " ".repeat(eligd::http::MAX_BODY_BYTES)
    );
    expect(
        post(&url, &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // Chunked, with no Content-Length: the limit applies while reading.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut raw = b"POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..80 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b' '; 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&raw).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let server = TestServer::start().await;
    for path in [
        "/index.html",
        "/v1",
        "/v1/members",
        "/v1/members/0012345679",
        "/v1/members/0012345679/eligibility/",
        "/v2/members/0012345679/eligibility",
        "/healthz/",
        "/v1/eligibility",
        "/METRICS",
        "/v1/members//eligibility/x",
    ] {
        expect(
            get(&server.url(path)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    for (method, path, allow) in [
        (Method::POST, "/v1/members/0012345679/eligibility", "GET"),
        (Method::DELETE, "/v1/members/0012345679/eligibility", "GET"),
        (Method::PUT, "/v1/booklets/930123456789/eligibility", "GET"),
        (Method::GET, "/v1/eligibility/batch", "POST"),
        (Method::POST, "/healthz", "GET"),
        (Method::POST, "/readyz", "GET"),
        (Method::POST, "/metrics", "GET"),
    ] {
        let reply = request(method, &server.url(path), None, &[]).await;
        assert_eq!(reply.headers["allow"], allow);
        expect(reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }
}

/// Sends `bytes` on a new connection and reads until the server ends it: what it answered
/// (empty when it closed or reset the connection without a word). A connection the server
/// still holds open after 5 s is not a refusal: the test fails.
async fn refusal_of(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut response = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut response),
    )
    .await;
    assert!(
        ended.is_ok(),
        "the server held the connection open 5 s after {} bytes it cannot read (got {:?})",
        bytes.len(),
        String::from_utf8_lossy(&response)
    );
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn garbage_on_the_wire_is_refused_and_the_server_keeps_answering() {
    let server = TestServer::start().await;
    for garbage in [
        &b"\x00\x01\x02\x03 not http\r\n\r\n"[..],
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    ] {
        let response = refusal_of(server.addr, garbage).await;
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 4"),
            "{response}"
        );
    }
    // Oversized headers: a 4xx or the connection ended, never an answer, never held.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let response = refusal_of(server.addr, huge.as_bytes()).await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 4"),
        "{response}"
    );
    assert_eq!(get(&server.url("/healthz")).await.status, StatusCode::OK);
}
