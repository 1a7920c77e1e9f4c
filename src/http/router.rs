//! Routing: every request is matched to a route pattern and handed to its channel (the
//! inquiry routes) or answered here (the operations endpoints `/healthz`, `/readyz`,
//! `/metrics`, which need no key and carry no personal data). Every answer is counted under
//! its route pattern (never the raw path) and timed, and an answer that made audit lines
//! leaves only once they are written.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use crate::app::AppState;
use crate::channels::{self, driver, fhir, json, public, sms, ussd, Reply};
use crate::dates::Day;
use crate::inquiry::ApiError;

pub use crate::channels::json::MAX_BATCH;
pub use crate::channels::MAX_BODY_BYTES;

type HttpResponse = Response<Full<Bytes>>;

/// Which routes a listener serves (`--ops-listen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    /// Everything (one listener).
    All,
    /// The API, FHIR, the gateways and the page: what clients and people reach.
    Public,
    /// `/metrics`, `/status`, `/readyz`, `/healthz`: what operators and probes reach.
    Ops,
}

impl Routes {
    fn public(self) -> bool {
        self != Routes::Ops
    }

    fn ops(self) -> bool {
        self != Routes::Public
    }
}

/// Entry point for every request on a listener serving everything.
pub async fn handle(
    state: &'static AppState,
    request: Request<Incoming>,
    peer: super::Peer,
) -> Result<HttpResponse, Infallible> {
    handle_routes(state, Routes::All, request, peer).await
}

/// Entry point for every request on a listener serving `routes`.
pub async fn handle_routes(
    state: &'static AppState,
    routes: Routes,
    request: Request<Incoming>,
    peer: super::Peer,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    // No answer before its record: the audit lines this request made are written before
    // the answer leaves (group commit, `audit::completion`). Without an audit log there is
    // nothing to wait for, and no per-request completion to allocate.
    let (route, channel, reply) = match state.audit() {
        None => dispatch(state, routes, request, peer, started).await,
        Some(audit) => {
            let (decided, records) = crate::audit::completion::Captured::new(dispatch(
                state, routes, request, peer, started,
            ))
            .await;
            let written = match records {
                Some(records) => audit.wait_for(records).await,
                None => true,
            };
            if written {
                decided
            } else {
                let (route, channel, _) = decided;
                (route, channel, channels::audit_unavailable(state, channel))
            }
        }
    };
    state
        .metrics
        .count_request(route, channel, reply.outcome, started.elapsed());
    Ok(into_response(reply))
}

fn into_response(reply: Reply) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    // A 304 has no content, so no type (its reply's `content_type` is empty).
    if !reply.content_type.is_empty() {
        headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        );
    }
    // Nothing is stored by a cache unless it says so itself: only the page's files do
    // (`web`, `no-cache` with an ETag); every answer, error and operations endpoint is
    // `no-store`.
    if !reply
        .headers
        .iter()
        .any(|(name, _)| *name == hyper::header::CACHE_CONTROL)
    {
        headers.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    response
}

/// The parts of a request a channel reads (moved out of hyper's request, nothing copied).
fn channel_request(
    request: Request<Incoming>,
    peer: super::Peer,
    started: Instant,
) -> channels::Request {
    let (parts, body) = request.into_parts();
    channels::Request {
        peer: Some(peer.0),
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: Some(body),
        started,
    }
}

/// Up to this many path segments are matched; longer paths are unknown (FHIR's excepted).
const MAX_SEGMENTS: usize = 5;

/// The path's segments after the leading `/`, without allocating: the first
/// [`MAX_SEGMENTS`], and how many there are (one more than the limit when longer).
fn segments(path: &str) -> ([&str; MAX_SEGMENTS], usize) {
    let mut found = [""; MAX_SEGMENTS];
    let mut n = 0;
    for segment in path.split('/').skip(1) {
        if n == MAX_SEGMENTS {
            return (found, MAX_SEGMENTS + 1);
        }
        found[n] = segment;
        n += 1;
    }
    (found, n)
}

