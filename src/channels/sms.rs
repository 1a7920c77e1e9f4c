//! The SMS channel (CONTRACT §4): a person texts a national ID to the short number and gets
//! the same answer as on USSD, in Persian, in at most two concatenated UCS-2 parts.
//!
//! The SMS gateway POSTs a form (`from`, `text`) and sends our `text/plain` body back as the
//! reply, so every request gets a reply with HTTP 200, a short clear one when the message is
//! not a national ID. Every message takes from the sender's allowance (each reply costs a
//! message), counted by the same per-phone limiter as USSD. Texts come from [`texts`].

use super::texts::{self, FA, SMS};
use super::ussd::{inquire, Inquiry};
use super::ChannelReply;
use crate::app::AppState;
use crate::dates::Day;

/// Answers one incoming SMS. `form` is `None` when the body could not be read or was too
/// large; that gets the help text, like an empty message.
pub fn reply(state: &AppState, form: Option<&[u8]>, today: Day) -> ChannelReply {
    let Some(body) = form else {
        return ChannelReply::text(SMS.help.to_string(), "invalid_request");
    };
    let form = super::GatewayForm::parse(body, "from");
    let text = form.text.as_deref().unwrap_or("").trim();
    if text.is_empty() {
        // Still one reply to this phone: it takes from the allowance like an inquiry.
        if !state.phone_limits.check(form.phone.as_deref()) {
            super::count_inquiry(state, "sms", "rate_limited");
            return ChannelReply::text(FA.rate_limited.to_string(), "rate_limited");
        }
        return ChannelReply::text(SMS.help.to_string(), "invalid_request");
    }
    let result = inquire(state, "sms", form.phone.as_deref(), text, today);
    let label = result.label();
    ChannelReply::text(render(result), label)
}

/// An inquiry in words, for one SMS reply.
fn render(result: Inquiry) -> String {
    match result {
        Inquiry::RateLimited => FA.rate_limited.to_string(),
        Inquiry::InvalidId => SMS.invalid_id.to_string(),
        Inquiry::NotReady => FA.not_ready.to_string(),
        Inquiry::NotFound { id, tracking } => texts::sms_not_found(&id.masked(), tracking.as_str()),
        Inquiry::Answer {
            id,
            outcome,
            coverage_until,
            tracking,
        } => texts::sms_answer(&id.masked(), outcome, coverage_until, tracking.as_str()),
    }
}

#[cfg(test)]
#[path = "sms_tests.rs"]
mod tests;
