use super::*;

const GOOD: &str = r#"{
  "national_id": "0012345679", "version": 42, "kind": "dependent",
  "main_national_id": "0499370899", "relation": "child", "scheme": "mandatory",
  "status": "active", "coverage_until": "2026-12-31",
  "services": ["outpatient", "inpatient", "pharmacy", "paraclinic", "dental"],
  "special_conditions": ["dialysis"], "other_insurers": [{"code": "salamat", "primary": false}],
  "booklet_no": "930123456789", "display_name": "علی رضایی"
}"#;

fn with(field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    if value.is_null() && field.starts_with('-') {
        v.as_object_mut().unwrap().remove(&field[1..]);
    } else {
        v[field] = value;
    }
    v.to_string()
}

#[test]
fn parses_the_contract_example() {
    let m = Member::from_json(GOOD).unwrap();
    assert_eq!(m.national_id.to_string(), "0012345679");
    assert_eq!(m.version, 42);
    assert_eq!(m.kind, Kind::Dependent);
    assert_eq!(m.main_national_id.unwrap().to_string(), "0499370899");
    assert_eq!(m.relation, Some(Relation::Child));
    assert_eq!(m.coverage_day().unwrap().to_string(), "2026-12-31");
    assert_eq!(m.services, Services::all());
    assert_eq!(m.special_conditions, vec!["dialysis"]);
    assert_eq!(m.booklet_no.unwrap().to_string(), "930123456789");
    assert_eq!(m.display_name.as_deref(), Some("علی رضایی"));
}

#[test]
fn json_round_trips() {
    let m = Member::from_json(GOOD).unwrap();
    assert_eq!(Member::from_json(&m.to_json()).unwrap(), m);
}

#[test]
fn optional_fields_may_be_absent_or_null() {
    let json = r#"{"national_id":"0499370899","version":1,"kind":"pensioner","scheme":"pensioner",
        "status":"active","services":[],"coverage_until":null,"booklet_no":null,"display_name":null}"#;
    let m = Member::from_json(json).unwrap();
    assert_eq!(m.coverage_until, None);
    assert!(m.special_conditions.is_empty() && m.other_insurers.is_empty());
    assert_eq!(m.booklet_no, None);
}

#[test]
fn every_broken_rule_names_its_field() {
    use serde_json::json;
    let cases: Vec<(String, &str)> = vec![
        (with("national_id", json!("0012345678")), "national_id"),
        (with("national_id", json!("1111111111")), "national_id"),
        (with("national_id", json!(12345679)), "national_id"),
        (with("-national_id", json!(null)), "national_id"),
        (with("version", json!(0)), "version"),
        (with("version", json!(-1)), "version"),
        (with("version", json!("42")), "version"),
        (with("version", json!(1.5)), "version"),
        (with("-version", json!(null)), "version"),
        (with("kind", json!("boss")), "kind"),
        (with("-kind", json!(null)), "kind"),
        (with("main_national_id", json!(null)), "main_national_id"),
        (
            with("main_national_id", json!("0012345679")),
            "main_national_id",
        ),
        (with("main_national_id", json!("123")), "main_national_id"),
        (with("relation", json!("cousin")), "relation"),
        (with("scheme", json!("gold")), "scheme"),
        (with("status", json!("sleeping")), "status"),
        (with("status", json!(null)), "status"),
        (
            with("coverage_until", json!("2026-02-30")),
            "coverage_until",
        ),
        (
            with("coverage_until", json!("31/12/2026")),
            "coverage_until",
        ),
        (with("coverage_until", json!(20261231)), "coverage_until"),
        (with("services", json!(["pharmacy", "spa"])), "services"),
        (with("services", json!("pharmacy")), "services"),
        (with("-services", json!(null)), "services"),
        (
            with("special_conditions", json!(["Dialysis"])),
            "special_conditions",
        ),
        (
            with("special_conditions", json!([""])),
            "special_conditions",
        ),
        (
            with("special_conditions", json!(vec!["a"; 17])),
            "special_conditions",
        ),
        (
            with("other_insurers", json!([{"code": "x"}])),
            "other_insurers.primary",
        ),
        (
            with("other_insurers", json!([{"primary": true}])),
            "other_insurers.code",
        ),
        (
            with(
                "other_insurers",
                json!([{"code": "a", "primary": true}, {"code": "b", "primary": true}]),
            ),
            "other_insurers",
        ),
        (
            with("other_insurers", json!([{"code": "a b", "primary": true}])),
            "other_insurers.code",
        ),
        (with("booklet_no", json!("93-01")), "booklet_no"),
        (with("booklet_no", json!("")), "booklet_no"),
        (with("booklet_no", json!("۹۳۰۱")), "booklet_no"),
        (
            with("booklet_no", json!("1234567890123456789")),
            "booklet_no",
        ),
        (with("display_name", json!("x".repeat(201))), "display_name"),
        (with("display_name", json!("a\u{0007}b")), "display_name"),
        (with("display_name", json!(7)), "display_name"),
    ];
    for (json, field) in cases {
        let err = Member::from_json(&json).expect_err(&json);
        assert!(
            err.field.starts_with(field),
            "expected field {field}, got {err} for {json}"
        );
    }
}

#[test]
fn wrongly_typed_ids_are_not_quoted_in_the_message() {
    for field in ["national_id", "main_national_id"] {
        let err = Member::from_json(&with(field, serde_json::json!(499370899))).unwrap_err();
        assert_eq!(err.field, field);
        assert!(!err.to_string().contains("499370899"), "{err}");
    }
}

