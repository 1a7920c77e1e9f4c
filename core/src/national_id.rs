//! The national ID (code melli): parsing from any of the three digit scripts people type,
//! the left padding of IDs whose leading zeros were dropped, the check digit and the
//! same-digit rule, into a compact integer.
//!
//! Every inquiry starts here, so parsing walks the input once and never allocates. The
//! integer form keeps the index small (8 bytes a key) and hashes cheaply; `Display` gives
//! the 10-digit string back with its leading zeros.

use std::fmt;

/// A validated national ID. The value is the 10-digit number, so `0012345679` is `12345679`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NationalId(u64);

/// Why a string is not a national ID. The messages are shown to clients as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a national ID is required")]
    Empty,
    #[error("a national ID contains only digits")]
    NotADigit,
    #[error("a national ID has 10 digits (8 or 9 when leading zeros were dropped)")]
    WrongLength,
    #[error("a national ID cannot repeat one digit ten times")]
    SameDigit,
    #[error("the check digit of the national ID does not match")]
    Checksum,
}

/// What people's copies of an ID carry between its digits: spaces (also no-break), the card's
/// dashes (hyphen, the Unicode dashes, minus), and the invisible marks of Persian text (zero
/// width space and (non-)joiners, LRM/RLM/ALM, embeddings, overrides, isolates, BOM).
pub fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '-' | '\u{00A0}' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{200B}'..='\u{200F}'
            | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// The value of one digit in ASCII, Persian (U+06F0..) or Arabic-Indic (U+0660..) script.
#[inline]
pub fn digit_value(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '\u{06F0}'..='\u{06F9}' => Some((c as u32 - 0x06F0) as u8),
        '\u{0660}'..='\u{0669}' => Some((c as u32 - 0x0660) as u8),
        _ => None,
    }
}

impl NationalId {
    /// Parses an ID typed by a person: surrounding white space is ignored, digits may be in
    /// any of the three scripts, and 8 or 9 digits are padded with leading zeros.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        let mut digits = [0u8; 10];
        let mut count = 0usize;
        for c in input.chars() {
            let d = digit_value(c).ok_or(IdError::NotADigit)?;
            if count == 10 {
                return Err(IdError::WrongLength);
            }
            digits[count] = d;
            count += 1;
        }
        if count < 8 {
            return Err(IdError::WrongLength);
        }
        // Left-pad: shift the digits right by the number of dropped zeros.
        let pad = 10 - count;
        digits.copy_within(0..count, pad);
        digits[..pad].fill(0);
        Self::from_digits(&digits)
    }

    /// An ID as people type or paste it: the card's dashes (`390-382333-3`), spaces, and the
    /// invisible direction and joining marks Persian text carries are dropped, then
    /// [`NationalId::parse`]. Stored records never go through this: they are exact.
    pub fn parse_typed(input: &str) -> Result<Self, IdError> {
        if !input.chars().any(is_separator) {
            return Self::parse(input);
        }
        let cleaned: String = input.chars().filter(|c| !is_separator(*c)).collect();
        Self::parse(&cleaned)
    }

    /// The first run of 8–10 digits (any script, separators allowed between them) in a text,
    /// such as an SMS that holds the ID inside a few words; `None` when there is none.
    pub fn find_in_text(text: &str) -> Option<&str> {
        let mut start = None;
        let mut digits = 0;
        let mut last_digit_end = 0;
        for (i, c) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
        {
            let digit = i < text.len() && digit_value(c).is_some();
            if digit {
                if start.is_none() {
                    start = Some(i);
                    digits = 0;
                }
                digits += 1;
                last_digit_end = i + c.len_utf8();
            } else if i < text.len() && is_separator(c) && start.is_some() {
                continue;
            } else if let Some(s) = start.take() {
                if (8..=10).contains(&digits) {
                    return Some(&text[s..last_digit_end]);
                }
            }
        }
        None
    }

    /// Validates ten digits (each 0..=9).
    fn from_digits(d: &[u8; 10]) -> Result<Self, IdError> {
        if d.iter().all(|&x| x == d[0]) {
            return Err(IdError::SameDigit);
        }
        if !checksum_ok(d) {
            return Err(IdError::Checksum);
        }
        Ok(NationalId(
            d.iter().fold(0u64, |acc, &x| acc * 10 + u64::from(x)),
        ))
    }

    /// Rebuilds an ID from its integer form, validating it again: used on values that come
    /// back from storage, so a corrupt value is refused rather than trusted.
    pub fn from_u64(value: u64) -> Result<Self, IdError> {
        if value > 9_999_999_999 {
            return Err(IdError::WrongLength);
        }
        Self::from_digits(&decimal_digits(value))
    }

    /// Rebuilds an ID from an integer already validated (a snapshot record checked at
    /// load time), without recomputing the check digit on the lookup path.
    #[inline]
    pub(crate) fn from_validated(value: u64) -> Self {
        NationalId(value)
    }

    /// The integer form (the 10 digits read as a number).
    #[inline]
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The ID with its middle digits hidden, as shown for a main insured person: `049****899`.
    pub fn masked(self) -> String {
        let s = self.to_string();
        format!("{}****{}", &s[..3], &s[7..])
    }

    /// The check digit that completes nine leading digits.
    pub fn check_digit(first_nine: &[u8; 9]) -> u8 {
        let r = weighted_sum(first_nine) % 11;
        if r < 2 {
            r as u8
        } else {
            (11 - r) as u8
        }
    }

    /// Builds a valid ID from a nine-digit prefix (0..=999_999_999) by appending its check
    /// digit. Same-digit results are refused. Used by the synthetic population.
    pub fn from_prefix(prefix: u32) -> Result<Self, IdError> {
        if prefix > 999_999_999 {
            return Err(IdError::WrongLength);
        }
        let check = Self::check_digit(&decimal_digits(u64::from(prefix)));
        Self::from_u64(u64::from(prefix) * 10 + u64::from(check))
    }
}

