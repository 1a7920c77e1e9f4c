//! The records table and the record rules are one rule set: every row the `members` table
//! accepts, eligd accepts (so a committed row reaches every replica, whether it follows the
//! stream or is bootstrapped from the table), and every record eligd refuses, the table
//! refuses when it is written. Held to that on the edge values of every column and on random
//! combinations of them, against a private PostgreSQL with deploy/postgres/schema.sql.

use eligd::member::Member;

use crate::records::records_db;
use crate::support::Xorshift;

/// Edge values of each column, as SQL literals: valid ones, boundaries, and what each rule
/// refuses.
fn columns() -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &str| format!("'{v}'");
    let many_codes = format!(
        "'{{{}}}'",
        (0..17)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let many_insurers = format!(
        "'[{}]'",
        (0..17)
            .map(|i| format!(r#"{{"code":"i{i}","primary":false}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    vec![
        (
            "national_id",
            ["0012345679", "0012345678", "1111111111", "0499370899"]
                .map(s)
                .to_vec(),
        ),
        (
            "kind",
            ["main", "dependent", "pensioner", "boss"].map(s).to_vec(),
        ),
        (
            "main_national_id",
            vec![
                "NULL".into(),
                s("0499370899"),
                s("0012345679"),
                s("0499370898"),
                s("0000000000"),
            ],
        ),
        (
            "relation",
            vec!["NULL".into(), s("child"), s("spouse"), s("cousin")],
        ),
        (
            "scheme",
            ["mandatory", "self_employed", "other", "x"].map(s).to_vec(),
        ),
        (
            "status",
            ["active", "suspended", "deceased", "gone"].map(s).to_vec(),
        ),
        (
            "coverage_until",
            vec![
                "NULL".into(),
                s("2030-01-01"),
                s("1899-12-31"),
                s("1900-01-01"),
                s("2199-12-31"),
                s("2200-01-01"),
            ],
        ),
        (
            "services",
            vec![
                s("{}"),
                s("{pharmacy,dental}"),
                s("{outpatient,inpatient,pharmacy,paraclinic,dental}"),
                s("{massage}"),
                s("{pharmacy,NULL}"),
                s("{{pharmacy}}"),
            ],
        ),
        (
            "special_conditions",
            vec![
                s("{}"),
                s("{dialysis,a_b-9}"),
                s("{Dialysis}"),
                s("{\"a b\"}"),
                s(&format!("{{{}}}", "x".repeat(32))),
                s(&format!("{{{}}}", "x".repeat(33))),
                s("{NULL}"),
                s("{\"\"}"),
                many_codes,
            ],
        ),
        (
            "other_insurers",
            vec![
                s("[]"),
                s(r#"[{"code":"salamat","primary":false}]"#),
                s(r#"[{"code":"a","primary":true},{"code":"b","primary":false}]"#),
                s(r#"[{"code":"a","primary":true},{"code":"b","primary":true}]"#),
                s(r#"[{"code":"x"}]"#),
                s(r#"[{"primary":true}]"#),
                s(r#"[{"code":"a b","primary":true}]"#),
                s(r#"[{"code":7,"primary":true}]"#),
                s(r#"[{"code":"a","primary":"yes"}]"#),
                s(r#"[{"code":null,"primary":true}]"#),
                s(r#"[null]"#),
                s(r#"{}"#),
                many_insurers,
            ],
        ),
        (
            "booklet_no",
            vec![
                "NULL".into(),
                s("930123"),
                s("000777"),
                s(""),
                s(&"9".repeat(18)),
                s(&"9".repeat(19)),
                s("93-01"),
            ],
        ),
        (
            "display_name",
            vec![
                "NULL".into(),
                s("Sara Ahmadi"),
                s("علی رضایی"),
                s(&"ب".repeat(200)),
                s(&"ب".repeat(201)),
                s(&format!("  {}\u{3000}", "ب".repeat(200))),
                s(&format!("{} b", "a".repeat(196))),
                s(" \u{3000} "),
                "E'a\\nb'".into(),
                "E'Sara\\t'".into(),
                s("a\u{85}b"),
                s("a\u{7f}b"),
                s("a\u{200c}b"),
            ],
        ),
    ]
}

#[test]
fn the_table_and_the_record_rules_agree_on_every_case() {
    let pg = records_db();
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE members_unchecked (LIKE members INCLUDING DEFAULTS)")
        .unwrap();
    let columns = columns();
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    // A valid main insured: the first value of every column.
    let base: Vec<String> = columns.iter().map(|(_, v)| v[0].clone()).collect();
    let mut cases = vec![base.clone()];
    for (i, (_, values)) in columns.iter().enumerate() {
        for v in &values[1..] {
            let mut case = base.clone();
            case[i] = v.clone();
            cases.push(case);
        }
    }
    // A valid dependent, varied the same way, then random mixtures of everything.
    let mut dependent = base.clone();
    dependent[1] = "'dependent'".into();
    dependent[2] = "'0499370899'".into();
    dependent[3] = "'child'".into();
    for (i, (_, values)) in columns.iter().enumerate() {
        for v in values {
            let mut case = dependent.clone();
            case[i] = v.clone();
            cases.push(case);
        }
    }
    let mut picks = Xorshift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..600 {
        cases.push(
            columns
                .iter()
                .map(|(_, v)| v[picks.below(v.len())].clone())
                .collect(),
        );
    }

    let (mut accepted, mut refused) = (0, 0);
    for case in &cases {
        let insert = |table: &str| {
            format!(
                "INSERT INTO {table} ({}, version) VALUES ({}, 1)",
                names.join(", "),
                case.join(", ")
            )
        };
        let mut tx = client.transaction().unwrap();
        tx.batch_execute(&insert("members_unchecked"))
            .unwrap_or_else(|e| panic!("{:?}: {}", e.as_db_error(), insert("members_unchecked")));
        let json: String = tx
            .query_one(
                "SELECT (to_jsonb(m) - 'updated_at')::text FROM members_unchecked m",
                &[],
            )
            .unwrap()
            .get(0);
        let rules = Member::from_json(&json);
        let table = tx
            .batch_execute(&insert("members"))
            .map_err(|e| e.as_db_error().map(|d| d.message().to_string()));
        tx.rollback().unwrap();
        assert_eq!(
            table.is_ok(),
            rules.is_ok(),
            "the table says {table:?}, the record rules say {rules:?}, for {json}"
        );
        if table.is_ok() {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // Both kinds of case were exercised in quantity.
    assert!(
        accepted > 50 && refused > 300,
        "{accepted} accepted, {refused} refused"
    );
}
