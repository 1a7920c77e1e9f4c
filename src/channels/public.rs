//! `POST /v1/public/credit` (CONTRACT §4, "The page for people"): what the USSD answer shows,
//! as JSON, for the page and the installable app. No key; every request pays first, from its
//! client address's allowance (`--public-requests-per-minute`, IPv6 by `--ipv6-prefix`, the
//! address from `X-Forwarded-For` only behind `--trusted-proxies`) and the ceiling for all
//! addresses (`--public-requests-per-second`). The same pipeline as every channel: audited with channel `web`,
//! counted, carrying `data_as_of`. Never a name.

use serde::{Deserialize, Serialize};

use super::json::{error_body, json, refused};
use super::{Reply, Request};
use crate::app::AppState;
use crate::dates::{rfc3339_utc_ms, Day};
use crate::inquiry::{self, ApiError, Channel, Query};
use crate::jalali::JalaliDate;

pub const ROUTE: &str = "/v1/public/credit";

/// Exactly one of the two, as a string (an explicit `null` is not "absent").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    #[serde(default, deserialize_with = "present_string")]
    national_id: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    booklet_no: Option<String>,
}

/// A field that, when present, is a string (`null` is refused, not read as absent).
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

#[derive(Serialize)]
struct Credit<'a> {
    tracking_code: &'a str,
    eligible: bool,
    status: &'static str,
    coverage_until: Option<String>,
    coverage_until_jalali: Option<String>,
    data_as_of: String,
}

pub async fn credit(state: &AppState, request: Request) -> Reply {
    let session = match inquiry::begin(state, request.arrival(Channel::Web, ROUTE)) {
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
    let decided = session.decide(|| match serde_json::from_slice::<Ask>(&body) {
        Ok(Ask {
            national_id: Some(id),
            booklet_no: None,
        }) => Query::national_id(&id, Day::today()),
        Ok(Ask {
            national_id: None,
            booklet_no: Some(b),
        }) => Query {
            target: inquiry::parse_booklet(&b),
            as_of: Ok(Day::today()),
            services: Ok(Vec::new()),
        },
        Ok(_) => Query::refused(ApiError::InvalidRequest(
            "give exactly one of national_id and booklet_no".into(),
        )),
        Err(e) => Query::refused(ApiError::invalid_json(
            &e,
            "an object with exactly one of national_id and booklet_no, a string",
        )),
    });
    let tracking = decided.tracking.as_str();
    let reply = match &decided.result {
        Ok(answer) => {
            let d = &answer.evaluated.decision;
            let body = Credit {
                tracking_code: tracking,
                eligible: d.eligible(),
                status: d.outcome.as_str(),
                coverage_until: d.coverage_until.map(|c| c.to_string()),
                coverage_until_jalali: d
                    .coverage_until
                    .and_then(|c| JalaliDate::from_gregorian(c.date()))
                    .map(|j| j.to_string()),
                data_as_of: rfc3339_utc_ms(answer.data_as_of_ms),
            };
            match serde_json::to_vec(&body) {
                Ok(bytes) => json(200, bytes, decided.outcome()),
                Err(e) => {
                    let error = ApiError::Internal(e.to_string());
                    json(500, error_body(&error, tracking), error.code())
                }
            }
        }
        Err(e) => json(e.status(), error_body(e, tracking), e.code()),
    };
    reply.with_pipeline_headers(decided.result.as_ref().err(), session.allowance())
}