/// The last `N` decimal digits of `value`, most significant first. The value is cut into
/// 32-bit halves of five digits first: 32-bit divisions by ten are cheaper, and validating
/// a 45-million-member snapshot computes two of these per record.
fn decimal_digits<const N: usize>(value: u64) -> [u8; N] {
    let mut digits = [0u8; N];
    let (mut high, mut low) = ((value / 100_000) as u32, (value % 100_000) as u32);
    for (i, slot) in digits.iter_mut().rev().enumerate() {
        if i < 5 {
            *slot = (low % 10) as u8;
            low /= 10;
        } else {
            *slot = (high % 10) as u8;
            high /= 10;
        }
    }
    digits
}

fn weighted_sum(first_nine: &[u8; 9]) -> u32 {
    first_nine
        .iter()
        .enumerate()
        .map(|(i, &d)| u32::from(d) * (10 - i as u32))
        .sum()
}

fn checksum_ok(d: &[u8; 10]) -> bool {
    let mut nine = [0u8; 9];
    nine.copy_from_slice(&d[..9]);
    d[9] == NationalId::check_digit(&nine)
}

impl fmt::Display for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

/// Debug never prints the ID in clear: a `{:?}` that slips into a log line must not leak it.
impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NationalId({})", self.masked())
    }
}

