//! Routing and the handlers of CONTRACT §4 and §5. Every answer is counted under its route
//! pattern (never the raw path) and timed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use super::answer::Answer;
use super::errors::ApiError;
use crate::app::AppState;
use crate::dates::Day;
use crate::index::Index;
use crate::inquiry::{self, Found};
use crate::member::{Booklet, Service};
use crate::metrics::{InquiryLabels, RequestLabels, RouteLabels};
use crate::national_id::NationalId;
use crate::tracking::TrackingCode;

/// The largest request body read; a full batch of 100 IDs in Persian digits is ~3 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_BATCH: usize = 100;
const CHANNEL: &str = "http";

type HttpResponse = Response<Full<Bytes>>;

/// What a handler produced: the response and the outcome label it is counted under.
struct Handled {
    response: HttpResponse,
    outcome: &'static str,
}

/// Entry point for every request.
pub async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let (route, handled) = dispatch(&state, request).await;
    let metrics = &state.metrics;
    let channel = channel_of(route);
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            channel,
            outcome: handled.outcome,
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&RouteLabels { route, channel })
        .observe(started.elapsed().as_secs_f64());
    Ok(handled.response)
}

async fn dispatch(state: &AppState, request: Request<Incoming>) -> (&'static str, Handled) {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = request.method().clone();
    match segments.as_slice() {
        ["v1", "members", id, "eligibility"] => {
            let route = "/v1/members/{national_id}/eligibility";
            (
                route,
                only(&method, "GET", state, |s| {
                    by_national_id(s, id, request.uri().query())
                }),
            )
        }
        ["v1", "booklets", number, "eligibility"] => {
            let route = "/v1/booklets/{booklet_no}/eligibility";
            (
                route,
                only(&method, "GET", state, |s| {
                    by_booklet(s, number, request.uri().query())
                }),
            )
        }
        ["v1", "eligibility", "batch"] => {
            let route = "/v1/eligibility/batch";
            if method != Method::POST {
                return (
                    route,
                    error(state, ApiError::MethodNotAllowed { allow: "POST" }),
                );
            }
            (route, batch(state, request).await)
        }
        ["ussd"] => (
            "/ussd",
            channel(state, &method, request, Channel::Ussd).await,
        ),
        ["sms"] => ("/sms", channel(state, &method, request, Channel::Sms).await),
        ["fhir", "r4", "CoverageEligibilityRequest"] => (
            "/fhir/r4/CoverageEligibilityRequest",
            channel(state, &method, request, Channel::Fhir).await,
        ),
        ["healthz"] => (
            "/healthz",
            only(&method, "GET", state, |_| {
                text(StatusCode::OK, "ok\n", "ok")
            }),
        ),
        ["readyz"] => ("/readyz", only(&method, "GET", state, readyz)),
        ["metrics"] => ("/metrics", only(&method, "GET", state, metrics)),
        _ => ("unknown", error(state, ApiError::NotFound)),
    }
}

fn only(
    method: &Method,
    allowed: &'static str,
    state: &AppState,
    handler: impl FnOnce(&AppState) -> Handled,
) -> Handled {
    // HEAD is GET without the body (hyper leaves the body out), as load balancers expect.
    if method.as_str() == allowed || (allowed == "GET" && *method == Method::HEAD) {
        handler(state)
    } else {
        error(state, ApiError::MethodNotAllowed { allow: allowed })
    }
}

fn json(status: StatusCode, body: Vec<u8>, outcome: &'static str) -> Handled {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Handled { response, outcome }
}

fn text(status: StatusCode, body: &'static str, outcome: &'static str) -> Handled {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Handled { response, outcome }
}

