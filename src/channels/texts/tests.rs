use super::*;

/// The longest tracking code (every code has 21 digits).
const LONGEST_CODE: &str = "999999999999999999999";
const MASKED: &str = "999****999";

fn day(s: &str) -> Day {
    Day::parse_iso(s).unwrap()
}

/// Coverage ends that render differently: none, and dates across the supported range (every
/// Solar Hijri date shows as 10 characters).
fn coverage_ends() -> Vec<Option<Day>> {
    vec![
        None,
        Some(day("2027-03-20")),
        Some(day("1900-01-01")),
        Some(day("2199-12-31")),
        Some(day("2026-09-22")),
    ]
}

/// Every USSD screen the channel can show, rendered with the longest values.
fn every_ussd_screen() -> Vec<String> {
    let mut screens = vec![MENU.to_string()];
    for lang in Lang::ALL {
        let c = catalogue(lang);
        for fixed in [
            c.prompt,
            c.invalid_id,
            c.not_ready,
            c.rate_limited,
            c.invalid_input,
        ] {
            screens.push(fixed.to_string());
        }
        screens.push(not_found(lang, LONGEST_CODE));
        for outcome in Outcome::ALL {
            for end in coverage_ends() {
                screens.push(answer(lang, outcome, end, LONGEST_CODE));
            }
        }
    }
    screens
}

fn every_sms_reply() -> Vec<String> {
    let mut replies = vec![
        SMS.invalid_id.to_string(),
        SMS.help.to_string(),
        FA.not_ready.to_string(),
        FA.rate_limited.to_string(),
        sms_not_found(MASKED, LONGEST_CODE),
    ];
    for outcome in Outcome::ALL {
        for end in coverage_ends() {
            replies.push(sms_answer(MASKED, outcome, end, LONGEST_CODE));
        }
    }
    replies
}

#[test]
fn every_ussd_screen_fits_with_the_longest_values() {
    for screen in every_ussd_screen() {
        assert!(
            fits_ussd_screen(&screen),
            "{} UTF-16 units, GSM {:?}: {screen}",
            screen.encode_utf16().count(),
            gsm_length(&screen)
        );
    }
}

#[test]
fn every_sms_reply_fits_two_ucs2_parts_with_the_longest_values() {
    for reply in every_sms_reply() {
        assert!(
            fits_sms(&reply),
            "{} UTF-16 units: {reply}",
            reply.encode_utf16().count()
        );
    }
}

#[test]
fn english_texts_stay_in_the_gsm_alphabet() {
    // One character outside it would shrink the screen from 182 to 80 units.
    for lang_screen in every_ussd_screen().into_iter().filter(|s| s.is_ascii()) {
        assert!(gsm_length(&lang_screen).is_some(), "{lang_screen}");
    }
    let c = catalogue(Lang::En);
    for t in [
        c.prompt,
        c.invalid_id,
        c.not_ready,
        c.rate_limited,
        c.invalid_input,
        c.until,
        c.open_ended,
        c.tracking,
    ]
    .into_iter()
    .chain(c.statuses)
    {
        assert!(gsm_length(t).is_some(), "{t}");
    }
}

#[test]
fn persian_answers_show_solar_hijri_dates_and_persian_digits() {
    let text = answer(
        Lang::Fa,
        Outcome::Active,
        Some(day("2027-03-20")),
        "140509020500000000001",
    );
    assert!(text.contains("۱۴۰۵/۱۲/۲۹"), "{text}");
    assert!(text.contains("۱۴۰۵۰۹۰۲۰۵۰۰۰۰۰۰۰۰۰۰۱"), "{text}");
    assert!(!text.chars().any(|c| c.is_ascii_digit()), "{text}");
    assert!(text.starts_with(FA.statuses[0]));

    let open = answer(Lang::Fa, Outcome::Active, None, LONGEST_CODE);
    assert!(open.contains("بدون تاریخ پایان"), "{open}");
    assert_eq!(date_text(Lang::Fa, day("2026-11-22")), "۱۴۰۵/۰۹/۰۱");
    assert_eq!(date_text(Lang::Fa, day("2026-03-21")), "۱۴۰۵/۰۱/۰۱");
}

#[test]
fn english_answers_show_iso_dates() {
    let text = answer(
        Lang::En,
        Outcome::Expired,
        Some(day("2027-03-20")),
        "140509020500000000001",
    );
    assert_eq!(
        text,
        "Booklet credit: expired\nCovered until: 2027-03-20\nTracking code: 140509020500000000001"
    );
    let open = answer(Lang::En, Outcome::Active, None, "1");
    assert_eq!(
        open,
        "Booklet credit: valid\nCovered until: no end date\nTracking code: 1"
    );
}

