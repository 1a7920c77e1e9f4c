//! Every way an inquiry can be refused, with its code and HTTP status, in one table
//! (docs/openapi.yaml lists them). Channels render a refusal in their own form (a JSON error
//! body, a FHIR OperationOutcome, a USSD or SMS text) but never choose another status: the
//! status comes from here (the text channels answer their gateways 200 for everything but
//! a missing or wrong key, see [`super::Channel::http_status`]).

use crate::auth;
use crate::national_id::IdError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidNationalId(IdError),
    InvalidDate,
    InvalidService(String),
    InvalidRequest(String),
    Unauthorized(auth::KeyRefusal),
    /// A valid key used on a channel it was not issued for.
    Forbidden {
        key_channel: &'static str,
    },
    MemberNotFound,
    BookletNotFound,
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    UnsupportedMediaType(String),
    /// No answer format the client accepts (FHIR: XML asked for).
    NotAcceptable(String),
    PayloadTooLarge {
        limit: usize,
    },
    RateLimited(Limited),
    /// A bug: never for bad input.
    Internal(String),
    NotReady(&'static str),
    /// The audit log cannot take the record of this inquiry: no record, no answer.
    AuditUnavailable,
}

/// Whose allowance ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The client key's bucket; retry after this many seconds.
    Key { retry_after_secs: u64 },
    /// The request costs more than the key's bucket can ever hold (a batch above its burst).
    AboveBurst { cost: u32, burst: u32 },
    /// The phone number's allowance (USSD and SMS).
    Phone { retry_after_secs: u64 },
    /// The client address's allowance (the public endpoint, and requests without a valid
    /// key).
    Address { retry_after_secs: u64 },
    /// The public endpoint's ceiling for all addresses together.
    Busy,
}

