use super::*;
use crate::member::{Booklet, Kind, OtherInsurer, Service};
use serde_json::json;

type Entry = Vec<(Vec<u8>, Vec<u8>)>;

const ID: &str = "0012345679";
const OTHER_ID: &str = "0499370899";
const MINIMAL: &str = r#"{"national_id":"0012345679","version":3,"kind":"main","scheme":"mandatory","status":"active","coverage_until":"2027-03-20","services":["outpatient"]}"#;
const NULL: Value = Value::Null;

fn entry(pairs: &[(&str, &str)]) -> Entry {
    let bytes = |s: &str| s.as_bytes().to_vec();
    pairs.iter().map(|(n, v)| (bytes(n), bytes(v))).collect()
}

fn upsert(national_id: &str, version: &str, member: &str) -> Entry {
    let mut fields = delete(national_id, version);
    fields[0].1 = b"upsert".to_vec();
    fields.push((b"member".to_vec(), member.as_bytes().to_vec()));
    fields
}

fn delete(national_id: &str, version: &str) -> Entry {
    let op = ("op", "delete");
    entry(&[op, ("national_id", national_id), ("version", version)])
}

fn change(fields: &Entry) -> Change {
    let Ok(Event::Change(c)) = parse_entry(fields) else {
        panic!("{fields:?}")
    };
    c
}

fn member(fields: &Entry) -> Member {
    let Change::Upsert(m) = change(fields) else {
        panic!("{fields:?}")
    };
    m
}

fn deletion(national_id: &str, version: u64) -> Change {
    let national_id = NationalId::parse(national_id).unwrap();
    Change::Delete {
        national_id,
        version,
    }
}

fn rejected(fields: &Entry) -> Rejection {
    parse_entry(fields).expect_err("a rejection")
}

fn reason(fields: &Entry) -> &'static str {
    rejected(fields).reason()
}

fn message(fields: &Entry) -> String {
    rejected(fields).to_string()
}

/// A native upsert of the minimal record with one field changed.
fn native_with(field: &str, value: Value) -> Entry {
    let mut m: Value = serde_json::from_str(MINIMAL).unwrap();
    if field == "main_national_id" {
        m["kind"] = json!("dependent");
    }
    m[field] = value;
    upsert(ID, "3", &m.to_string())
}

/// The field an `Invalid` rejection names.
fn invalid_field(fields: &Entry) -> String {
    let Rejection::Invalid(e) = rejected(fields) else {
        panic!("{fields:?}")
    };
    e.field
}

/// The member read from the usual row with one column changed.
fn read(column: &str, value: Value) -> Member {
    member(&created_with(column, value))
}

/// The field named when the usual row with one column changed is refused.
fn refused(column: &str, value: Value) -> String {
    invalid_field(&created_with(column, value))
}

fn id(s: &str) -> NationalId {
    NationalId::parse(s).unwrap()
}

fn day(iso: &str) -> i32 {
    Day::parse_iso(iso).unwrap().0
}

/// A row of the reference table as Debezium's PostgreSQL connector writes it: the date as
/// days since the epoch, jsonb as a string, plus a column the record does not have.
fn row(national_id: &str, version: u64) -> Value {
    json!({
        "national_id": national_id, "version": version, "kind": "dependent",
        "main_national_id": OTHER_ID, "relation": "child", "scheme": "mandatory",
        "status": "active", "coverage_until": day("2026-12-31"),
        "services": ["outpatient", "pharmacy"], "special_conditions": ["dialysis"],
        "other_insurers": "[{\"code\": \"salamat\", \"primary\": false}]",
        "booklet_no": "930123456789", "display_name": "علی رضایی",
        "updated_at": 1_767_225_600_000_000_i64
    })
}

fn row_with(column: &str, value: Value) -> Value {
    let mut r = row(ID, 7);
    r[column] = value;
    r
}

fn envelope(op: &str, before: Value, after: Value) -> Value {
    json!({
        "before": before, "after": after,
        "source": {
            "version": "2.7.3.Final", "connector": "postgresql", "name": "eligd",
            "ts_ms": 1_767_225_600_000_i64, "snapshot": if op == "r" { "true" } else { "false" },
            "db": "insurance", "sequence": "[\"24023128\",\"24023128\"]", "schema": "public",
            "table": "members", "txId": 741, "lsn": 24_023_128, "xmin": null
        },
        "op": op, "ts_ms": 1_767_225_600_123_i64, "transaction": null
    })
}

