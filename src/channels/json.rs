//! The JSON API for providers (docs/openapi.yaml): one person by national ID or by booklet
//! number, and batches of up to 100 national IDs. Decodes the request, runs it through the
//! inquiry pipeline, and renders the answer (`json_answer.rs`) or the error body; a batch is
//! one admission that costs its size, then one pipeline decision per ID.

use serde::{Deserialize, Serialize};

use super::json_answer;
use super::{Reply, Request};
use crate::app::AppState;
use crate::dates::Day;
use crate::inquiry::{self, ApiError, Channel, Decided, Query, Refused, Session};

pub const MAX_BATCH: usize = 100;
pub const MEMBER_ROUTE: &str = "/v1/members/{national_id}/eligibility";
pub const BOOKLET_ROUTE: &str = "/v1/booklets/{booklet_no}/eligibility";
pub const BATCH_ROUTE: &str = "/v1/eligibility/batch";
const JSON: &str = "application/json";

pub(super) fn json(status: u16, body: Vec<u8>, outcome: &'static str) -> Reply {
    Reply {
        status,
        content_type: JSON,
        body,
        outcome,
        headers: Vec::new(),
    }
}

pub(super) fn error_body(error: &ApiError, tracking: &str) -> Vec<u8> {
    serde_json::json!({ "error": error.body(tracking) })
        .to_string()
        .into_bytes()
}

/// A refusal of the pipeline as a JSON error.
pub fn refused(refused: &Refused) -> Reply {
    let body = error_body(&refused.error, refused.tracking.as_str());
    super::refusal_reply(refused, refused.error.status(), JSON, body)
}

/// A percent-encoded path segment as text (borrowed when nothing was encoded).
fn decode_segment(segment: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

/// The `date` and `service` query parameters.
fn query_options(query: Option<&str>) -> (Option<String>, Option<String>) {
    let (mut date, mut service) = (None, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "date" => date = Some(value.into_owned()),
            "service" => service = Some(value.into_owned()),
            _ => {}
        }
    }
    (date, service)
}

/// `GET /v1/members/{national_id}/eligibility`.
pub fn member(state: &AppState, request: &Request, raw_id: &str) -> Reply {
    let query = request.query();
    single(state, request, MEMBER_ROUTE, || {
        let target = decode_segment(raw_id)
            .as_deref()
            .ok_or(ApiError::InvalidNationalId(
                crate::national_id::IdError::NotADigit,
            ))
            .and_then(inquiry::parse_national_id);
        with_options(target, query)
    })
}

/// `GET /v1/booklets/{booklet_no}/eligibility`.
pub fn booklet(state: &AppState, request: &Request, raw: &str) -> Reply {
    let query = request.query();
    single(state, request, BOOKLET_ROUTE, || {
        let target = decode_segment(raw)
            .ok_or_else(|| ApiError::InvalidRequest("a booklet number is 1 to 18 digits".into()))
            .and_then(|b| inquiry::parse_booklet(&b));
        with_options(target, query)
    })
}

fn with_options(target: Result<inquiry::Target, ApiError>, query: Option<&str>) -> Query {
    let (date, service) = query_options(query);
    Query::with_options(target, date.as_deref(), service.as_deref(), Day::today)
}

/// One person, by what `parse` reads from the request.
fn single(
    state: &AppState,
    request: &Request,
    route: &'static str,
    parse: impl FnOnce() -> Query,
) -> Reply {
    let session = match inquiry::begin(state, request.arrival(Channel::Json, route)) {
        Ok(session) => session,
        Err(r) => return refused(&r),
    };
    if !request.method_is(&hyper::Method::GET) {
        return refused(&session.refuse(ApiError::MethodNotAllowed { allow: "GET" }));
    }
    let decided = session.decide(parse);
    render(&session, &decided)
}

