//! The USSD callback (CONTRACT §4): a person dials a short code on any phone, picks a
//! language, types a national ID and reads the credit status and a tracking code on one
//! small screen.
//!
//! The gateway POSTs a form (`sessionId`, `serviceCode`, `phoneNumber`, `text`) for every
//! screen; `text` holds everything typed in the session joined by `*`. The reply is plain
//! text starting `CON ` (wait for input) or `END ` (close the session), always with HTTP 200:
//! a gateway that gets an HTTP error shows the person a cryptic failure, so even a garbled,
//! oversize or empty request gets a short clear message. Texts come from [`texts`].
//!
//! The inquiry itself ([`inquire`]) is shared with SMS: rate limit, parse, look up, count.

use super::texts::{self, Lang};
use super::{count_inquiry, ChannelReply};
use crate::app::AppState;
use crate::dates::Day;
use crate::eligibility::Outcome;
use crate::inquiry;
use crate::national_id::{digit_value, NationalId};
use crate::tracking::TrackingCode;

/// The result of one inquiry on a text channel, before it is put in words.
pub(super) enum Inquiry {
    RateLimited,
    InvalidId,
    NotReady,
    NotFound {
        id: NationalId,
        tracking: TrackingCode,
    },
    Answer {
        id: NationalId,
        outcome: Outcome,
        coverage_until: Option<Day>,
        tracking: TrackingCode,
    },
}

impl Inquiry {
    /// The outcome it is counted under, in `eligd_inquiries_total` and the request metrics.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Inquiry::RateLimited => "rate_limited",
            Inquiry::InvalidId => "invalid_national_id",
            Inquiry::NotReady => "not_ready",
            Inquiry::NotFound { .. } => "member_not_found",
            Inquiry::Answer { outcome, .. } => outcome.as_str(),
        }
    }
}

/// One inquiry for `raw_id` from `phone`: the phone's allowance first (so guessing IDs costs
/// allowance even when the guesses are invalid), then the ID, then the index. Counted once.
pub(super) fn inquire(
    state: &AppState,
    channel: &'static str,
    phone: Option<&str>,
    raw_id: &str,
    today: Day,
) -> Inquiry {
    let result = lookup(state, phone, raw_id, today);
    count_inquiry(state, channel, result.label());
    result
}

fn lookup(state: &AppState, phone: Option<&str>, raw_id: &str, today: Day) -> Inquiry {
    if !state.phone_limits.check(phone) {
        return Inquiry::RateLimited;
    }
    let Ok(id) = NationalId::parse(raw_id) else {
        return Inquiry::InvalidId;
    };
    let Some(index) = state.index() else {
        return Inquiry::NotReady;
    };
    let view = index.view();
    let found = inquiry::by_national_id(&view, id, today, None);
    let tracking = state.tracking.next();
    match found {
        Some(found) => Inquiry::Answer {
            id,
            outcome: found.decision.outcome,
            coverage_until: found.decision.coverage_until,
            tracking,
        },
        None => Inquiry::NotFound { id, tracking },
    }
}

/// Where the typed path leads.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Menu,
    Prompt(Lang),
    Lookup(Lang, &'a str),
    Invalid(Lang),
}

/// A menu choice, typed in any digit script.
fn choice(part: &str) -> Option<Lang> {
    let mut chars = part.trim().chars();
    match (chars.next().and_then(digit_value), chars.next()) {
        (Some(1), None) => Some(Lang::Fa),
        (Some(2), None) => Some(Lang::En),
        _ => None,
    }
}

/// Reads `text`: empty → menu; `1`/`2` → prompt; `1*<id>`/`2*<id>` → lookup in that
/// language; a number of two digits or more alone → a direct-dial lookup in Persian;
/// anything else → invalid (in the chosen language, Persian when none).
fn step(text: &str) -> Step<'_> {
    let text = text.trim();
    if text.is_empty() {
        return Step::Menu;
    }
    let mut parts = text.split('*');
    let first = parts.next().unwrap_or_default();
    let second = parts.next();
    let more = parts.next().is_some();
    match (choice(first), second, more) {
        (Some(lang), None, _) => Step::Prompt(lang),
        (Some(lang), Some(id), false) => Step::Lookup(lang, id),
        (Some(lang), Some(_), true) => Step::Invalid(lang),
        (None, None, _)
            if first.chars().count() >= 2 && first.chars().all(|c| digit_value(c).is_some()) =>
        {
            Step::Lookup(Lang::Fa, first)
        }
        (None, _, _) => Step::Invalid(Lang::Fa),
    }
}

fn con(shown: &str, outcome: &'static str) -> ChannelReply {
    ChannelReply::text(format!("CON {shown}"), outcome)
}

fn end(shown: &str, outcome: &'static str) -> ChannelReply {
    ChannelReply::text(format!("END {shown}"), outcome)
}

/// Answers one USSD callback. `form` is `None` when the body could not be read or was too
/// large; that, like every other input, gets a `text/plain` reply with HTTP 200.
pub fn reply(state: &AppState, form: Option<&[u8]>, today: Day) -> ChannelReply {
    let Some(body) = form else {
        return end(texts::FA.invalid_input, "invalid_request");
    };
    let form = super::GatewayForm::parse(body, "phoneNumber");
    // A missing `text` is read as empty: some gateways leave empty fields out.
    match step(form.text.as_deref().unwrap_or("")) {
        Step::Menu => con(texts::MENU, "menu"),
        Step::Prompt(lang) => con(texts::catalogue(lang).prompt, "prompt"),
        Step::Invalid(lang) => end(texts::catalogue(lang).invalid_input, "invalid_request"),
        Step::Lookup(lang, raw_id) => {
            let result = inquire(state, "ussd", form.phone.as_deref(), raw_id, today);
            let label = result.label();
            end(&render(lang, result), label)
        }
    }
}

/// An inquiry in words, for one USSD screen.
fn render(lang: Lang, result: Inquiry) -> String {
    let c = texts::catalogue(lang);
    match result {
        Inquiry::RateLimited => c.rate_limited.to_string(),
        Inquiry::InvalidId => c.invalid_id.to_string(),
        Inquiry::NotReady => c.not_ready.to_string(),
        Inquiry::NotFound { tracking, .. } => texts::not_found(lang, tracking.as_str()),
        Inquiry::Answer {
            outcome,
            coverage_until,
            tracking,
            ..
        } => texts::answer(lang, outcome, coverage_until, tracking.as_str()),
    }
}

#[cfg(test)]
#[path = "ussd_tests.rs"]
pub(crate) mod tests;
