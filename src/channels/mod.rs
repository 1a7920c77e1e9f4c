//! The channels other than the JSON API: USSD and SMS for people on any phone, HL7 FHIR R4
//! for hospitals. Each renders the same inquiry (`inquiry.rs`, the rules of
//! `eligibility.rs`) in its own form; none decides anything. All texts shown to people live
//! in one catalogue ([`texts`]).

pub mod fhir;
pub mod limits;
pub mod sms;
pub mod texts;
pub mod ussd;

/// What a channel answers: the HTTP status, body, content type, and the outcome it is
/// counted under in `eligd_requests_total` (an inquiry status, or a code like
/// `invalid_national_id`, `menu`, `rate_limited`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub outcome: &'static str,
}

impl ChannelReply {
    /// A `text/plain` answer with HTTP 200 (USSD and SMS gateways never get an HTTP error).
    pub fn text(body: String, outcome: &'static str) -> ChannelReply {
        ChannelReply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
            outcome,
        }
    }
}

/// Counts one inquiry of `channel` under `outcome` (eligd_inquiries_total).
pub fn count_inquiry(state: &crate::app::AppState, channel: &'static str, outcome: &'static str) {
    state
        .metrics
        .inquiries
        .get_or_create(&crate::metrics::InquiryLabels { channel, outcome })
        .inc();
}

/// The two fields a USSD or SMS gateway sends that matter: who asks and what they typed
/// (the first of each when repeated). Invalid UTF-8 becomes U+FFFD, which no step accepts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GatewayForm {
    pub phone: Option<String>,
    pub text: Option<String>,
}

impl GatewayForm {
    /// Reads `body` (application/x-www-form-urlencoded); `phone_field` is the gateway's
    /// name for the caller's number (`phoneNumber` for USSD, `from` for SMS).
    pub(crate) fn parse(body: &[u8], phone_field: &str) -> GatewayForm {
        let mut form = GatewayForm::default();
        for (key, value) in form_urlencoded::parse(body) {
            if key == phone_field && form.phone.is_none() {
                form.phone = Some(value.into_owned());
            } else if key == "text" && form.text.is_none() {
                form.text = Some(value.into_owned());
            }
        }
        form
    }
}
