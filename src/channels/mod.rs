//! The channels: the JSON API for providers ([`json`]), HL7 FHIR R4 for hospitals
//! ([`fhir`]), USSD and SMS for people on any phone ([`ussd`], [`sms`]), and the page for
//! people ([`public`]). Each only decodes its request and renders what the inquiry pipeline
//! (`inquiry`) decided or refused, in its own form ([`driver::Codec`]); one driver runs every
//! other step for all of them ([`driver::run`]). None decides anything, and none chooses a
//! status the error table does not give. All texts shown to people live in one catalogue
//! ([`texts`]).

pub mod driver;
pub mod fhir;
pub mod json;
mod json_answer;
pub mod public;
pub mod sms;
pub mod texts;
pub mod ussd;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderName, HeaderValue};

use crate::app::AppState;
use crate::inquiry::{ApiError, Channel, Refused};
use crate::limits::Allowance;

/// The largest request body read; a full batch of 100 IDs in Persian digits is ~3 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client that has not sent its whole body by then is refused.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a channel answers: status, body, content type, headers of its own (`Allow`,
/// `Retry-After`, `WWW-Authenticate`, the `RateLimit` fields), and the outcome it is counted
/// under in `eligd_requests_total` (an inquiry status, or a code like `invalid_national_id`,
/// `menu`, `rate_limited`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub outcome: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// A `text/plain` answer with HTTP 200 (USSD and SMS gateways get 200 for every answer
    /// meant for a person).
    pub fn text(body: String, outcome: &'static str) -> Reply {
        Reply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
            outcome,
            headers: Vec::new(),
        }
    }

    /// Adds the headers a refusal or an answer carries: `Retry-After` when a wait is known,
    /// `WWW-Authenticate` on 401, `Allow` on 405, and the IETF httpapi rate-limit fields
    /// (`RateLimit-Policy`, `RateLimit`) when the client's key is refused for its rate or has
    /// used more than half its burst (a client well within its limit is not sent them: they
    /// are 70 bytes on every answer, measurably slower at full load).
    pub fn with_pipeline_headers(
        mut self,
        error: Option<&ApiError>,
        allowance: Option<Allowance>,
    ) -> Reply {
        if let Some(error) = error {
            if let Some(secs) = error.retry_after() {
                self.headers
                    .push((hyper::header::RETRY_AFTER, HeaderValue::from(secs)));
            }
            if let ApiError::Unauthorized(_) = error {
                self.headers.push((
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"eligd\""),
                ));
            }
            if let ApiError::MethodNotAllowed { allow } = error {
                self.headers
                    .push((hyper::header::ALLOW, HeaderValue::from_static(allow)));
            }
        }
        let near_limit = |a: &Allowance| {
            a.remaining < a.limit / 2 || matches!(error, Some(ApiError::RateLimited(_)))
        };
        if let Some(a) = allowance.filter(near_limit) {
            let window = u64::from(a.limit.div_ceil(a.rate.max(1)));
            let fields = [
                (
                    "ratelimit-policy",
                    "\"key\";q=",
                    u64::from(a.limit),
                    ";w=",
                    window,
                ),
                (
                    "ratelimit",
                    "\"key\";r=",
                    u64::from(a.remaining),
                    ";t=",
                    a.reset_secs,
                ),
            ];
            for (name, first, x, second, y) in fields {
                let (mut xs, mut ys) = (itoa::Buffer::new(), itoa::Buffer::new());
                let value = [first, xs.format(x), second, ys.format(y)].concat();
                if let Ok(value) = HeaderValue::from_str(&value) {
                    self.headers.push((HeaderName::from_static(name), value));
                }
            }
        }
        self
    }
}

/// A refusal's status on `channel`, with the pipeline's headers; `body` renders it.
pub fn refusal_reply(
    refused: &Refused,
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
) -> Reply {
    Reply {
        status,
        content_type,
        body,
        outcome: refused.error.code(),
        headers: Vec::new(),
    }
    .with_pipeline_headers(Some(&refused.error), refused.allowance)
}

/// The answer instead of one whose audit line could not be written (the write failed after
/// the inquiry was decided): 503 `audit_unavailable` in the channel's own form. An answer
/// that is not recorded is not given.
pub fn audit_unavailable(state: &AppState, channel: &str) -> Reply {
    let error = ApiError::AuditUnavailable;
    let tracking = state.tracking.next();
    match channel {
        "fhir" => fhir::outcome_reply(state, &error),
        "ussd" | "sms" => {
            let prefix = if channel == "ussd" { "END " } else { "" };
            let text = texts::refusal(texts::Lang::Fa, &error, tracking.as_str());
            Reply::text([prefix, &text].concat(), error.code())
        }
        _ => json::json(
            error.status(),
            json::error_body(&error, tracking.as_str()),
            error.code(),
        )
        .with_pipeline_headers(Some(&error), None),
    }
}

