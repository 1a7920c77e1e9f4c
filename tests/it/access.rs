//! Client keys against the real binary: `eligd keys add|list|revoke|rotate`, and `serve
//! --api-keys` refusing missing, wrong, expired, revoked and wrong-channel keys (401, 403),
//! rate limiting each key (429 with `Retry-After` and the `RateLimit` fields, a batch costing
//! its size), reloading on SIGHUP (a bad file keeps the keys in force), and listening beyond
//! loopback only with keys.

use std::path::Path;

use crate::support::wait_for;
use crate::support::{assert_clean_failure, eligd, http, serve, stderr, stdout, Answer, Served};

/// `eligd keys add` into `file`; returns the key printed.
pub(crate) fn add_key(
    file: &Path,
    client: &str,
    channel: &str,
    rate: u32,
    extra: &[&str],
) -> String {
    let rate = rate.to_string();
    let mut args = vec![
        "keys",
        "add",
        "--keys-file",
        file.to_str().unwrap(),
        "--client",
        client,
        "--channel",
        channel,
        "--rate",
        &rate,
    ];
    args.extend_from_slice(extra);
    let o = eligd(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let key = stdout(&o).trim().to_string();
    assert!(key.starts_with("eligd_"), "{key}");
    key
}

/// `eligd serve` on a small demo population with `--api-keys file`, once ready.
fn serve_with_keys(file: &Path) -> Served {
    let file = file.to_str().unwrap();
    serve(&["--demo-members", "1000", "--api-keys", file])
}

/// `eligd keys <args> --keys-file <file>`.
fn keys_command(file: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend(["--keys-file", file.to_str().unwrap()]);
    eligd(&all)
}

pub(crate) fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A JSON lookup of the demo population's first synthetic member with `key`.
fn lookup(served: &Served, key: Option<&str>) -> Answer {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    http(
        &served.addr,
        "GET",
        "/v1/members/0012345679/eligibility",
        &headers,
        b"",
    )
}

fn key_id(key: &str) -> &str {
    &key[6..14]
}

#[test]
fn keys_commands_add_list_revoke_rotate_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let key = add_key(
        &file,
        "pharmacy-1",
        "http",
        50,
        &["--expires", "2099-01-01"],
    );
    let listed = keys_command(&file, &["list"]);
    assert!(listed.status.success());
    let table = stdout(&listed);
    assert!(
        table.contains(key_id(&key)) && table.contains("pharmacy-1") && table.contains("active")
    );
    let secret = &key[15..];
    assert!(!table.contains(secret), "list never shows a secret");
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains(secret),
        "the file holds a hash"
    );

    let rotated = keys_command(&file, &["rotate", key_id(&key), "--overlap", "60"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let successor = stdout(&rotated).trim().to_string();
    assert_ne!(successor, key);
    let revoked = keys_command(&file, &["revoke", key_id(&successor)]);
    assert!(revoked.status.success());
    let table = stdout(&keys_command(&file, &["list"]));
    assert!(table.contains("revoked"), "{table}");

    let f = file.to_str().unwrap();
    // `keys add` with one client, channel, rate and expiry each (None: no --expires).
    let add = |client: &'static str, channel: &'static str, rate: &'static str, expires| {
        let mut args = vec!["keys", "add", "--keys-file", f, "--client", client];
        args.extend(["--channel", channel, "--rate", rate]);
        if let Some(expires) = expires {
            args.extend(["--expires", expires]);
        }
        args
    };
    for (args, needle) in [
        (
            vec!["keys", "revoke", "nokey123", "--keys-file", f],
            "no key with id",
        ),
        (add("two words", "http", "1", None), "--client"),
        (add("unauthenticated", "http", "1", None), "--client"),
        (add("x", "email", "1", None), "--channel"),
        (add("x", "http", "0", None), "--rate"),
        (add("x", "http", "1", Some("2001-01-01")), "past"),
        (add("x", "http", "1", Some("soon")), "--expires"),
        (
            vec!["keys", "rotate", key_id(&successor), "--keys-file", f],
            "revoked",
        ),
    ] {
        assert_clean_failure(&eligd(&args), needle);
    }
    let junk = dir.path().join("junk.json");
    std::fs::write(
        &junk,
        "{\"format\": \"eligd-keys/1\", \"keys\": [{\"id\": \"bad\"}]}",
    )
    .unwrap();
    assert_clean_failure(&keys_command(&junk, &["list"]), "not a keys file");
    assert_clean_failure(
        &keys_command(&dir.path().join("none.json"), &["list"]),
        "none.json",
    );
}