#[test]
fn non_dependents_carry_no_main_or_relation() {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    v["kind"] = "main".into();
    let err = Member::from_json(&v.to_string()).unwrap_err();
    assert_eq!(err.field, "main_national_id");
    v["main_national_id"] = serde_json::Value::Null;
    let err = Member::from_json(&v.to_string()).unwrap_err();
    assert_eq!(err.field, "relation");
    v["relation"] = serde_json::Value::Null;
    assert!(Member::from_json(&v.to_string()).is_ok());
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for bad in [
        "",
        "{",
        "[]",
        "null",
        "42",
        "{\"national_id\":",
        "{} trailing",
        "\u{0}",
        "{\"a\":1}{\"b\":2}",
    ] {
        assert!(Member::from_json(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let json = with("updated_at", serde_json::json!("2026-01-01T00:00:00Z"));
    assert!(Member::from_json(&json).is_ok());
}

#[test]
fn booklet_numbers_keep_leading_zeros() {
    let b = Booklet::parse("000930").unwrap();
    assert_eq!(b.to_string(), "000930");
    assert_ne!(b, Booklet::parse("930").unwrap());
    assert_eq!(
        Booklet::parse("۰۹۳").unwrap(),
        Booklet::parse("093").unwrap()
    );
    assert_eq!(Booklet::parse(""), None);
    assert_eq!(Booklet::parse("12a"), None);
    assert!(Booklet::parse(&"9".repeat(18)).is_some());
    assert_eq!(Booklet::parse(&"9".repeat(19)), None);
}

#[test]
fn validate_refuses_impossible_stored_values() {
    let good = Member::from_json(GOOD).unwrap();
    let mut m = good.clone();
    m.services = Services(0xff);
    assert_eq!(m.validate().unwrap_err().field, "services");
    let mut m = good.clone();
    m.coverage_until = Some(i32::MAX);
    assert_eq!(m.validate().unwrap_err().field, "coverage_until");
    let mut m = good.clone();
    m.booklet_no = Some(Booklet(3));
    assert_eq!(m.validate().unwrap_err().field, "booklet_no");
    let mut m = good;
    m.kind = Kind::Main;
    assert_eq!(m.validate().unwrap_err().field, "main_national_id");
}

#[test]
fn names_are_masked() {
    assert_eq!(mask_name("علی رضایی"), "علی ر***");
    assert_eq!(mask_name("  Sara   Ahmadi  "), "Sara A***");
    assert_eq!(mask_name("محمد علی احمدی"), "محمد ا***");
    assert_eq!(mask_name("Sara"), "S***");
    assert_eq!(mask_name("   "), "");
}

#[test]
fn the_longest_names_still_mask_into_valid_names() {
    // 196 letters, a space and one letter: masked naively it is 201 characters.
    let long = format!("{} b", "a".repeat(196));
    validate_name(&long).unwrap();
    let masked = mask_name(&long);
    assert_eq!(masked.chars().count(), MAX_NAME_CHARS);
    assert!(masked.ends_with(" b***"), "{masked}");
    validate_name(&masked).unwrap();
    let padded = format!("  {}\u{3000}", "ب".repeat(200));
    validate_name(&padded).unwrap();
    assert_eq!(mask_name(&padded), "ب***");
    assert_eq!(
        validate_name(" a\nb").unwrap_err().field,
        "display_name",
        "a control character is refused wherever it stands"
    );
    let trailing = Member::from_json(&GOOD.replace("علی رضایی", "Sara Ahmadi\\n"));
    assert_eq!(trailing.unwrap_err().field, "display_name");
}

mod masking {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever name the rules accept, its masked form (what a snapshot stores) is
        /// accepted by the same rule.
        #[test]
        fn every_valid_name_masks_into_a_valid_name(
            words in proptest::collection::vec("[a-zA-Zآ-ی]{1,120}", 1..6),
            gaps in proptest::collection::vec("[ \u{a0}\u{3000}]{1,3}", 6),
        ) {
            let mut name = String::new();
            for (word, gap) in words.iter().zip(&gaps) {
                name.push_str(word);
                name.push_str(gap);
            }
            let name: String = name.chars().take(MAX_NAME_CHARS).collect();
            prop_assume!(validate_name(&name).is_ok());
            let masked = mask_name(&name);
            prop_assert!(validate_name(&masked).is_ok(), "{} chars", masked.chars().count());
        }
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn on_arbitrary_text(s in "\\PC{0,200}") {
            let _ = Member::from_json(&s);
        }

        #[test]
        fn on_any_prefix_or_byte_change_of_a_good_record(cut in 0usize..400, at in 0usize..400, c in any::<char>()) {
            let good = GOOD;
            let cut = cut.min(good.len());
            if good.is_char_boundary(cut) {
                let _ = Member::from_json(&good[..cut]);
            }
            let mut chars: Vec<char> = good.chars().collect();
            let at = at.min(chars.len() - 1);
            chars[at] = c;
            let changed: String = chars.into_iter().collect();
            if let Ok(m) = Member::from_json(&changed) {
                prop_assert!(m.validate().is_ok());
            }
        }
    }
}

#[test]
fn a_record_that_is_not_an_object_never_echoes_an_id() {
    for json in [r#""0012345679""#, "0012345679", "[\"0012345679\"]", "{"] {
        let e = Member::from_json(json).unwrap_err();
        assert_eq!(e.field, "record", "{json}: {e}");
        assert!(!e.to_string().contains("0012345679"), "{json}: {e}");
    }
}