/// A refusal on a gateway channel (USSD, SMS) before its form is read: a Persian text after
/// `prefix` (the language is not known yet), with the channel's status (200: gateways show
/// the text to the person).
pub fn gateway_refused(channel: Channel, prefix: &str, r: &Refused) -> Reply {
    let text = [
        prefix,
        &texts::refusal(texts::Lang::Fa, &r.error, r.tracking.as_str()),
    ];
    refusal_reply(
        r,
        channel.http_status(&r.error),
        "text/plain; charset=utf-8",
        text.concat().into_bytes(),
    )
}

/// Reads a request body of at most [`MAX_BODY_BYTES`] within [`BODY_READ_TIMEOUT`].
pub async fn read_body(
    content_length: Option<u64>,
    body: hyper::body::Incoming,
) -> Result<Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    if content_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large);
    }
    let collected = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| ApiError::InvalidRequest("the request body did not arrive in time".into()))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(e) => Err(ApiError::InvalidRequest(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// The two fields a USSD or SMS gateway sends that matter: who asks and what they typed; and
/// whether the form is one a gateway sends at all (every field once, all of it readable, the
/// required fields there).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GatewayForm {
    pub phone: Option<String>,
    pub text: Option<String>,
    /// The names seen, each once; a repeated name is noted in `repeated`.
    seen: Vec<String>,
    repeated: bool,
    undecodable: bool,
}

/// The outcome a malformed gateway callback is counted under (`eligd_requests_total`).
pub const MALFORMED: &str = "malformed_callback";

impl GatewayForm {
    /// Reads `body` (application/x-www-form-urlencoded); `phone_field` is the gateway's
    /// name for the caller's number (`phoneNumber` for USSD, `from` for SMS).
    pub(crate) fn parse(body: &[u8], phone_field: &str) -> GatewayForm {
        let mut form = GatewayForm {
            undecodable: std::str::from_utf8(body).is_err(),
            ..GatewayForm::default()
        };
        for (key, value) in form_urlencoded::parse(body) {
            // Percent-escapes of bytes that are not UTF-8 decode to U+FFFD.
            form.undecodable |= key.contains('\u{FFFD}') || value.contains('\u{FFFD}');
            if form.seen.iter().any(|k| *k == key) {
                form.repeated = true;
                continue;
            }
            form.seen.push(key.to_string());
            if key == phone_field {
                form.phone = Some(value.into_owned());
            } else if key == "text" {
                form.text = Some(value.into_owned());
            }
        }
        form
    }

    /// `Some(MALFORMED)` when the body is not a form a gateway sends: undecodable, a field
    /// repeated, or one of `required` missing or empty.
    pub(crate) fn malformed(&self, required: &[&str]) -> Option<&'static str> {
        let missing = required.iter().any(|name| {
            !self.seen.iter().any(|k| k == name) || (*name != "text" && self.field_is_empty(name))
        });
        (self.undecodable || self.repeated || missing).then_some(MALFORMED)
    }

    fn field_is_empty(&self, name: &str) -> bool {
        match name {
            "phoneNumber" | "from" => self.phone.as_deref().is_none_or(|p| p.trim().is_empty()),
            _ => false,
        }
    }
}

/// What the router hands a channel: the request's parts that channels read.
pub struct Request {
    pub method: hyper::Method,
    /// The request target and headers as hyper parsed them (moved, not copied: a channel
    /// reads the few it needs through the accessors below).
    pub uri: hyper::Uri,
    pub headers: hyper::HeaderMap,
    /// The connection's peer address (the per-address limits' key, unless behind
    /// `--trusted-proxies`).
    pub peer: Option<std::net::IpAddr>,
    /// The body, until it is read ([`Request::read_body`]).
    pub body: Option<hyper::body::Incoming>,
    pub started: std::time::Instant,
}

impl Request {
    fn header(&self, name: hyper::header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn authorization(&self) -> Option<&[u8]> {
        self.headers
            .get(hyper::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(hyper::header::CONTENT_TYPE)
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// `Accept`, read by the FHIR routes (JSON only).
    pub fn accept(&self) -> Option<&str> {
        self.header(hyper::header::ACCEPT)
    }

    /// How this request arrived, for the pipeline's admission.
    pub fn arrival(
        &self,
        channel: crate::inquiry::Channel,
        route: &'static str,
    ) -> crate::inquiry::Arrival<'_> {
        crate::inquiry::Arrival {
            channel,
            route,
            authorization: self.authorization(),
            started: self.started,
            peer: self.peer,
            headers: Some(&self.headers),
        }
    }

    /// Whether the method is `allowed` (HEAD counts as GET: load balancers send it).
    pub fn method_is(&self, allowed: &hyper::Method) -> bool {
        self.method == *allowed
            || (*allowed == hyper::Method::GET && self.method == hyper::Method::HEAD)
    }

    /// Reads the body (once: the second read finds none).
    pub async fn read_body(&mut self) -> Result<Bytes, ApiError> {
        let body = self
            .body
            .take()
            .ok_or_else(|| ApiError::Internal("the request body was already read".into()))?;
        read_body(self.content_length(), body).await
    }
}
