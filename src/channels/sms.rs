//! The SMS channel: a person texts a national ID to the short number and gets the same
//! answer as on USSD, in Persian, in at most two concatenated UCS-2 parts (docs/openapi.yaml,
//! `/sms`).
//!
//! The SMS gateway POSTs a form (`from`, `text`) and sends our `text/plain` body back as the
//! reply, so every request gets a reply with HTTP 200, a short clear one when the message is
//! not a national ID. Every message is an inquiry of the pipeline and takes from the sender's
//! allowance (each reply costs a message), counted by the same per-phone limiter as USSD.
//! Texts come from [`texts`].

use bytes::Bytes;
use hyper::Method;

use super::driver::{self, Ask, Codec, Decoding};
use super::texts::{self, Lang, FA, SMS};
use super::{Reply, Request};
#[cfg(test)]
use crate::app::AppState;
use crate::dates::Day;
use crate::inquiry::{ApiError, Channel, Decided, Query, Refused, Session, Target};
use crate::national_id::NationalId;

pub const ROUTE: &str = "/sms";

/// `POST /sms`, answering on `today`.
pub struct Sms {
    pub today: Day,
}

/// What a message leads to.
pub enum Message {
    /// A reply that decides nothing (a message no gateway of ours sends).
    Shown(Reply),
    /// A lookup of what the person texted: the national ID read from it, when it is one.
    Lookup { id: Option<NationalId> },
}

impl Codec for Sms {
    type Decoded = Message;
    const CHANNEL: Channel = Channel::Sms;
    const METHOD: Method = Method::POST;

    fn route(&self) -> &'static str {
        ROUTE
    }

    fn decode(&self, _: &Request, body: Option<Result<Bytes, ApiError>>) -> Decoding<Message> {
        Ok(self.read(body.and_then(Result::ok).as_deref()))
    }

    fn render(&self, _: &Session<'_>, message: Message, decided: &[Decided<'_>]) -> Reply {
        match (message, decided.first()) {
            (Message::Lookup { id }, Some(decided)) => {
                Reply::text(render(id, decided), decided.outcome())
            }
            (Message::Shown(reply), _) => reply,
            (Message::Lookup { .. }, None) => {
                let code = ApiError::Internal(String::new()).code();
                Reply::text(SMS.help.to_string(), code)
            }
        }
    }

    fn refused(&self, r: &Refused) -> Reply {
        super::gateway_refused(Channel::Sms, "", r)
    }
}

impl Sms {
    /// Reads one incoming message's form. `form` is `None` when the body could not be read
    /// or was too large; that gets the help text, like an empty message.
    pub fn read(&self, form: Option<&[u8]>) -> (Message, Ask) {
        let shown = |reply| (Message::Shown(reply), Ask::Nothing);
        let Some(body) = form else {
            return shown(Reply::text(SMS.help.to_string(), "invalid_request"));
        };
        let form = super::GatewayForm::parse(body, "from");
        if let Some(problem) = form.malformed(&["from"]) {
            // Not a message a gateway of ours sends: it cannot be limited per phone.
            return shown(Reply::text(SMS.help.to_string(), problem));
        }
        // The ID may come inside a few words; the whole text otherwise (its error is the
        // answer).
        let whole = form.text.as_deref().unwrap_or("").trim();
        let text = NationalId::find_in_text(whole).unwrap_or(whole);
        if text.is_empty() {
            let query = Query::refused(ApiError::InvalidRequest("the message is empty".into()));
            return (
                Message::Lookup { id: None },
                Ask::ForPhone(form.phone, query),
            );
        }
        let id = NationalId::parse_typed(text);
        let query = Query {
            target: id.map(Target::Member).map_err(ApiError::InvalidNationalId),
            as_of: Ok(self.today),
            services: Ok(Vec::new()),
        };
        (
            Message::Lookup { id: id.ok() },
            Ask::ForPhone(form.phone, query),
        )
    }
}

/// A session for tests of the replies (no keys, no audit).
#[cfg(test)]
pub(crate) fn session(state: &AppState) -> Session<'_> {
    crate::inquiry::test_session(state, Channel::Sms, ROUTE)
}

/// Answers one incoming SMS on `today` (the replies' tests).
pub fn reply(session: &mut Session<'_>, form: Option<&[u8]>, today: Day) -> Reply {
    let sms = Sms { today };
    let (message, ask) = sms.read(form);
    driver::answer(session, &sms, message, ask)
}

/// A decision in words, for one SMS reply to a message that named `id` (when it did).
fn render(id: Option<NationalId>, decided: &Decided<'_>) -> String {
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
            let masked = id.map(|id| id.masked()).unwrap_or_default();
            texts::sms_not_found(&masked, tracking)
        }
        Err(e) => texts::refusal(Lang::Fa, e, tracking),
    }
}

#[cfg(test)]
mod tests;