fn error(state: &AppState, error: ApiError) -> Handled {
    let tracking = state.tracking.next();
    let body = serde_json::json!({ "error": error.body(tracking.as_str()) });
    let mut handled = json(error.status(), body.to_string().into_bytes(), error.code());
    let headers = handled.response.headers_mut();
    match &error {
        ApiError::MethodNotAllowed { allow } => {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::NotReady(_) => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    handled
}

fn ready_index(state: &AppState) -> Result<Arc<Index>, ApiError> {
    state
        .index()
        .ok_or(ApiError::NotReady("the index is still loading"))
}

/// The `date` and `service` options of an inquiry.
struct Options {
    as_of: Day,
    service: Option<Service>,
}

fn parse_options(date: Option<&str>, service: Option<&str>) -> Result<Options, ApiError> {
    let as_of = match date {
        Some(d) => Day::parse_iso(d).map_err(|_| ApiError::InvalidDate)?,
        None => Day::today(),
    };
    let service = match service {
        Some(s) => Some(
            Service::parse(s)
                .ok_or_else(|| ApiError::InvalidService(s.chars().take(40).collect()))?,
        ),
        None => None,
    };
    Ok(Options { as_of, service })
}

fn query_options(query: Option<&str>) -> Result<Options, ApiError> {
    let (mut date, mut service) = (None, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "date" => date = Some(value.into_owned()),
            "service" => service = Some(value.into_owned()),
            _ => {}
        }
    }
    parse_options(date.as_deref(), service.as_deref())
}

fn decode_segment(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn answer_response(state: &AppState, found: &Found<'_>, options: &Options) -> Handled {
    let tracking = state.tracking.next();
    let answer = Answer::new(found, tracking.as_str(), options.as_of, options.service);
    let outcome = found.decision.outcome.as_str();
    count_inquiry(state, outcome);
    match serde_json::to_vec(&answer) {
        Ok(body) => json(StatusCode::OK, body, outcome),
        Err(e) => {
            tracing::error!(error = %e, "could not render an answer");
            error(
                state,
                ApiError::InvalidRequest("the answer could not be rendered".into()),
            )
        }
    }
}

fn count_inquiry(state: &AppState, outcome: &'static str) {
    state
        .metrics
        .inquiries
        .get_or_create(&InquiryLabels {
            channel: CHANNEL,
            outcome,
        })
        .inc();
}

fn failed_inquiry(state: &AppState, e: ApiError) -> Handled {
    count_inquiry(state, e.code());
    error(state, e)
}

fn by_national_id(state: &AppState, raw_id: &str, query: Option<&str>) -> Handled {
    let result = (|| {
        let id = decode_segment(raw_id).ok_or(ApiError::InvalidNationalId(
            crate::national_id::IdError::NotADigit,
        ))?;
        let id = NationalId::parse(&id).map_err(ApiError::InvalidNationalId)?;
        let options = query_options(query)?;
        let index = ready_index(state)?.view();
        let found = inquiry::by_national_id(&index, id, options.as_of, options.service)
            .ok_or(ApiError::MemberNotFound)?;
        Ok(answer_response(state, &found, &options))
    })();
    result.unwrap_or_else(|e| failed_inquiry(state, e))
}

fn by_booklet(state: &AppState, raw: &str, query: Option<&str>) -> Handled {
    let result = (|| {
        let booklet = decode_segment(raw)
            .and_then(|b| Booklet::parse(b.trim()))
            .ok_or_else(|| ApiError::InvalidRequest("a booklet number is 1 to 18 digits".into()))?;
        let options = query_options(query)?;
        let index = ready_index(state)?.view();
        let member = index
            .get_by_booklet(booklet)
            .ok_or(ApiError::BookletNotFound)?;
        let found = inquiry::evaluate_found(&index, member, options.as_of, options.service);
        Ok(answer_response(state, &found, &options))
    })();
    result.unwrap_or_else(|e| failed_inquiry(state, e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    national_ids: Vec<String>,
    date: Option<String>,
    service: Option<String>,
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large);
    }
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(e) => Err(ApiError::InvalidRequest(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// The channels of `channels/`, all `POST` with a body.
#[derive(Clone, Copy)]
enum Channel {
    Ussd,
    Sms,
    Fhir,
}

/// The `channel` label of a route's metrics.
fn channel_of(route: &str) -> &'static str {
    match route {
        "/ussd" => "ussd",
        "/sms" => "sms",
        "/fhir/r4/CoverageEligibilityRequest" => "fhir",
        _ => CHANNEL,
    }
}

async fn channel(
    state: &AppState,
    method: &Method,
    request: Request<Incoming>,
    which: Channel,
) -> Handled {
    if *method != Method::POST {
        return error(state, ApiError::MethodNotAllowed { allow: "POST" });
    }
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(request).await;
    let today = Day::today();
    let reply = match which {
        Channel::Ussd => crate::channels::ussd::reply(state, body.as_deref().ok(), today),
        Channel::Sms => crate::channels::sms::reply(state, body.as_deref().ok(), today),
        Channel::Fhir => crate::channels::fhir::coverage_eligibility(
            state,
            content_type.as_deref(),
            body.as_deref(),
            today,
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if reply.status == 503 {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Handled {
        response,
        outcome: reply.outcome,
    }
}

async fn batch(state: &AppState, request: Request<Incoming>) -> Handled {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(e) => return error(state, e),
    };
    let parsed: BatchRequest = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return error(
                state,
                ApiError::InvalidRequest(format!("invalid JSON body: {e}")),
            )
        }
    };
    if parsed.national_ids.len() > MAX_BATCH {
        let message = format!(
            "a batch holds at most {MAX_BATCH} national IDs, got {}",
            parsed.national_ids.len()
        );
        return error(state, ApiError::InvalidRequest(message));
    }
    let options = match parse_options(parsed.date.as_deref(), parsed.service.as_deref()) {
        Ok(options) => options,
        Err(e) => return error(state, e),
    };
    let index = match ready_index(state) {
        Ok(index) => index.view(),
        Err(e) => return error(state, e),
    };
    let looked_up: Vec<(TrackingCode, Result<Found<'_>, ApiError>)> = parsed
        .national_ids
        .iter()
        .map(|raw| {
            let found = NationalId::parse(raw)
                .map_err(ApiError::InvalidNationalId)
                .and_then(|id| {
                    inquiry::by_national_id(&index, id, options.as_of, options.service)
                        .ok_or(ApiError::MemberNotFound)
                });
            count_inquiry(
                state,
                found
                    .as_ref()
                    .map_or_else(ApiError::code, |f| f.decision.outcome.as_str()),
            );
            (state.tracking.next(), found)
        })
        .collect();
    let results: Vec<BatchEntry<'_>> = looked_up
        .iter()
        .zip(&parsed.national_ids)
        .map(|((tracking, found), raw)| match found {
            Ok(found) => BatchEntry::Answer(Box::new(Answer::new(
                found,
                tracking.as_str(),
                options.as_of,
                options.service,
            ))),
            Err(e) => BatchEntry::Error {
                national_id: raw,
                error: e.body(tracking.as_str()),
            },
        })
        .collect();
    match serde_json::to_vec(&BatchResponse { results }) {
        Ok(body) => json(StatusCode::OK, body, "ok"),
        Err(e) => error(
            state,
            ApiError::InvalidRequest(format!("the answer could not be rendered: {e}")),
        ),
    }
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    results: Vec<BatchEntry<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BatchEntry<'a> {
    Answer(Box<Answer<'a>>),
    Error {
        national_id: &'a str,
        error: serde_json::Value,
    },
}

fn readyz(state: &AppState) -> Handled {
    match state.readiness() {
        Ok(index) => {
            let body = serde_json::json!({ "ready": true, "members": index.len() });
            json(StatusCode::OK, body.to_string().into_bytes(), "ok")
        }
        Err(reason) => {
            let body = serde_json::json!({ "ready": false, "reason": reason });
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                body.to_string().into_bytes(),
                "not_ready",
            )
        }
    }
}

fn metrics(state: &AppState) -> Handled {
    if let Some(index) = state.index() {
        state.metrics.index_members.set(index.len() as i64);
        state
            .metrics
            .index_overlay_entries
            .set(index.overlay_len() as i64);
        state
            .metrics
            .index_base_bytes
            .set(index.base_size_bytes() as i64);
    }
    if let Some(feed) = state.feed() {
        let lag = feed.lag(std::time::Instant::now(), crate::app::unix_ms());
        state.metrics.feed_lag_seconds.set(lag.as_secs_f64());
    }
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Handled {
        response,
        outcome: "ok",
    }
}