#[test]
fn every_inquiry_needs_a_key_for_its_channel_within_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let clinic = add_key(&file, "clinic-1", "http", 1, &["--burst", "3"]);
    let gateway = add_key(&file, "gateway-1", "ussd", 100, &[]);
    let batcher = add_key(&file, "hospital-1", "any", 1, &["--burst", "5"]);
    let served = serve_with_keys(&file);
    // No key, a malformed one, a wrong one: 401 with WWW-Authenticate, never a lookup.
    let wrong = format!("{}x", &clinic[..clinic.len() - 1]);
    for key in [None, Some("not-a-key"), Some(wrong.as_str())] {
        let a = lookup(&served, key);
        assert_eq!(a.status, 401, "{}", a.body);
        assert_eq!(a.json()["error"]["code"], "unauthorized");
        assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert!(a.json()["error"]["tracking_code"].is_string());
    }
    // The operations endpoints need none.
    assert_eq!(http(&served.addr, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(http(&served.addr, "GET", "/metrics", &[], b"").status, 200);
    // A key of another channel: 403.
    let a = lookup(&served, Some(&gateway));
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["code"], "forbidden");
    // The clinic's burst of 3, then 429 with the rate-limit fields. They are sent once more
    // than half the burst is used.
    for remaining in [2u32, 1, 0] {
        let a = lookup(&served, Some(&clinic));
        assert!(a.status == 200 || a.status == 404, "{}", a.body);
        if remaining < 3 / 2 {
            let expected = format!("\"key\";r={remaining};t={}", 3 - remaining);
            assert_eq!(a.header("ratelimit"), Some(expected.as_str()));
            assert_eq!(a.header("ratelimit-policy"), Some("\"key\";q=3;w=3"));
        } else {
            assert_eq!(a.header("ratelimit"), None, "well within the limit");
        }
    }
    let a = lookup(&served, Some(&clinic));
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["code"], "rate_limited");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert!(a.header("ratelimit").unwrap().contains("r=0"));
    // A batch costs its size. Above the burst it can never pass: 429, saying so (admission
    // took 1 of the burst of 5 first: every request pays before any work).
    let body = br#"{"national_ids": ["0012345679", "0499370899", "12"]}"#;
    let auth = bearer(&batcher);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let big = format!(
        "{{\"national_ids\": [{}]}}",
        ["\"0012345679\""; 6].join(",")
    );
    let a = http(
        &served.addr,
        "POST",
        "/v1/eligibility/batch",
        &headers,
        big.as_bytes(),
    );
    assert_eq!(a.status, 429);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("burst"));
    // 3 IDs from the 4 left, then 3 more do not fit.
    let a = http(
        &served.addr,
        "POST",
        "/v1/eligibility/batch",
        &headers,
        body,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["results"].as_array().unwrap().len(), 3);
    let a = http(
        &served.addr,
        "POST",
        "/v1/eligibility/batch",
        &headers,
        body,
    );
    assert_eq!(a.status, 429, "{}", a.body);

    let (_, metrics) = crate::support::http_get(&served.addr, "/metrics");
    for series in [
        r#"eligd_client_inquiries_total{client="unauthenticated",outcome="unauthorized"} 3"#,
        r#"eligd_client_inquiries_total{client="gateway-1",outcome="forbidden"} 1"#,
        r#"eligd_client_inquiries_total{client="clinic-1",outcome="rate_limited"} 1"#,
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
    assert!(!metrics.contains(&clinic[15..]), "no secret in /metrics");
}

#[test]
fn sighup_reloads_keys_and_a_bad_file_keeps_the_keys_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let first = add_key(&file, "clinic-1", "http", 100, &[]);
    let served = serve_with_keys(&file);
    assert_ne!(lookup(&served, Some(&first)).status, 401);
    let second = add_key(&file, "clinic-2", "http", 100, &[]);
    assert_eq!(
        lookup(&served, Some(&second)).status,
        401,
        "not reloaded yet"
    );
    served.signal("-HUP");
    wait_for("the new key", 10, || {
        lookup(&served, Some(&second)).status != 401
    });
    // Revoked, then reloaded: refused at once.
    let o = keys_command(&file, &["revoke", key_id(&first)]);
    assert!(o.status.success());
    served.signal("-HUP");
    wait_for("the revocation", 10, || {
        lookup(&served, Some(&first)).status == 401
    });
    // A rotated key: the old one keeps working through the overlap.
    let o = keys_command(&file, &["rotate", key_id(&second), "--overlap", "3600"]);
    let third = stdout(&o).trim().to_string();
    served.signal("-HUP");
    wait_for("the successor", 10, || {
        lookup(&served, Some(&third)).status != 401
    });
    assert_ne!(
        lookup(&served, Some(&second)).status,
        401,
        "the old key overlaps"
    );
    // A broken file: logged, counted, and every key in force still works, without a gap.
    std::fs::write(&file, "{ broken").unwrap();
    served.signal("-HUP");
    wait_for("the reload failure", 10, || {
        crate::support::metric(&served, "eligd_keys_reload_failures_total") == 1.0
    });
    assert_ne!(lookup(&served, Some(&third)).status, 401);
    assert!(served.log().contains("client keys NOT reloaded"));
}

#[test]
fn an_expired_key_is_refused_and_keys_allow_any_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let key = add_key(
        &file,
        "clinic-1",
        "http",
        100,
        &["--expires", &soon.to_rfc3339()],
    );
    let served = serve(&[
        "--listen",
        "0.0.0.0:0",
        "--demo-members",
        "1000",
        "--api-keys",
        file.to_str().unwrap(),
    ]);
    assert_ne!(lookup(&served, Some(&key)).status, 401);
    wait_for("the expiry", 10, || {
        lookup(&served, Some(&key)).status == 401
    });
    // Without keys a wildcard address is refused; with a bad keys file, the file is the error.
    assert_clean_failure(&eligd(&["serve", "--listen", "0.0.0.0:0"]), "--api-keys");
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "[]").unwrap();
    crate::keys_files::chmod(&junk, 0o600);
    assert_clean_failure(
        &eligd(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--api-keys",
            junk.to_str().unwrap(),
        ]),
        "not a keys file",
    );
}
