//! Routing: every request is matched to a route pattern and handed to its channel (the
//! inquiry routes) or answered here (the operations endpoints `/healthz`, `/readyz`,
//! `/metrics`, which need no key and carry no personal data). Every answer is counted under
//! its route pattern (never the raw path) and timed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use crate::app::AppState;
use crate::channels::{self, fhir_routes, json, public, sms, ussd, Reply};
use crate::inquiry::ApiError;
use crate::metrics::{RequestLabels, RouteLabels};

pub use crate::channels::json::MAX_BATCH;
pub use crate::channels::MAX_BODY_BYTES;

type HttpResponse = Response<Full<Bytes>>;

/// Entry point for every request.
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let (route, channel, reply) = dispatch(&state, request, started).await;
    let metrics = &state.metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            channel,
            outcome: reply.outcome,
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&RouteLabels { route, channel })
        .observe(started.elapsed().as_secs_f64());
    Ok(into_response(reply))
}

fn into_response(reply: Reply) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    response
}

/// The parts of a request a channel reads.
fn channel_request(request: Request<Incoming>, started: Instant) -> channels::Request {
    let (parts, body) = request.into_parts();
    let header = |name| parts.headers.get(name);
    channels::Request {
        content_type: header(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        content_length: header(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        authorization: header(hyper::header::AUTHORIZATION).cloned(),
        query: parts.uri.query().map(str::to_owned),
        peer: parts.extensions.get::<super::Peer>().map(|p| p.0),
        forwarded_for: header(hyper::header::HeaderName::from_static("x-forwarded-for"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        accept: header(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        method: parts.method,
        body,
        started,
    }
}

async fn dispatch(
    state: &AppState,
    request: Request<Incoming>,
    started: Instant,
) -> (&'static str, &'static str, Reply) {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["v1", "members", id, "eligibility"] => {
            let request = channel_request(request, started);
            (
                json::MEMBER_ROUTE,
                "http",
                json::member(state, &request, id),
            )
        }
        ["v1", "booklets", number, "eligibility"] => {
            let request = channel_request(request, started);
            (
                json::BOOKLET_ROUTE,
                "http",
                json::booklet(state, &request, number),
            )
        }
        ["v1", "eligibility", "batch"] => (
            json::BATCH_ROUTE,
            "http",
            json::batch(state, channel_request(request, started)).await,
        ),
        ["ussd"] => (
            ussd::ROUTE,
            "ussd",
            ussd::handle(state, channel_request(request, started)).await,
        ),
        ["sms"] => (
            sms::ROUTE,
            "sms",
            sms::handle(state, channel_request(request, started)).await,
        ),
        ["fhir", rest @ ..] => {
            let rest: Vec<&str> = rest.to_vec();
            let (route, reply) =
                fhir_routes::route(state, &rest, channel_request(request, started)).await;
            (route, "fhir", reply)
        }
        ["v1", "public", "credit"] if state.public.is_some() => (
            public::ROUTE,
            "web",
            public::credit(state, channel_request(request, started)).await,
        ),
        ["healthz"] => ("/healthz", "http", ops(state, request.method(), healthz)),
        ["status"] => ("/status", "http", ops(state, request.method(), status_page)),
        ["readyz"] => ("/readyz", "http", ops(state, request.method(), readyz)),
        ["metrics"] => {
            let accept = request.headers().get(hyper::header::ACCEPT);
            let handler = if crate::metrics::wants_openmetrics(accept.map(|a| a.as_bytes())) {
                metrics_openmetrics
            } else {
                metrics_classic
            };
            ("/metrics", "http", ops(state, request.method(), handler))
        }
        _ if state.public.is_some() && crate::web::route(&path).is_some() => {
            let route = crate::web::route(&path).unwrap_or("unknown");
            let reply = if request.method() == Method::GET || request.method() == Method::HEAD {
                crate::web::file(&path)
            } else {
                error(state, ApiError::MethodNotAllowed { allow: "GET" })
            };
            (route, "web", reply)
        }
        _ => ("unknown", "http", error(state, ApiError::NotFound)),
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
        body: crate::status::page(state).into_bytes(),
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
        let lag = feed.lag(std::time::Instant::now(), crate::app::unix_ms());
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
