//! Every text a person reads on USSD and SMS, in Persian and English, in one catalogue, and
//! the helpers that render answers from it. Handlers hold no literal text, so wording can be
//! reviewed (and translated) in one place, and one test can render every template with the
//! longest possible values and prove it fits a USSD screen or an SMS.
//!
//! Persian texts show dates in the Solar Hijri calendar with Persian digits (۱۴۰۵/۱۲/۲۹) and
//! digits in Persian script throughout; English texts show ISO dates. No text carries a
//! name (anyone can dial), and only SMS echoes the national ID, masked, so a person who
//! asked for several family members can tell the replies apart.

use crate::dates::Day;
use crate::eligibility::Outcome;
use crate::jalali::JalaliDate;

/// The language of a reply. Persian is the default whenever the person chose none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Fa,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Fa, Lang::En];
}

/// The fixed texts of one language.
pub struct Catalogue {
    /// The question for the national ID after a language was chosen.
    pub prompt: &'static str,
    /// One line per inquiry status, in the order of [`Outcome::ALL`].
    pub statuses: [&'static str; 7],
    /// Label before the coverage end date.
    pub until: &'static str,
    /// Shown instead of the date line when coverage is open-ended.
    pub open_ended: &'static str,
    /// Label before the tracking code.
    pub tracking: &'static str,
    pub invalid_id: &'static str,
    pub not_found: &'static str,
    pub not_ready: &'static str,
    pub rate_limited: &'static str,
    /// Anything the menu does not understand.
    pub invalid_input: &'static str,
}

/// The first USSD screen: both languages, so each person can read their choice.
pub const MENU: &str = "استعلام اعتبار دفترچه\nBooklet credit\n1. فارسی\n2. English";

pub const FA: Catalogue = Catalogue {
    prompt: "کد ملی ۱۰ رقمی را وارد کنید:",
    statuses: [
        "دفترچه اعتبار دارد",
        "اعتبار دفترچه تمام شده",
        "بیمه معلق است",
        "بیمه‌شده فوت شده",
        "بیمه‌شده اصلی فعال نیست",
        "بیمه‌شده اصلی یافت نشد",
        "این خدمت پوشش ندارد",
    ],
    until: "اعتبار تا: ",
    open_ended: "بدون تاریخ پایان",
    tracking: "کد پیگیری: ",
    invalid_id: "کد ملی نادرست است. ۱۰ رقم کد ملی را بررسی و دوباره وارد کنید.",
    not_found: "بیمه‌شده‌ای با این کد ملی یافت نشد.",
    not_ready: "سامانه موقتاً در دسترس نیست. لطفاً کمی بعد دوباره تلاش کنید.",
    rate_limited: "درخواست‌ها زیاد است. لطفاً یک دقیقه دیگر دوباره تلاش کنید.",
    invalid_input: "ورودی نامعتبر است. لطفاً دوباره شماره‌گیری کنید.",
};

pub const EN: Catalogue = Catalogue {
    prompt: "Enter the 10-digit national ID:",
    statuses: [
        "Booklet credit: valid",
        "Booklet credit: expired",
        "Insurance suspended",
        "Insured person deceased",
        "Main insured person inactive",
        "Main insured person not found",
        "Service not covered",
    ],
    until: "Covered until: ",
    open_ended: "Covered until: no end date",
    tracking: "Tracking code: ",
    invalid_id: "Invalid national ID. Please check the 10 digits and try again.",
    not_found: "No insured person has this national ID.",
    not_ready: "Service temporarily unavailable. Please try again in a few minutes.",
    rate_limited: "Too many requests. Please try again in a minute.",
    invalid_input: "Invalid input. Please dial again.",
};

/// SMS-only texts (always Persian): the reply names the masked ID it answers for.
pub struct SmsTexts {
    /// First line of an answer, before the masked national ID.
    pub heading: &'static str,
    /// Not found: before and after the masked ID.
    pub not_found: (&'static str, &'static str),
    pub invalid_id: &'static str,
    /// An empty or unreadable message.
    pub help: &'static str,
}

pub const SMS: SmsTexts = SmsTexts {
    heading: "استعلام کد ملی ",
    not_found: ("بیمه‌شده‌ای با کد ملی ", " یافت نشد."),
    invalid_id: "کد ملی نادرست است. لطفاً فقط کد ملی ۱۰ رقمی را بفرستید.",
    help: "برای استعلام اعتبار دفترچه، فقط کد ملی ۱۰ رقمی را بفرستید.",
};

/// What a person reads when an inquiry is refused, for every code of the error table
/// (`inquiry::errors`): the few a person can act on have their own words, every fault of the
/// service or of the gateway reads "temporarily unavailable".
pub fn refusal(lang: Lang, error: &crate::inquiry::ApiError, tracking: &str) -> String {
    use crate::inquiry::ApiError as E;
    let c = catalogue(lang);
    match error {
        E::InvalidNationalId(_) => c.invalid_id.to_string(),
        E::MemberNotFound => not_found(lang, tracking),
        E::RateLimited(_) => c.rate_limited.to_string(),
        E::InvalidDate
        | E::InvalidService(_)
        | E::InvalidRequest(_)
        | E::BookletNotFound
        | E::NotFound
        | E::MethodNotAllowed { .. }
        | E::UnsupportedMediaType(_)
        | E::NotAcceptable(_)
        | E::PayloadTooLarge { .. } => c.invalid_input.to_string(),
        E::Unauthorized(_)
        | E::Forbidden { .. }
        | E::Internal(_)
        | E::NotReady(_)
        | E::AuditUnavailable => c.not_ready.to_string(),
    }
}

pub fn catalogue(lang: Lang) -> &'static Catalogue {
    match lang {
        Lang::Fa => &FA,
        Lang::En => &EN,
    }
}