fn with_schema(payload: Value) -> Value {
    json!({
        "schema": {"type": "struct", "optional": false, "name": "eligd.public.members.Envelope",
                   "fields": [{"type": "string", "optional": false, "field": "op"}]},
        "payload": payload
    })
}

fn key(national_id: &str) -> Value {
    json!({ "national_id": national_id })
}

fn compact(key: &Value, value: &Value) -> Entry {
    entry(&[(&key.to_string(), &value.to_string())])
}

fn extended(key: &Value, value: &Value) -> Entry {
    entry(&[("key", &key.to_string()), ("value", &value.to_string())])
}

/// An extended `c` event for `row`, keyed by [`ID`].
fn created(row: Value) -> Entry {
    extended(&key(ID), &envelope("c", NULL, row))
}

/// An extended `c` event for the usual row with one column changed.
fn created_with(column: &str, value: Value) -> Entry {
    created(row_with(column, value))
}

#[test]
fn native_upserts_and_deletes_in_any_field_order() {
    let m = member(&upsert(ID, "3", MINIMAL));
    assert_eq!(m, Member::from_json(MINIMAL).unwrap());
    assert_eq!(m.kind, Kind::Main);
    let mut fields = upsert(ID, "3", MINIMAL);
    fields.reverse();
    fields.insert(2, (b"source".to_vec(), b"relay-2".to_vec()));
    assert_eq!(member(&fields), m);
    let mut fields = delete(ID, "9");
    assert_eq!(change(&fields), deletion(ID, 9));
    // A member on a delete is ignored, even one that is not UTF-8.
    fields.insert(0, (b"member".to_vec(), vec![0xff, b'{']));
    fields.reverse();
    assert_eq!(change(&fields), deletion(ID, 9));
}

#[test]
fn native_missing_fields_are_named_and_unknown_ops_unsupported() {
    let cases = "upsert:national_id upsert:version upsert:member delete:national_id delete:version";
    for (op, missing) in cases.split(' ').filter_map(|c| c.split_once(':')) {
        let mut fields = upsert(ID, "3", MINIMAL);
        fields[0].1 = op.as_bytes().to_vec();
        fields.retain(|(n, _)| n != missing.as_bytes());
        let expected = Rejection::Malformed(format!("{missing}: missing"));
        assert_eq!(rejected(&fields), expected);
    }
    for op in ["insert", "", "UPSERT", "drop table"] {
        let mut fields = delete(ID, "3");
        fields[0].1 = op.as_bytes().to_vec();
        assert_eq!(reason(&fields), "unsupported", "{op:?}");
    }
}

#[test]
fn non_utf8_bytes_are_malformed() {
    let names = ["op", "national_id", "version", "member"];
    for (i, name) in names.iter().enumerate() {
        let mut fields = upsert(ID, "3", MINIMAL);
        fields[i].1 = vec![0xc3, 0x28];
        assert_eq!(reason(&fields), "malformed");
        assert!(message(&fields).contains(name), "{name}");
    }
    let mut fields = created(row(ID, 7));
    fields[0].1 = vec![0xc3, 0x28];
    assert_eq!(message(&fields), "malformed entry: key: not UTF-8");
    fields[0].1 = b"null".to_vec();
    fields[1].1 = vec![0xff];
    assert_eq!(message(&fields), "malformed entry: value: not UTF-8");
}

#[test]
fn native_versions_are_plain_decimal_u64() {
    let too_big = "18446744073709551616";
    for bad in ["", "abc", "+3", "-3", "3.0", " 3", "3 ", too_big, "٣"] {
        assert_eq!(reason(&delete(ID, bad)), "malformed", "{bad:?}");
        assert!(message(&delete(ID, bad)).contains("version"));
    }
    let expected = Rejection::Malformed("version: must be at least 1".into());
    assert_eq!(rejected(&delete(ID, "0")), expected);
    let max = change(&delete(ID, "18446744073709551615"));
    assert_eq!(max.version(), u64::MAX);
    assert_eq!(change(&delete(ID, "007")).version(), 7);
}

#[test]
fn native_fields_must_agree_with_the_member() {
    assert_eq!(reason(&upsert(OTHER_ID, "3", MINIMAL)), "inconsistent");
    assert_eq!(reason(&upsert(ID, "4", MINIMAL)), "inconsistent");
    // The same ID without its leading zeros is the same person.
    let unpadded = member(&upsert("12345679", "3", MINIMAL));
    assert_eq!(unpadded.national_id, id(ID));
    let r = rejected(&upsert("0012345678", "3", MINIMAL));
    assert_eq!(r.reason(), "malformed");
    assert!(r.to_string().contains("national_id: "), "{r}");
}

