//! The JSON API for providers (docs/openapi.yaml): one person by national ID or by booklet
//! number, and batches of up to 100 national IDs. Decodes the request, runs it through the
//! inquiry pipeline, and renders the answer (`json_answer.rs`) or the error body; a batch is
//! one admission that costs its size, then one pipeline decision per ID.

use serde::{Deserialize, Serialize};

use bytes::Bytes;
use hyper::Method;

use super::driver::{self, Ask, Codec, Decoding};
use super::json_answer;
use super::{Reply, Request};
use crate::dates::Day;
use crate::inquiry::{self, ApiError, Channel, Decided, Query, Refused, Session, Target};

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

/// The `date` and `service` options of a single lookup (absent `date`: today, the clock
/// read only then).
fn with_options(target: Result<Target, ApiError>, query: Option<&str>) -> Query {
    let (date, service) = query_options(query);
    Query::with_options(target, date.as_deref(), service.as_deref(), Day::today)
}

/// The path segment after `/v1/members/` or `/v1/booklets/` (the router matched the path).
fn path_segment(request: &Request) -> &str {
    request.uri.path().split('/').nth(3).unwrap_or("")
}

/// One person by a path segment: `GET /v1/members/{national_id}/eligibility` ([`MEMBER`]) or
/// `GET /v1/booklets/{booklet_no}/eligibility` ([`BOOKLET`]), with the `date` and `service`
/// options.
pub struct Lookup {
    route: &'static str,
    /// Reads the (percent-decoded) segment; `None` when it is not UTF-8.
    target: fn(Option<&str>) -> Result<Target, ApiError>,
}

pub const MEMBER: Lookup = Lookup {
    route: MEMBER_ROUTE,
    target: |segment| {
        segment
            .ok_or(ApiError::InvalidNationalId(
                crate::national_id::IdError::NotADigit,
            ))
            .and_then(inquiry::parse_national_id)
    },
};

pub const BOOKLET: Lookup = Lookup {
    route: BOOKLET_ROUTE,
    target: |segment| {
        segment
            .ok_or_else(|| ApiError::InvalidRequest("a booklet number is 1 to 18 digits".into()))
            .and_then(inquiry::parse_booklet)
    },
};

impl Codec for Lookup {
    type Decoded = ();
    const CHANNEL: Channel = Channel::Json;
    const METHOD: Method = Method::GET;

    fn route(&self) -> &'static str {
        self.route
    }

    fn decode(&self, request: &Request, _: Option<Result<Bytes, ApiError>>) -> Decoding<()> {
        let target = (self.target)(decode_segment(path_segment(request)).as_deref());
        Ok(((), Ask::One(with_options(target, request.query()))))
    }

    fn render(&self, _: &Session<'_>, _: (), decided: &[Decided<'_>]) -> Reply {
        render_one(decided)
    }

    fn refused(&self, r: &Refused) -> Reply {
        refused(r)
    }
}

/// One decision as the JSON answer or error body.
fn render_one(decided: &[Decided<'_>]) -> Reply {
    let Some(decided) = decided.first() else {
        return internal_error("no decision to render");
    };
    let tracking = decided.tracking.as_str();
    match &decided.result {
        Ok(answer) => json(
            200,
            json_answer::render(answer, tracking),
            decided.outcome(),
        ),
        Err(e) => json(e.status(), error_body(e, tracking), e.code()),
    }
}

/// A bug (nothing to render): answered 500, never 400, since the request was fine.
fn internal_error(what: &str) -> Reply {
    tracing::error!(error = what, "could not render an answer");
    let error = ApiError::Internal(what.to_string());
    json(500, error_body(&error, ""), error.code())
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
pub struct Batch;

impl Codec for Batch {
    /// The IDs as sent (an entry that could not be answered repeats its own).
    type Decoded = Vec<String>;
    const CHANNEL: Channel = Channel::Json;
    const METHOD: Method = Method::POST;

    fn route(&self) -> &'static str {
        BATCH_ROUTE
    }

    fn decode(&self, _: &Request, body: Option<Result<Bytes, ApiError>>) -> Decoding<Vec<String>> {
        let body = driver::body(body)?;
        let parsed: BatchRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::invalid_json(&e, BATCH_SHAPE))?;
        if parsed.national_ids.len() > MAX_BATCH {
            return Err(ApiError::InvalidRequest(format!(
                "a batch holds at most {MAX_BATCH} national IDs, got {}",
                parsed.national_ids.len()
            )));
        }
        // The options are the same for every ID: a bad date or service refuses the batch as
        // one request.
        let options = inquiry::parse_date(parsed.date.as_deref(), Day::today).and_then(|as_of| {
            inquiry::parse_services(parsed.service.as_deref()).map(|services| (as_of, services))
        });
        let targets = parsed
            .national_ids
            .iter()
            .map(|raw| inquiry::parse_national_id(raw))
            .collect();
        Ok((parsed.national_ids, Ask::Batch { targets, options }))
    }

    fn render(&self, _: &Session<'_>, raw: Vec<String>, decided: &[Decided<'_>]) -> Reply {
        let mut body = Vec::with_capacity(16 + decided.len() * json_answer::TYPICAL_BYTES);
        body.extend_from_slice(b"{\"results\":[");
        for (i, (d, raw)) in decided.iter().zip(&raw).enumerate() {
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
                        return internal(e, d.tracking.as_str());
                    }
                }
            }
        }
        body.extend_from_slice(b"]}");
        json(200, body, "ok")
    }

    fn refused(&self, r: &Refused) -> Reply {
        refused(r)
    }
}
