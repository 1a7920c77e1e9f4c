//! The USSD callback (docs/openapi.yaml): a person dials a short code on any phone, picks a
//! language, types a national ID and reads the credit status and a tracking code on one
//! small screen.
//!
//! The gateway POSTs a form (`sessionId`, `serviceCode`, `phoneNumber`, `text`) for every
//! screen; `text` holds everything typed in the session joined by `*`. The reply is plain
//! text starting `CON ` (wait for input) or `END ` (close the session), always with HTTP 200:
//! a gateway that gets an HTTP error shows the person a cryptic failure, so even a garbled,
//! oversize or empty request gets a short clear message. Texts come from [`texts`].
//!
//! Every lookup is one decision of the inquiry pipeline (key, phone allowance, parse, look
//! up, evaluate, tracking code, audit, count); menus and prompts are not inquiries.

use bytes::Bytes;
use hyper::Method;

use super::driver::{self, Ask, Codec, Decoding};
use super::texts::{self, Lang};
use super::{Reply, Request};
#[cfg(test)]
use crate::app::AppState;
use crate::dates::Day;
use crate::inquiry::{ApiError, Channel, Decided, Query, Refused, Session};
use crate::national_id::digit_value;

pub const ROUTE: &str = "/ussd";

/// `POST /ussd`, answering on `today`. A refusal before any screen is in Persian (the
/// language is not known yet).
pub struct Ussd {
    pub today: Day,
}

/// What a callback leads to.
pub enum Screen {
    /// A screen that decides nothing (menu, prompt, invalid input): shown as it is.
    Shown(Reply),
    /// A lookup, answered in this language.
    Lookup(Lang),
}

impl Codec for Ussd {
    type Decoded = Screen;
    const CHANNEL: Channel = Channel::Ussd;
    const METHOD: Method = Method::POST;

    fn route(&self) -> &'static str {
        ROUTE
    }

    fn decode(&self, _: &Request, body: Option<Result<Bytes, ApiError>>) -> Decoding<Screen> {
        Ok(self.read(body.and_then(Result::ok).as_deref()))
    }

    fn render(&self, _: &Session<'_>, screen: Screen, decided: &[Decided<'_>]) -> Reply {
        match (screen, decided.first()) {
            (Screen::Lookup(lang), Some(decided)) => end(&render(lang, decided), decided.outcome()),
            (Screen::Shown(reply), _) => reply,
            (Screen::Lookup(lang), None) => {
                let code = ApiError::Internal(String::new()).code();
                end(texts::catalogue(lang).invalid_input, code)
            }
        }
    }

    fn refused(&self, r: &Refused) -> Reply {
        super::gateway_refused(Channel::Ussd, "END ", r)
    }
}

impl Ussd {
    /// Reads one callback's form. `form` is `None` when the body could not be read or was
    /// too large; that, like every other input, gets a `text/plain` screen with HTTP 200.
    pub fn read(&self, form: Option<&[u8]>) -> (Screen, Ask) {
        let shown = |reply| (Screen::Shown(reply), Ask::Nothing);
        let Some(body) = form else {
            return shown(end(texts::FA.invalid_input, "invalid_request"));
        };
        let form = super::GatewayForm::parse(body, "phoneNumber");
        if let Some(problem) = form.malformed(&["sessionId", "phoneNumber"]) {
            // Not a callback a gateway of ours sends: no menu, and it cannot be limited per
            // phone.
            return shown(end(texts::FA.invalid_input, problem));
        }
        // A missing `text` is read as empty: some gateways leave empty fields out.
        match step(form.text.as_deref().unwrap_or("")) {
            Step::Menu => shown(con(texts::MENU, "menu")),
            Step::Prompt(lang) => shown(con(texts::catalogue(lang).prompt, "prompt")),
            Step::Invalid(lang) => {
                shown(end(texts::catalogue(lang).invalid_input, "invalid_request"))
            }
            Step::Lookup(lang, raw_id) => {
                let query = Query::national_id(raw_id, self.today);
                (Screen::Lookup(lang), Ask::ForPhone(form.phone, query))
            }
        }
    }
}

/// A session for tests of the screens (no keys, no audit).
#[cfg(test)]
pub(crate) fn session(state: &AppState) -> Session<'_> {
    crate::inquiry::test_session(state, Channel::Ussd, ROUTE)
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

fn con(shown: &str, outcome: &'static str) -> Reply {
    Reply::text(format!("CON {shown}"), outcome)
}

fn end(shown: &str, outcome: &'static str) -> Reply {
    Reply::text(format!("END {shown}"), outcome)
}

/// Answers one USSD callback on `today` (the screens' tests and the fuzz target).
pub fn reply(session: &mut Session<'_>, form: Option<&[u8]>, today: Day) -> Reply {
    let ussd = Ussd { today };
    let (screen, ask) = ussd.read(form);
    driver::answer(session, &ussd, screen, ask)
}

/// A decision in words, for one USSD screen.
fn render(lang: Lang, decided: &Decided<'_>) -> String {
    let tracking = decided.tracking.as_str();
    match &decided.result {
        Ok(answer) => {
            let d = &answer.evaluated.decision;
            texts::answer(lang, d.outcome, d.coverage_until, tracking)
        }
        Err(e) => texts::refusal(lang, e, tracking),
    }
}

#[cfg(test)]
pub(crate) mod tests;