#[test]
fn native_invalid_records_name_the_field() {
    let cases = [
        ("kind", json!("boss")),
        ("coverage_until", json!("2027-02-30")),
        ("services", json!(["massage"])),
        ("national_id", json!("0012345678")),
        ("main_national_id", json!(ID)),
    ];
    for (field, value) in cases {
        assert_eq!(invalid_field(&native_with(field, value)), field);
    }
    assert_eq!(invalid_field(&upsert(ID, "3", "true")), "record");
    assert_eq!(reason(&upsert(ID, "3", "true")), "invalid_record");
}

#[test]
fn debezium_compact_and_extended_with_and_without_schema() {
    let env = envelope("c", NULL, row(ID, 7));
    let plain = (key(ID), env.clone());
    for (k, v) in [plain, (with_schema(key(ID)), with_schema(env))] {
        let m = member(&compact(&k, &v));
        assert_eq!(member(&extended(&k, &v)), m);
        assert_eq!((m.national_id, m.version), (id(ID), 7));
        assert_eq!(m.main_national_id, Some(id(OTHER_ID)));
        assert_eq!(m.coverage_day().unwrap().to_string(), "2026-12-31");
        assert!(m.services.contains(Service::Pharmacy) && !m.services.contains(Service::Dental));
        assert_eq!(m.special_conditions, ["dialysis"]);
        assert_eq!(m.booklet_no.unwrap().to_string(), "930123456789");
        assert_eq!(m.other_insurers[0].code, "salamat");
    }
    // Field order and unknown fields do not matter in the extended layout either.
    let env = envelope("c", NULL, row(ID, 2)).to_string();
    let key = key(ID).to_string();
    let fields = entry(&[("value", &env), ("origin", "dbz"), ("key", &key)]);
    assert_eq!(member(&fields).version, 2);
}

#[test]
fn debezium_ops_c_u_r_upsert_and_d_deletes() {
    for op in ["c", "u", "r"] {
        let before = if op == "u" { row(ID, 4) } else { NULL };
        let m = member(&compact(&key(ID), &envelope(op, before, row(ID, 5))));
        assert_eq!(m.version, 5, "{op}");
    }
    let deleted = envelope("d", row(ID, 8), NULL);
    assert_eq!(change(&compact(&key(ID), &deleted)), deletion(ID, 8));
}

#[test]
fn tombstones_carry_nothing() {
    let key = key(ID).to_string();
    let wrapped_null = r#"{"schema":null,"payload":null}"#;
    let cases = [
        entry(&[(&key, "default")]),
        entry(&[(&key, "null")]),
        entry(&[("default", "default")]),
        entry(&[("key", &key), ("value", "default")]),
        entry(&[("key", "default"), ("value", "null")]),
        entry(&[("key", &key), ("value", wrapped_null)]),
    ];
    for fields in cases {
        assert_eq!(parse_entry(&fields), Ok(Event::Tombstone), "{fields:?}");
    }
}

#[test]
fn dates_and_versions_follow_debeziums_type_mappings() {
    let days = day("2027-03-20");
    let cover = |value: Value| read("coverage_until", value).coverage_until;
    assert_eq!(cover(json!(days)), Some(days));
    assert_eq!(cover(json!("2027-03-20")), Some(days));
    assert_eq!(cover(json!(0)), Some(0));
    assert_eq!(cover(NULL), None);
    let mut absent = row(ID, 7);
    absent.as_object_mut().unwrap().remove("coverage_until");
    assert_eq!(member(&created(absent)).coverage_until, None);
    let beyond_i32 = json!(3_000_000_000_i64);
    let iso_basic = json!("20270320");
    for bad in [
        json!(1e6),
        json!(100_000),
        beyond_i32,
        json!(true),
        iso_basic,
    ] {
        assert_eq!(refused("coverage_until", bad), "coverage_until");
    }
    // Versions: a JSON number (bigint) or a decimal string (numeric).
    assert_eq!(read("version", json!(12)).version, 12);
    assert_eq!(read("version", json!("12")).version, 12);
    for bad in [json!(-1), json!(1.5), json!("12a"), json!(""), json!([12])] {
        assert_eq!(refused("version", bad), "version");
    }
    let deleted = envelope("d", row_with("version", json!("31")), NULL);
    assert_eq!(change(&compact(&key(ID), &deleted)).version(), 31);
}

