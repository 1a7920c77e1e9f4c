//! `POST /v1/public/credit` (docs/contract.md §4, "The page for people"): what the USSD answer shows,
//! as JSON, for the page and the installable app. No key; every request pays first, from its
//! client address's allowance (`--public-requests-per-minute`, IPv6 by `--ipv6-prefix`, the
//! address from `X-Forwarded-For` only behind `--trusted-proxies`) and the ceiling for all
//! addresses (`--public-requests-per-second`). The same pipeline as every channel: audited with channel `web`,
//! counted, carrying `data_as_of`. Never a name.

use serde::{Deserialize, Serialize};

use bytes::Bytes;
use hyper::Method;

use super::driver::{self, Codec, Decoding};
use super::json::{error_body, json, refused};
use super::{Reply, Request};
use crate::dates::{rfc3339_utc_ms, Day};
use crate::inquiry::{self, ApiError, Channel, Decided, Query, Refused, Session};
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
struct CreditBody<'a> {
    tracking_code: &'a str,
    eligible: bool,
    status: &'static str,
    coverage_until: Option<String>,
    coverage_until_jalali: Option<String>,
    data_as_of: String,
}

/// `POST /v1/public/credit`.
pub struct Credit;

impl Codec for Credit {
    type Decoded = ();
    const CHANNEL: Channel = Channel::Web;
    const METHOD: Method = Method::POST;

    fn route(&self) -> &'static str {
        ROUTE
    }

    fn decode(&self, _: &Request, body: Option<Result<Bytes, ApiError>>) -> Decoding<()> {
        let body = driver::body(body)?;
        let query = match serde_json::from_slice::<Ask>(&body) {
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
        };
        Ok(((), driver::Ask::One(query)))
    }

    fn render(&self, _: &Session<'_>, _: (), decided: &[Decided<'_>]) -> Reply {
        let Some(decided) = decided.first() else {
            let error = ApiError::Internal("no decision to render".into());
            return json(500, error_body(&error, ""), error.code());
        };
        let tracking = decided.tracking.as_str();
        match &decided.result {
            Ok(answer) => {
                let d = &answer.evaluated.decision;
                let body = CreditBody {
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
        }
    }

    fn refused(&self, r: &Refused) -> Reply {
        refused(r)
    }
}