impl std::str::FromStr for NationalId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_known_valid_ids() {
        for id in ["0012345679", "0499370899"] {
            assert_eq!(NationalId::parse(id).unwrap().to_string(), id);
        }
    }

    #[test]
    fn check_digit_rule_both_branches() {
        // Weights run 10 down to 2; the remainder picks the check digit.
        // s = 2 (weight 2), r = 2 → 11 − 2 = 9.
        assert_eq!(NationalId::check_digit(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), 9);
        // s = 3 + 2 = 5, r = 5 → 6.
        assert_eq!(NationalId::check_digit(&[0, 0, 0, 0, 0, 0, 0, 1, 1]), 6);
        // s = 9 + 2 = 11, r = 0 → 0 (the r < 2 branch).
        assert_eq!(NationalId::check_digit(&[0, 1, 0, 0, 0, 0, 0, 0, 1]), 0);
        // s = 10 + 2 = 12, r = 1 → 1 (the r < 2 branch).
        assert_eq!(NationalId::check_digit(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), 1);
        // s = 10 (weight 10), r = 10 → 1 as well.
        assert_eq!(NationalId::check_digit(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), 1);
        assert!(NationalId::parse("0100000010").is_ok());
        assert!(NationalId::parse("1000000011").is_ok());
        assert!(NationalId::parse("1000000001").is_ok());
        assert_eq!(NationalId::parse("0100000011"), Err(IdError::Checksum));
    }

    #[test]
    fn every_same_digit_id_is_rejected_even_though_its_checksum_passes() {
        for d in 0u8..=9 {
            let s: String = std::iter::repeat_n(char::from(b'0' + d), 10).collect();
            let digits = [d; 10];
            assert!(checksum_ok(&digits), "{s} should pass the bare checksum");
            assert_eq!(NationalId::parse(&s), Err(IdError::SameDigit), "{s}");
            assert_eq!(
                NationalId::from_u64(s.parse().unwrap()),
                Err(IdError::SameDigit)
            );
        }
        // Padded inputs that become same-digit are rejected too.
        assert_eq!(NationalId::parse("00000000"), Err(IdError::SameDigit));
    }

    #[test]
    fn wrong_check_digit_is_rejected_for_every_other_digit() {
        let valid = "0012345679";
        for d in 0..=9u8 {
            let s = format!("001234567{d}");
            let r = NationalId::parse(&s);
            if s == valid {
                assert!(r.is_ok());
            } else {
                assert_eq!(r, Err(IdError::Checksum), "{s}");
            }
        }
    }

    #[test]
    fn pads_eight_and_nine_digit_inputs() {
        assert_eq!(
            NationalId::parse("12345679").unwrap().to_string(),
            "0012345679"
        );
        assert_eq!(
            NationalId::parse("499370899").unwrap().to_string(),
            "0499370899"
        );
        assert_eq!(NationalId::parse("1234567"), Err(IdError::WrongLength));
        assert_eq!(NationalId::parse("00123456790"), Err(IdError::WrongLength));
    }

    #[test]
    fn reads_persian_and_arabic_indic_digits_and_mixtures() {
        let ascii = NationalId::parse("0012345679").unwrap();
        assert_eq!(NationalId::parse("۰۰۱۲۳۴۵۶۷۹").unwrap(), ascii);
        assert_eq!(NationalId::parse("٠٠١٢٣٤٥٦٧٩").unwrap(), ascii);
        assert_eq!(NationalId::parse("00۱۲٣٤5679").unwrap(), ascii);
        assert_eq!(NationalId::parse("۱۲۳۴۵۶۷۹").unwrap(), ascii);
        assert_eq!(NationalId::parse("  0012345679\n").unwrap(), ascii);
    }

    #[test]
    fn rejects_non_digits_and_empty_input() {
        assert_eq!(NationalId::parse(""), Err(IdError::Empty));
        assert_eq!(NationalId::parse("   "), Err(IdError::Empty));
        for bad in [
            "001234567a",
            "0012-345679",
            "0012 345679",
            "+012345679",
            "١٢٣x٥٦٧٨",
            "𝟎𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟗",
        ] {
            assert_eq!(NationalId::parse(bad), Err(IdError::NotADigit), "{bad}");
        }
        // A long input is refused without reading it all into memory.
        let long = "1".repeat(10_000);
        assert_eq!(NationalId::parse(&long), Err(IdError::WrongLength));
    }

    #[test]
    fn masks_the_middle_digits() {
        assert_eq!(
            NationalId::parse("0499370899").unwrap().masked(),
            "049****899"
        );
        assert_eq!(
            format!("{:?}", NationalId::parse("0499370899").unwrap()),
            "NationalId(049****899)"
        );
    }

    #[test]
    fn from_u64_validates() {
        assert!(NationalId::from_u64(12_345_679).is_ok());
        assert_eq!(NationalId::from_u64(12_345_678), Err(IdError::Checksum));
        assert_eq!(
            NationalId::from_u64(10_000_000_000),
            Err(IdError::WrongLength)
        );
    }

    #[test]
    fn exactly_one_check_digit_completes_every_prefix_in_a_range() {
        for prefix in 0u32..20_000 {
            let valid: Vec<u8> = (0..=9u8)
                .filter(|&c| NationalId::from_u64(u64::from(prefix) * 10 + u64::from(c)).is_ok())
                .collect();
            if prefix == 0 {
                // 0000000000 is the same-digit ID: no digit completes it.
                assert!(valid.is_empty());
            } else {
                assert_eq!(valid.len(), 1, "prefix {prefix}");
            }
        }
    }

    fn to_script(s: &str, base: u32) -> String {
        s.chars()
            .map(|c| char::from_u32(base + (c as u32 - '0' as u32)).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn every_valid_id_round_trips_in_every_script(prefix in 1u32..=999_999_999) {
            if let Ok(id) = NationalId::from_prefix(prefix) {
                let s = id.to_string();
                prop_assert_eq!(s.len(), 10);
                prop_assert_eq!(NationalId::parse(&s), Ok(id));
                prop_assert_eq!(NationalId::parse(&to_script(&s, 0x06F0)), Ok(id));
                prop_assert_eq!(NationalId::parse(&to_script(&s, 0x0660)), Ok(id));
                prop_assert_eq!(NationalId::from_u64(id.as_u64()), Ok(id));
                let trimmed = s.trim_start_matches('0');
                if trimmed.len() >= 8 {
                    prop_assert_eq!(NationalId::parse(trimmed), Ok(id));
                }
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = NationalId::parse(&s);
        }
    }

    #[test]
    fn ids_as_people_paste_them_are_read_and_found_in_words() {
        let id = NationalId::parse("3903823333").unwrap();
        for typed in [
            "390-382333-3",
            "390 382333 3",
            "\u{200F}۳۹۰-۳۸۲۳۳۳-۳\u{200E}",
            "\u{202B}3903823333\u{202C}",
            "39\u{200C}03823333",
            " 3903823333 ",
        ] {
            assert_eq!(NationalId::parse_typed(typed), Ok(id), "{typed:?}");
        }
        assert!(
            NationalId::parse_typed("390-382333-4").is_err(),
            "the check digit still counts"
        );
        assert!(NationalId::parse_typed("390a382333").is_err());
        assert!(
            NationalId::parse("390-382333-3").is_err(),
            "stored records stay exact"
        );
        for (text, found) in [
            ("استعلام 390-382333-3 لطفا", Some("390-382333-3")),
            ("my id is 3903823333.", Some("3903823333")),
            (
                "call 09121234567 about ۰۰۱۲۳۴۵۶۷۹ please",
                Some("۰۰۱۲۳۴۵۶۷۹"),
            ),
            ("no id here 12345", None),
            ("", None),
        ] {
            assert_eq!(NationalId::find_in_text(text), found, "{text:?}");
        }
    }
}