#[test]
fn other_insurers_arrive_as_an_array_or_a_json_string() {
    let code = "salamat".to_string();
    let salamat = vec![OtherInsurer {
        code,
        primary: true,
    }];
    let array = json!([{"code": "salamat", "primary": true}]);
    let insurers = |value: Value| read("other_insurers", value).other_insurers;
    assert_eq!(insurers(json!(array.to_string())), salamat);
    assert_eq!(insurers(array), salamat);
    for empty in [json!("null"), json!("[]"), json!([]), NULL] {
        assert!(insurers(empty).is_empty());
    }
    let cases = [
        (json!("[{"), "other_insurers"),
        (json!({"code": "x"}), "other_insurers"),
        (json!([{"code": 5, "primary": true}]), "other_insurers"),
        (json!("[{\"code\":\"x\",\"primary\":1}]"), "other_insurers"),
        (json!([{"code": "x"}]), "other_insurers.primary"),
        (
            json!([{"code": "X", "primary": true}]),
            "other_insurers.code",
        ),
    ];
    for (value, field) in cases {
        assert_eq!(refused("other_insurers", value), field);
    }
}

#[test]
fn extra_columns_are_ignored_and_nulls_are_absent() {
    let mut r = row(ID, 7);
    let o = r.as_object_mut().unwrap();
    o.insert("created_at".into(), json!("2026-01-01T00:00:00Z"));
    o.insert("region".into(), json!({"code": 21}));
    o.insert("special_conditions".into(), NULL);
    o.insert("display_name".into(), NULL);
    let m = member(&created(r));
    assert!(m.special_conditions.is_empty());
    assert_eq!(m.display_name, None);
}

#[test]
fn rows_breaking_the_record_rules_are_invalid() {
    let cases = [
        ("services", NULL, "services"),
        ("services", json!(["outpatient", null]), "services"),
        ("services", json!("{outpatient}"), "services"),
        ("kind", json!("boss"), "kind"),
        ("kind", json!(1), "kind"),
        ("national_id", json!(12_345_679), "national_id"),
        ("main_national_id", NULL, "main_national_id"),
        ("booklet_no", json!(930_123_456_789_i64), "booklet_no"),
        ("version", json!(0), "version"),
    ];
    for (column, value, field) in cases {
        let snapshot_read = envelope("r", NULL, row_with(column, value));
        assert_eq!(invalid_field(&compact(&NULL, &snapshot_read)), field);
    }
    let before = row_with("national_id", json!("0012345678"));
    let fields = compact(&NULL, &envelope("d", before, NULL));
    assert_eq!(invalid_field(&fields), "national_id");
}

#[test]
fn deletes_need_the_whole_old_row() {
    let mut key_only = row(ID, 1);
    let columns = key_only.as_object_mut().unwrap();
    columns.retain(|k, _| k == "national_id");
    let no_version = row_with("version", NULL);
    for before in [key_only, no_version, row_with("version", json!(0)), NULL] {
        let fields = compact(&key(ID), &envelope("d", before, NULL));
        assert_eq!(reason(&fields), "malformed");
        assert!(message(&fields).contains("REPLICA IDENTITY FULL"));
    }
}

#[test]
fn truncates_and_unknown_ops_are_unsupported() {
    let truncate = json!({"before": null, "after": null, "op": "t", "ts_ms": 1,
        "source": {"connector": "postgresql", "db": "insurance", "schema": "public",
                   "table": "members", "lsn": 1, "txId": 2}});
    let r = rejected(&compact(&NULL, &truncate));
    assert_eq!(r.reason(), "unsupported");
    assert!(r.to_string().contains("truncate"), "{r}");
    for op in ["m", "x", "upsert"] {
        let fields = compact(&key(ID), &envelope(op, NULL, row(ID, 1)));
        assert_eq!(reason(&fields), "unsupported", "{op}");
    }
}

#[test]
fn the_key_must_agree_with_the_row() {
    let upsert = extended(&key(OTHER_ID), &envelope("c", NULL, row(ID, 7)));
    assert_eq!(reason(&upsert), "inconsistent");
    let deleted = envelope("d", row(ID, 7), NULL);
    let delete = compact(&with_schema(key(OTHER_ID)), &deleted);
    assert_eq!(reason(&delete), "inconsistent");
    // Without a key, the row's national ID is used.
    let env = envelope("c", NULL, row(ID, 7)).to_string();
    let wrapped_null = r#"{"schema":null,"payload":null}"#;
    for k in ["", "null", "default", " null ", wrapped_null] {
        let fields = entry(&[("key", k), ("value", &env)]);
        assert_eq!(member(&fields).national_id, id(ID), "{k:?}");
    }
    assert_eq!(member(&entry(&[("value", &env)])).national_id, id(ID));
    // A key whose ID is not valid, or that has none, is malformed.
    for k in [key("0012345678"), json!({"id": 3}), json!([ID]), json!(5)] {
        let fields = extended(&k, &envelope("c", NULL, row(ID, 7)));
        assert_eq!(reason(&fields), "malformed", "{k}");
    }
}