/// Every code of the table, in status order (docs/openapi.yaml lists each; a test keeps the
/// two in step).
pub const CODES: [&str; 17] = [
    "invalid_national_id",
    "invalid_date",
    "invalid_service",
    "invalid_request",
    "unauthorized",
    "forbidden",
    "member_not_found",
    "booklet_not_found",
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
    "internal",
    "not_ready",
    "audit_unavailable",
];

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidNationalId(_)
            | ApiError::InvalidDate
            | ApiError::InvalidService(_)
            | ApiError::InvalidRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::MemberNotFound | ApiError::BookletNotFound | ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::RateLimited(_) => 429,
            ApiError::Internal(_) => 500,
            ApiError::NotReady(_) | ApiError::AuditUnavailable => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidNationalId(_) => "invalid_national_id",
            ApiError::InvalidDate => "invalid_date",
            ApiError::InvalidService(_) => "invalid_service",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::MemberNotFound => "member_not_found",
            ApiError::BookletNotFound => "booklet_not_found",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Internal(_) => "internal",
            ApiError::NotReady(_) => "not_ready",
            ApiError::AuditUnavailable => "audit_unavailable",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidNationalId(e) => e.to_string(),
            ApiError::InvalidDate => "date must be YYYY-MM-DD, a real day between 1900-01-01 and 2199-12-31".into(),
            // The value sent is not quoted: no error repeats a header or a query value.
            ApiError::InvalidService(_) => {
                "unknown service; services are outpatient, inpatient, pharmacy, paraclinic, dental".into()
            }
            ApiError::InvalidRequest(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::NotAcceptable(m) => m.clone(),
            ApiError::Unauthorized(why) => why.to_string(),
            ApiError::Forbidden { key_channel } => {
                format!("this key is issued for the {key_channel} channel, not this route")
            }
            ApiError::MemberNotFound => "no member has this national ID".into(),
            ApiError::BookletNotFound => "no member holds this booklet number".into(),
            ApiError::NotFound => "no such route; see docs/openapi.yaml".into(),
            ApiError::MethodNotAllowed { allow } => format!("this route accepts {allow} only"),
            ApiError::PayloadTooLarge { limit } => format!("request bodies are limited to {limit} bytes"),
            ApiError::RateLimited(Limited::Key { retry_after_secs }) => {
                format!("this key's rate limit is reached; retry after {retry_after_secs} s")
            }
            ApiError::RateLimited(Limited::AboveBurst { cost, burst }) => format!(
                "this request costs {cost} inquiries, more than this key's burst of {burst}; send fewer at once"
            ),
            ApiError::RateLimited(Limited::Phone { retry_after_secs }) => {
                format!("too many inquiries from this phone number; retry after {retry_after_secs} s")
            }
            ApiError::RateLimited(Limited::Address { retry_after_secs }) => {
                format!("too many requests from this address; retry after {retry_after_secs} s")
            }
            ApiError::RateLimited(Limited::Busy) => {
                "too many inquiries on this service right now; retry in a few seconds".into()
            }
            ApiError::Internal(_) => "an internal error; the tracking code identifies it to support".into(),
            ApiError::NotReady(reason) => format!("not ready: {reason}; retry shortly"),
            ApiError::AuditUnavailable => {
                "the audit log cannot be written, so no inquiry is answered; retry shortly".into()
            }
        }
    }

    /// A request body that is not the JSON `expected`: the kind of problem and where, never
    /// the parser's own words (they quote the input: a value, a field name).
    pub fn invalid_json(e: &serde_json::Error, expected: &str) -> ApiError {
        use serde_json::error::Category;
        let (line, column) = (e.line(), e.column());
        ApiError::InvalidRequest(match e.classify() {
            Category::Eof => "invalid JSON body: it ends before its JSON does".to_string(),
            Category::Syntax | Category::Io => {
                format!("invalid JSON body: not JSON (line {line}, column {column})")
            }
            Category::Data => {
                format!("invalid JSON body: expected {expected} (line {line}, column {column})")
            }
        })
    }

    /// Seconds a client should wait before asking again, when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited(Limited::Key { retry_after_secs })
            | ApiError::RateLimited(Limited::Phone { retry_after_secs })
            | ApiError::RateLimited(Limited::Address { retry_after_secs }) => {
                Some(*retry_after_secs)
            }
            ApiError::RateLimited(Limited::Busy) => Some(2),
            ApiError::NotReady(_) | ApiError::AuditUnavailable => Some(1),
            _ => None,
        }
    }

    /// The `{"code", "message", "tracking_code"}` object.
    pub fn body(&self, tracking_code: &str) -> serde_json::Value {
        serde_json::json!({ "code": self.code(), "message": self.message(), "tracking_code": tracking_code })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table() {
        let table = [
            (
                ApiError::InvalidNationalId(IdError::Checksum),
                400,
                "invalid_national_id",
            ),
            (ApiError::InvalidDate, 400, "invalid_date"),
            (ApiError::InvalidService("x".into()), 400, "invalid_service"),
            (ApiError::InvalidRequest("x".into()), 400, "invalid_request"),
            (
                ApiError::Unauthorized(auth::KeyRefusal::Missing),
                401,
                "unauthorized",
            ),
            (ApiError::Forbidden { key_channel: "sms" }, 403, "forbidden"),
            (ApiError::MemberNotFound, 404, "member_not_found"),
            (ApiError::BookletNotFound, 404, "booklet_not_found"),
            (ApiError::NotFound, 404, "not_found"),
            (
                ApiError::MethodNotAllowed { allow: "GET" },
                405,
                "method_not_allowed",
            ),
            (ApiError::NotAcceptable("x".into()), 406, "not_acceptable"),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::RateLimited(Limited::Key {
                    retry_after_secs: 2,
                }),
                429,
                "rate_limited",
            ),
            (ApiError::Internal("bug".into()), 500, "internal"),
            (ApiError::NotReady("loading"), 503, "not_ready"),
            (ApiError::AuditUnavailable, 503, "audit_unavailable"),
        ];
        let codes: Vec<&str> = table.iter().map(|(_, _, code)| *code).collect();
        assert_eq!(codes, CODES, "CODES lists the table's codes in its order");
        for (error, status, code) in table {
            assert_eq!(error.status(), status);
            assert_eq!(error.code(), code);
            let body = error.body("1");
            assert_eq!(body["code"], code);
            assert_eq!(body["tracking_code"], "1");
            assert!(!body["message"].as_str().unwrap().is_empty());
        }
        assert!(
            !ApiError::InvalidService("0012345679".into())
                .message()
                .contains("0012345679"),
            "the service sent is not quoted"
        );
        assert!(
            !ApiError::Internal("the private detail".into())
                .message()
                .contains("private"),
            "an internal error says nothing of its cause"
        );
    }

    #[test]
    fn a_bad_json_body_is_described_without_quoting_it() {
        let expected = "an object with national_ids";
        for (body, needle) in [
            (
                "{\"national_ids\": \"0012345679\"}",
                "expected an object with national_ids (line 1, column 29)",
            ),
            ("{\"0012345679\": 1}", "expected an object"),
            (
                "{\"national_ids\": [0012345679]}",
                "not JSON (line 1, column 20)",
            ),
            ("{\"national_ids\": [\"0012345679\"", "ends before"),
            ("0012345679 x", "not JSON"),
        ] {
            let e = serde_json::from_str::<std::collections::BTreeMap<String, Vec<String>>>(body)
                .unwrap_err();
            let error = ApiError::invalid_json(&e, expected);
            let message = error.message();
            assert_eq!(error.code(), "invalid_request");
            assert!(message.contains(needle), "{body}: {message}");
            assert!(!message.contains("12345679"), "{body}: {message}");
        }
    }
}