fn render(session: &Session<'_>, decided: &Decided<'_>) -> Reply {
    let tracking = decided.tracking.as_str();
    let reply = match &decided.result {
        Ok(answer) => json(
            200,
            json_answer::render(answer, tracking),
            decided.outcome(),
        ),
        Err(e) => json(e.status(), error_body(e, tracking), e.code()),
    };
    reply.with_pipeline_headers(decided.result.as_ref().err(), session.allowance())
}

/// A rendering failure: a bug, answered 500 (never 400: the request was fine).
fn internal(e: serde_json::Error, tracking: &str) -> Reply {
    tracing::error!(error = %e, tracking_code = tracking, "could not render an answer");
    let error = ApiError::Internal(e.to_string());
    json(500, error_body(&error, tracking), error.code())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    national_ids: Vec<String>,
    date: Option<String>,
    service: Option<String>,
}

/// What a batch body is, for an error that does not quote the body.
const BATCH_SHAPE: &str =
    "an object with national_ids (an array of at most 100 strings), and optionally date and service (strings), nothing else";

/// A batch entry that could not be answered: the ID as sent and the error.
#[derive(Serialize)]
struct BatchError<'a> {
    national_id: &'a str,
    error: serde_json::Value,
}

/// `POST /v1/eligibility/batch`: admitted once at the cost of one inquiry (so a malformed
/// or oversized batch, or a wrong method, has paid), charged the rest of one inquiry per ID
/// once parsed, then every ID is its own pipeline decision (own tracking code, own audit
/// record).
pub async fn batch(state: &AppState, request: Request) -> Reply {
    let mut session = match inquiry::begin(state, request.arrival(Channel::Json, BATCH_ROUTE)) {
        Ok(session) => session,
        Err(r) => return refused(&r),
    };
    if !request.method_is(&hyper::Method::POST) {
        return refused(&session.refuse(ApiError::MethodNotAllowed { allow: "POST" }));
    }
    let body = match request.read_body().await {
        Ok(body) => body,
        Err(e) => return refused(&session.refuse(e)),
    };
    let parsed: BatchRequest = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let error = ApiError::invalid_json(&e, BATCH_SHAPE);
            return refused(&session.refuse(error));
        }
    };
    if parsed.national_ids.len() > MAX_BATCH {
        let message = format!(
            "a batch holds at most {MAX_BATCH} national IDs, got {}",
            parsed.national_ids.len()
        );
        return refused(&session.refuse(ApiError::InvalidRequest(message)));
    }
    if let Err(r) = session.charge_rest(parsed.national_ids.len().max(1) as u32) {
        return refused(&r);
    }
    // The options are the same for every ID: a bad date or service refuses the batch as one
    // request.
    let options = inquiry::parse_date(parsed.date.as_deref(), Day::today).and_then(|as_of| {
        inquiry::parse_services(parsed.service.as_deref()).map(|services| (as_of, services))
    });
    let (as_of, services) = match options {
        Ok(options) => options,
        Err(e) => return refused(&session.refuse(e)),
    };
    if !session.has_index() {
        let error = ApiError::NotReady("the index is still loading");
        return refused(&session.refuse(error));
    }
    let decided: Vec<Decided<'_>> = parsed
        .national_ids
        .iter()
        .map(|raw| {
            session.decide(|| Query {
                target: inquiry::parse_national_id(raw),
                as_of: Ok(as_of),
                services: Ok(services.clone()),
            })
        })
        .collect();
    let mut body = Vec::with_capacity(16 + decided.len() * json_answer::TYPICAL_BYTES);
    body.extend_from_slice(b"{\"results\":[");
    for (i, (d, raw)) in decided.iter().zip(&parsed.national_ids).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match &d.result {
            Ok(answer) => json_answer::write(&mut body, answer, d.tracking.as_str()),
            Err(e) => {
                let entry = BatchError {
                    national_id: raw,
                    error: e.body(d.tracking.as_str()),
                };
                if let Err(e) = serde_json::to_writer(&mut body, &entry) {
                    return internal(e, state.tracking.next().as_str());
                }
            }
        }
    }
    body.extend_from_slice(b"]}");
    json(200, body, "ok").with_pipeline_headers(None, session.allowance())
}