/// The status line of an inquiry outcome.
pub fn status_text(lang: Lang, outcome: Outcome) -> &'static str {
    let statuses = &catalogue(lang).statuses;
    let i = Outcome::ALL.iter().position(|&o| o == outcome).unwrap_or(0);
    statuses[i]
}

/// ASCII digits turned into Persian digits (۰..۹); everything else kept.
pub fn persian_digits(s: &str) -> String {
    s.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) if c.is_ascii_digit() => char::from_u32(0x06F0 + d).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// A date as the language reads it: `۱۴۰۵/۱۲/۲۹` in Persian, `2027-03-20` in English.
pub fn date_text(lang: Lang, day: Day) -> String {
    match lang {
        Lang::En => day.to_string(),
        Lang::Fa => match JalaliDate::from_gregorian(day.date()) {
            Some(j) => persian_digits(&j.to_string()),
            // Unreachable for stored dates (1900..2199); ISO rather than nothing.
            None => persian_digits(&day.to_string()),
        },
    }
}

/// Digits as the language shows them (tracking codes, masked IDs).
pub fn digits_text(lang: Lang, s: &str) -> String {
    match lang {
        Lang::Fa => persian_digits(s),
        Lang::En => s.to_string(),
    }
}

/// The answer to an inquiry: status, coverage end (or open-ended), tracking code.
pub fn answer(lang: Lang, outcome: Outcome, coverage_until: Option<Day>, tracking: &str) -> String {
    let c = catalogue(lang);
    let until = match coverage_until {
        Some(day) => format!("{}{}", c.until, date_text(lang, day)),
        None => c.open_ended.to_string(),
    };
    format!(
        "{}\n{}\n{}{}",
        status_text(lang, outcome),
        until,
        c.tracking,
        digits_text(lang, tracking)
    )
}

/// Unknown person: the message and the tracking code of the inquiry.
pub fn not_found(lang: Lang, tracking: &str) -> String {
    let c = catalogue(lang);
    format!(
        "{}\n{}{}",
        c.not_found,
        c.tracking,
        digits_text(lang, tracking)
    )
}

/// The SMS answer: a heading naming the masked ID, then the Persian USSD answer.
pub fn sms_answer(
    masked_id: &str,
    outcome: Outcome,
    coverage_until: Option<Day>,
    tracking: &str,
) -> String {
    format!(
        "{}{}\n{}",
        SMS.heading,
        persian_digits(masked_id),
        answer(Lang::Fa, outcome, coverage_until, tracking)
    )
}

/// The SMS reply for an unknown person.
pub fn sms_not_found(masked_id: &str, tracking: &str) -> String {
    format!(
        "{}{}{}\n{}{}",
        SMS.not_found.0,
        persian_digits(masked_id),
        SMS.not_found.1,
        FA.tracking,
        persian_digits(tracking)
    )
}

/// Septets a character takes in the GSM 03.38 default alphabet: 1 in the basic set, 2 in
/// the extension table (escape + code), `None` when it needs UCS-2.
pub fn gsm_septets(c: char) -> Option<usize> {
    const BASIC_NON_ASCII: &str = "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà";
    const EXTENSION: &str = "^{}\\[~]|€\u{000C}";
    match c {
        'A'..='Z' | 'a'..='z' | '0'..='9' => Some(1),
        '\n' | '\r' | ' ' | '!' | '"' | '#' | '$' | '%' | '&' | '\'' | '(' | ')' | '*' | '+'
        | ',' | '-' | '.' | '/' | ':' | ';' | '<' | '=' | '>' | '?' | '@' | '_' => Some(1),
        _ if BASIC_NON_ASCII.contains(c) => Some(1),
        _ if EXTENSION.contains(c) => Some(2),
        _ => None,
    }
}

/// The length of a text as a USSD screen counts it: `Some(septets)` when every character is
/// in the GSM 7-bit alphabet, `None` when it must be sent as UCS-2.
pub fn gsm_length(text: &str) -> Option<usize> {
    text.chars().map(gsm_septets).sum()
}

/// Whether `text` (the shown part, after `CON `/`END `) fits one USSD screen: 182 GSM
/// septets, or 80 UTF-16 units when any character is outside the GSM 7-bit alphabet.
pub fn fits_ussd_screen(text: &str) -> bool {
    match gsm_length(text) {
        Some(septets) => septets <= 182,
        None => text.encode_utf16().count() <= 80,
    }
}

/// The longest SMS reply: two concatenated UCS-2 parts (docs/openapi.yaml).
pub const SMS_MAX_UNITS: usize = 134;

/// Whether `text` fits the SMS reply limit, counted in UTF-16 units.
pub fn fits_sms(text: &str) -> bool {
    text.encode_utf16().count() <= SMS_MAX_UNITS
}

#[cfg(test)]
mod tests;
