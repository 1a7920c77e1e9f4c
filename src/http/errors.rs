//! Every error an HTTP client can receive, with its status and code, in one table
//! (CONTRACT §4), and its JSON body.

use hyper::StatusCode;

use crate::national_id::IdError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidNationalId(IdError),
    InvalidDate,
    InvalidService(String),
    InvalidRequest(String),
    MemberNotFound,
    BookletNotFound,
    NotFound,
    MethodNotAllowed { allow: &'static str },
    PayloadTooLarge { limit: usize },
    NotReady(&'static str),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidNationalId(_)
            | ApiError::InvalidDate
            | ApiError::InvalidService(_)
            | ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MemberNotFound | ApiError::BookletNotFound | ApiError::NotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidNationalId(_) => "invalid_national_id",
            ApiError::InvalidDate => "invalid_date",
            ApiError::InvalidService(_) => "invalid_service",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::MemberNotFound => "member_not_found",
            ApiError::BookletNotFound => "booklet_not_found",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NotReady(_) => "not_ready",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidNationalId(e) => e.to_string(),
            ApiError::InvalidDate => "date must be YYYY-MM-DD, a real day between 1900-01-01 and 2199-12-31".into(),
            ApiError::InvalidService(s) => format!(
                "unknown service {s:?}; services are outpatient, inpatient, pharmacy, paraclinic, dental"
            ),
            ApiError::InvalidRequest(m) => m.clone(),
            ApiError::MemberNotFound => "no member has this national ID".into(),
            ApiError::BookletNotFound => "no member holds this booklet number".into(),
            ApiError::NotFound => "no such route; see docs/openapi.yaml".into(),
            ApiError::MethodNotAllowed { allow } => format!("this route accepts {allow} only"),
            ApiError::PayloadTooLarge { limit } => format!("request bodies are limited to {limit} bytes"),
            ApiError::NotReady(reason) => format!("not ready: {reason}; retry shortly"),
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
    fn the_status_table_of_the_contract() {
        let table = [
            (
                ApiError::InvalidNationalId(IdError::Checksum),
                400,
                "invalid_national_id",
            ),
            (ApiError::InvalidDate, 400, "invalid_date"),
            (ApiError::InvalidService("x".into()), 400, "invalid_service"),
            (ApiError::InvalidRequest("x".into()), 400, "invalid_request"),
            (ApiError::MemberNotFound, 404, "member_not_found"),
            (ApiError::BookletNotFound, 404, "booklet_not_found"),
            (ApiError::NotFound, 404, "not_found"),
            (
                ApiError::MethodNotAllowed { allow: "GET" },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (ApiError::NotReady("loading"), 503, "not_ready"),
        ];
        for (error, status, code) in table {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
            let body = error.body("1");
            assert_eq!(body["code"], code);
            assert_eq!(body["tracking_code"], "1");
            assert!(!body["message"].as_str().unwrap().is_empty());
        }
    }
}