#[test]
fn every_status_has_its_own_text_in_both_languages() {
    for lang in Lang::ALL {
        let mut seen = std::collections::HashSet::new();
        for outcome in Outcome::ALL {
            assert!(seen.insert(status_text(lang, outcome)), "{outcome:?}");
        }
    }
    assert_eq!(
        status_text(Lang::En, Outcome::Deceased),
        "Insured person deceased"
    );
    assert_eq!(status_text(Lang::Fa, Outcome::Suspended), "بیمه معلق است");
}

#[test]
fn sms_replies_name_the_masked_id_only() {
    let text = sms_answer("049****899", Outcome::Active, None, "1");
    assert!(text.starts_with("استعلام کد ملی ۰۴۹****۸۹۹\n"), "{text}");
    let text = sms_not_found("049****899", "12");
    assert!(text.contains("۰۴۹****۸۹۹"), "{text}");
    assert!(text.contains("کد پیگیری: ۱۲"), "{text}");
}

#[test]
fn screen_rule_boundaries() {
    assert!(fits_ussd_screen(&"a".repeat(182)));
    assert!(!fits_ussd_screen(&"a".repeat(183)));
    // Extension characters take two septets.
    assert!(fits_ussd_screen(&"{".repeat(91)));
    assert!(!fits_ussd_screen(&"{".repeat(92)));
    assert!(fits_ussd_screen(&format!("{}€", "a".repeat(180))));
    assert!(!fits_ussd_screen(&format!("{}€", "a".repeat(181))));
    // The non-ASCII letters of the basic set keep the 7-bit budget.
    assert!(fits_ussd_screen(&"é".repeat(182)));
    assert!(fits_ussd_screen(
        &"ΔΦΓΛΩΠΨΣΘΞ£¥§¿¡ÄÖÑÜäöñüàÆæßÉÇØøÅå¤èùìò@$_".repeat(4)
    ));
    // One character outside the alphabet makes the whole screen UCS-2: 80 units.
    assert!(fits_ussd_screen(&"ب".repeat(80)));
    assert!(!fits_ussd_screen(&"ب".repeat(81)));
    assert!(!fits_ussd_screen(&format!("{}ç", "a".repeat(80))));
    assert!(fits_ussd_screen(&format!("{}ç", "a".repeat(79))));
    assert!(!fits_ussd_screen(&format!("{}`", "a".repeat(80))));
    // Characters outside the BMP count as two UTF-16 units.
    assert!(fits_ussd_screen(&"😀".repeat(40)));
    assert!(!fits_ussd_screen(&format!("{}a", "😀".repeat(40))));
    assert!(fits_ussd_screen(""));
    assert!(fits_sms(&"ب".repeat(134)));
    assert!(!fits_sms(&"ب".repeat(135)));
}

#[test]
fn gsm_alphabet_has_its_128_basic_characters() {
    let basic: Vec<char> = ('\0'..='\u{20AC}')
        .filter(|&c| gsm_septets(c) == Some(1))
        .collect();
    // 128 code points less ESC (0x1B), which is not a character.
    assert_eq!(basic.len(), 127, "{basic:?}");
    let extension: Vec<char> = ('\0'..='\u{20AC}')
        .filter(|&c| gsm_septets(c) == Some(2))
        .collect();
    assert_eq!(extension.len(), 10, "{extension:?}");
}

/// Prints every template with its measured length (`cargo test -- --nocapture texts`),
/// for reviewing the catalogue, and checks what it prints: no template is empty, and each
/// GSM length is its characters' septets (none when one is outside the alphabet).
#[test]
fn measured_lengths() {
    let (screens, replies) = (every_ussd_screen(), every_sms_reply());
    assert!(!screens.is_empty() && !replies.is_empty());
    for screen in screens.iter().chain(&replies) {
        let units = screen.encode_utf16().count();
        let gsm = gsm_length(screen);
        println!("{units:>4} {gsm:?} | {}", screen.replace('\n', " ⏎ "));
        assert!(units > 0, "an empty template");
        let septets: Option<usize> = screen.chars().map(gsm_septets).sum();
        assert_eq!(gsm, septets, "{screen}");
        assert!(gsm.is_none_or(|n| n >= screen.chars().count()), "{screen}");
    }
}