#[test]
fn garbage_and_empty_entries_are_malformed() {
    let env = envelope("c", NULL, row(ID, 1)).to_string();
    let flattened = r#"{"national_id":"0012345679","__op":"c","__deleted":"false"}"#;
    let values = r#"not-json { [] 42 "c" {"before":null,"after":null} {"op":"c","after":[1]}"#;
    let more = [r#"{"op":"c","after":null}"#, flattened];
    for value in values.split(' ').chain(more) {
        assert_eq!(reason(&entry(&[("value", value)])), "malformed", "{value}");
    }
    let two = entry(&[("a", "b"), ("c", "d")]);
    for fields in [
        entry(&[("{not a key", &env)]),
        entry(&[("\u{0}", "\u{2}")]),
        two,
    ] {
        assert_eq!(reason(&fields), "malformed", "{fields:?}");
    }
    let expected = Rejection::Malformed("the entry has no fields".into());
    assert_eq!(parse_entry(&[]), Err(expected));
}

/// Every way an ID can arrive broken (or valid but refused) must leave it out of the text.
#[test]
fn national_ids_never_appear_in_rejections() {
    let mut cases: Vec<(String, Entry)> = Vec::new();
    let bad_ids = "0012345678 00123456790 00123a5679 ۰۰۱۲۳۴۵۶۷۸ 1234567 1111111111 0012345679x";
    for bad in bad_ids.split(' ').chain(["499370890"]) {
        let quoted = json!(bad).to_string();
        let mut add = |fields: Entry| cases.push((bad.to_string(), fields));
        add(upsert(bad, "3", MINIMAL));
        for field in ["national_id", "main_national_id", "kind", "coverage_until"] {
            add(native_with(field, json!(bad)));
        }
        add(upsert(ID, "3", &quoted));
        add(upsert(ID, "3", &format!("[{quoted}]")));
        add(delete(bad, "3"));
        let mut unknown_op = delete(bad, "3");
        unknown_op[0].1 = bad.as_bytes().to_vec();
        add(unknown_op);
        add(extended(&key(bad), &envelope("c", NULL, row(ID, 7))));
        add(extended(&json!(bad), &envelope("c", NULL, row(ID, 7))));
        for column in "national_id main_national_id coverage_until status".split(' ') {
            add(created_with(column, json!(bad)));
        }
        let insurers = format!("[{{\"code\":{quoted}}}]");
        add(created_with("other_insurers", json!(insurers)));
        add(created_with("other_insurers", json!([{ "code": bad }])));
        let deleted = envelope("d", row_with("national_id", json!(bad)), NULL);
        add(compact(&NULL, &deleted));
        add(entry(&[("value", &quoted)]));
        add(entry(&[("value", &format!("{{\"op\":{quoted}}}"))]));
        // Only where the text is not a valid value for the field anyway.
        if parse_decimal(bad.as_bytes()).is_none() {
            add(delete(ID, bad));
            add(created_with("version", json!(bad)));
        }
        if Booklet::parse(bad).is_none() {
            add(native_with("booklet_no", json!(bad)));
            add(created_with("booklet_no", json!(bad)));
        }
        if let Ok(n) = bad.parse::<u64>() {
            cases.push((n.to_string(), created_with("national_id", json!(n))));
            cases.push((n.to_string(), upsert(ID, "3", &n.to_string())));
        }
    }
    // Valid IDs that disagree with each other, or a dependent that is its own main insured.
    for fields in [
        upsert(OTHER_ID, "3", MINIMAL),
        extended(&key(OTHER_ID), &envelope("c", NULL, row(ID, 7))),
        compact(&key(OTHER_ID), &envelope("d", row(ID, 7), NULL)),
        created_with("main_national_id", json!(ID)),
    ] {
        cases.push((ID.to_string(), fields.clone()));
        cases.push((OTHER_ID.to_string(), fields));
    }
    for (secret, fields) in cases {
        let Err(r) = parse_entry(&fields) else {
            panic!("{fields:?} was accepted")
        };
        let digits: String = secret.chars().filter(char::is_ascii_digit).collect();
        let core = digits.trim_start_matches('0');
        for shown in [r.to_string(), format!("{r:?}")] {
            assert!(!shown.contains(&secret), "{secret} in {shown}");
            assert!(core.len() < 6 || !shown.contains(core), "{core} in {shown}");
        }
    }
}
