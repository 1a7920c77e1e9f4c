//! The SMS channel: a person texts a national ID to the short number and gets the same
//! answer as on USSD, in Persian, in at most two concatenated UCS-2 parts (docs/openapi.yaml,
//! `/sms`).
//!
//! The SMS gateway POSTs a form (`from`, `text`) and sends our `text/plain` body back as the
//! reply, so every request gets a reply with HTTP 200, a short clear one when the message is
//! not a national ID. Every message is an inquiry of the pipeline and takes from the sender's
//! allowance (each reply costs a message), counted by the same per-phone limiter as USSD.
//! Texts come from [`texts`].

use super::texts::{self, Lang, FA, SMS};
use super::{Reply, Request};
use crate::app::AppState;
use crate::dates::Day;
use crate::inquiry::{ApiError, Channel, Decided, Query, Session};
use crate::national_id::NationalId;

pub const ROUTE: &str = "/sms";

/// `POST /sms`.
pub async fn handle(state: &AppState, request: Request) -> Reply {
    super::gateway_callback(state, request, (Channel::Sms, ROUTE, ""), reply).await
}

/// A session for tests of the replies (no keys, no audit).
#[cfg(test)]
pub(crate) fn session(state: &AppState) -> Session<'_> {
    crate::inquiry::test_session(state, Channel::Sms, ROUTE)
}

/// Answers one incoming SMS. `form` is `None` when the body could not be read or was too
/// large; that gets the help text, like an empty message.
pub fn reply(session: &Session<'_>, form: Option<&[u8]>, today: Day) -> Reply {
    let Some(body) = form else {
        return Reply::text(SMS.help.to_string(), "invalid_request");
    };
    let form = super::GatewayForm::parse(body, "from");
    if let Some(problem) = form.malformed(&["from"]) {
        // Not a message a gateway of ours sends: it cannot be limited per phone.
        return Reply::text(SMS.help.to_string(), problem);
    }
    // The ID may come inside a few words; the whole text otherwise (its error is the answer).
    let whole = form.text.as_deref().unwrap_or("").trim();
    let text = NationalId::find_in_text(whole).unwrap_or(whole);
    let decided = session.decide_for_phone(form.phone.as_deref(), || {
        if text.is_empty() {
            Query::refused(ApiError::InvalidRequest("the message is empty".into()))
        } else {
            Query::national_id(text, today)
        }
    });
    let reply = Reply::text(render(text, &decided), decided.outcome());
    reply.with_pipeline_headers(decided.result.as_ref().err(), session.allowance())
}

/// A decision in words, for one SMS reply to the message `text`.
fn render(text: &str, decided: &Decided<'_>) -> String {
    let tracking = decided.tracking.as_str();
    match &decided.result {
        Ok(answer) => {
            let d = &answer.evaluated.decision;
            let id = answer.evaluated.member.view().national_id.masked();
            texts::sms_answer(&id, d.outcome, d.coverage_until, tracking)
        }
        Err(ApiError::InvalidRequest(_)) => SMS.help.to_string(),
        Err(ApiError::InvalidNationalId(_)) => SMS.invalid_id.to_string(),
        Err(ApiError::RateLimited(_)) => FA.rate_limited.to_string(),
        Err(ApiError::MemberNotFound) => {
            let masked = NationalId::parse_typed(text)
                .map(|id| id.masked())
                .unwrap_or_default();
            texts::sms_not_found(&masked, tracking)
        }
        Err(e) => texts::refusal(Lang::Fa, e, tracking),
    }
}

#[cfg(test)]
mod tests;