async fn dispatch(
    state: &AppState,
    routes: Routes,
    request: Request<Incoming>,
    peer: super::Peer,
    started: Instant,
) -> (&'static str, &'static str, Reply) {
    let request = channel_request(request, peer, started);
    let (found, n) = segments(request.uri.path());
    let known = &found[..n.min(MAX_SEGMENTS)];
    let whole = n <= MAX_SEGMENTS;
    let ops_path = matches!(known, ["healthz"] | ["status"] | ["readyz"] | ["metrics"]);
    if (ops_path && !routes.ops()) || (!ops_path && !routes.public()) {
        return ("unknown", "http", error(state, ApiError::NotFound));
    }
    match known {
        ["v1", "members", _, "eligibility"] if whole => (
            json::MEMBER_ROUTE,
            "http",
            driver::run(state, request, json::MEMBER).await,
        ),
        ["v1", "booklets", _, "eligibility"] if whole => (
            json::BOOKLET_ROUTE,
            "http",
            driver::run(state, request, json::BOOKLET).await,
        ),
        ["v1", "eligibility", "batch"] => (
            json::BATCH_ROUTE,
            "http",
            driver::run(state, request, json::Batch).await,
        ),
        ["ussd"] => {
            let ussd = ussd::Ussd {
                today: Day::today(),
            };
            (ussd::ROUTE, "ussd", driver::run(state, request, ussd).await)
        }
        ["sms"] => {
            let sms = sms::Sms {
                today: Day::today(),
            };
            (sms::ROUTE, "sms", driver::run(state, request, sms).await)
        }
        ["fhir", ..] => {
            // The FHIR routes take the request whole: their segments are copied first.
            let path = request.uri.path().to_owned();
            let rest: Vec<&str> = path.split('/').skip(2).collect();
            let (route, reply) = fhir::routes::route(state, &rest, request).await;
            (route, "fhir", reply)
        }
        ["v1", "public", "credit"] if state.public.is_some() => {
            let reply = driver::run(state, request, public::Credit).await;
            (public::ROUTE, "web", reply)
        }
        ["healthz"] => ("/healthz", "http", ops(state, &request.method, healthz)),
        ["status"] => ("/status", "http", ops(state, &request.method, status_page)),
        ["readyz"] => ("/readyz", "http", ops(state, &request.method, readyz)),
        ["metrics"] => {
            let accept = request.headers.get(hyper::header::ACCEPT);
            let handler = if crate::metrics::wants_openmetrics(accept.map(|a| a.as_bytes())) {
                metrics_openmetrics
            } else {
                metrics_classic
            };
            ("/metrics", "http", ops(state, &request.method, handler))
        }
        _ => {
            let path = request.uri.path();
            match crate::web::route(path).filter(|_| state.public.is_some()) {
                Some(route) => {
                    let reply = if request.method == Method::GET || request.method == Method::HEAD {
                        crate::web::file(path, &request.headers)
                    } else {
                        error(state, ApiError::MethodNotAllowed { allow: "GET" })
                    };
                    (route, "web", reply)
                }
                None => ("unknown", "http", error(state, ApiError::NotFound)),
            }
        }
    }
}

/// An operations endpoint: GET (or HEAD) only, no key.
fn ops(state: &AppState, method: &Method, handler: fn(&AppState) -> Reply) -> Reply {
    if method == Method::GET || method == Method::HEAD {
        handler(state)
    } else {
        error(state, ApiError::MethodNotAllowed { allow: "GET" })
    }
}

/// An error outside the inquiry routes (not an inquiry: neither audited nor counted as one).
fn error(state: &AppState, error: ApiError) -> Reply {
    let tracking = state.tracking.next();
    let body = serde_json::json!({ "error": error.body(tracking.as_str()) });
    Reply {
        status: error.status(),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        outcome: error.code(),
        headers: Vec::new(),
    }
    .with_pipeline_headers(Some(&error), None)
}

fn status_page(state: &AppState) -> Reply {
    Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: crate::status_page::page(state).into_bytes(),
        outcome: "ok",
        headers: Vec::new(),
    }
}

fn healthz(_: &AppState) -> Reply {
    Reply::text("ok\n".into(), "ok")
}

fn readyz(state: &AppState) -> Reply {
    let (status, body, outcome) = match state.readiness() {
        Ok(index) => (
            200,
            serde_json::json!({ "ready": true, "members": index.len() }),
            "ok",
        ),
        Err(reason) => (
            503,
            serde_json::json!({ "ready": false, "reason": reason }),
            "not_ready",
        ),
    };
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        outcome,
        headers: Vec::new(),
    }
}

fn metrics_openmetrics(state: &AppState) -> Reply {
    metrics(state, true)
}

fn metrics_classic(state: &AppState) -> Reply {
    metrics(state, false)
}

/// `/metrics` in OpenMetrics (what Prometheus asks for) or the classic text format.
fn metrics(state: &AppState, openmetrics: bool) -> Reply {
    let metrics = &state.metrics;
    if let Some(index) = state.index() {
        metrics.index_members.set(index.len() as i64);
        metrics
            .data_as_of_seconds
            .set(index.data_as_of_ms() as f64 / 1000.0);
        metrics
            .index_overlay_entries
            .set(index.overlay_len() as i64);
        metrics.index_base_bytes.set(index.base_size_bytes() as i64);
    }
    if let Some(feed) = state.feed() {
        let lag = feed.lag(std::time::Instant::now(), crate::dates::unix_ms());
        metrics.feed.lag_seconds.set(lag.as_secs_f64());
    }
    metrics.ready.set(i64::from(state.readiness().is_ok()));
    if let Some(audit) = state.audit() {
        metrics
            .access
            .audit_queue_depth
            .set(audit.queue_depth() as i64);
    }
    Reply {
        status: 200,
        content_type: if openmetrics {
            crate::metrics::OPENMETRICS
        } else {
            crate::metrics::CLASSIC
        },
        body: if openmetrics {
            metrics.encode().into_bytes()
        } else {
            crate::metrics::to_classic(&metrics.encode()).into_bytes()
        },
        outcome: "ok",
        headers: Vec::new(),
    }
}
