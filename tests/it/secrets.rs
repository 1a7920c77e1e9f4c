//! Secrets the way clusters hand them over (docs/operations.md, "Secrets"), against real
//! private servers: Redis with `requirepass` and an ACL user, a Sentinel with `requirepass`,
//! PostgreSQL with `scram-sha-256`, passwords in files, the libpq `key=value` form and
//! `ELIGD_AUDIT_KEY_FILE`. Every secret here is distinctive, and every log line (at debug
//! level), every error output, every `--help` and every `/metrics` these tests produce is
//! scanned for them by a [`Witness`]: none may appear.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::Sentinel;

use crate::feed::{person, version};
use crate::records::{insert_main, records_db};
use crate::redis_server::RedisServer;
use crate::support::{assert_clean_failure, eligd_bin, http_get, stderr, stdout};
use crate::support::{metric, wait_for, Launch, Served};

const REDIS_PW: &str = "redis-Kq7vXz31";
const ACL_USER: &str = "eligd-relay";
const ACL_PW: &str = "acl-Lm4nBv82";
const READER: &str = "eligd-replica";
const READER_PW: &str = "reader-Pf2gTd64";
/// docs/security.md, "The change feed": what the relay's and a replica's ACL users need.
const RELAY_ACL: &str = "~eligd:changes* +eval +xadd +xinfo|stream +get +set +exists +xtrim +xrange +xread +wait +ping +select +role";
const REPLICA_ACL: &str = "%R~eligd:changes* +xread +xrange +xinfo|stream +get +ping +select +role";
const SENTINEL_PW: &str = "sentinel-Rt5yUi09";
/// With a space and a quote, so the `key=value` form must quote it.
const PG_PW: &str = "pg Zx8cVb46'q";
const PG_ROTATED: &str = "pg-Wn3mQa75";
const WRONG_PW: &str = "wrong-Hj6kLp53";
const AUDIT_HEX: &str = "a5d1f00da5d1f00da5d1f00da5d1f00da5d1f00da5d1f00da5d1f00da5d1f00d";

/// The distinctive parts of every secret: a line quoting one (encoded or escaped or not)
/// holds one of these.
const CORES: [&str; 9] = [
    "Kq7vXz31",
    "Lm4nBv82",
    "Pf2gTd64",
    "Rt5yUi09",
    "Zx8cVb46",
    "Wn3mQa75",
    "Hj6kLp53",
    "a5d1f00da5d1f00d",
    "A5D1F00DA5D1F00D",
];

/// Everything a test's processes said; [`Witness::check`] fails on any secret in it.
#[derive(Default)]
struct Witness {
    seen: Vec<(String, String)>,
}

impl Witness {
    fn saw(&mut self, what: &str, text: String) {
        self.seen.push((what.to_string(), text));
    }

    /// A one-shot command's standard error and output.
    fn output(&mut self, what: &str, o: &Output) {
        self.saw(&format!("{what}: stderr"), stderr(o));
        self.saw(&format!("{what}: stdout"), stdout(o));
    }

    /// A running process's `/metrics` now, and its whole log (call last).
    fn served(&mut self, what: &str, s: &Served) {
        let (_, metrics) = http_get(&s.addr, "/metrics");
        assert!(metrics.contains("# TYPE"), "{what}: no metrics: {metrics}");
        self.saw(&format!("{what}: /metrics"), metrics);
        self.saw(&format!("{what}: log"), s.log());
    }

    fn check(&self) {
        assert!(!self.seen.is_empty());
        for (what, text) in &self.seen {
            for core in CORES {
                if let Some(line) = text.lines().find(|l| l.contains(core)) {
                    panic!("a secret ({core}) in {what}: {line}");
                }
            }
        }
    }
}

/// A secret file as a Kubernetes Secret volume holds it (this one with a trailing newline).
fn secret_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    path
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `eligd ARGS` with this environment (and no audit key from the test's own).
fn eligd_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(eligd_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ELIGD_AUDIT_KEY")
        .env_remove("ELIGD_AUDIT_KEY_FILE")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn debug(args: &[&str]) -> Launch {
    Launch::args(args).env("RUST_LOG", "debug")
}

#[test]
fn redis_with_requirepass_and_an_acl_user_feeds_serve_and_the_relay() {
    let mut w = Witness::default();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_with_password(REDIS_PW);
    // The least privilege docs/security.md gives each: the relay writes the stream and its
    // keys through scripts; a replica may only read them.
    let acl = |user: &str, password: &str, rules: &str| {
        let password = format!(">{password}");
        let mut args = vec!["ACL", "SETUSER", user, "reset", "on", password.as_str()];
        args.extend(rules.split_whitespace());
        let _: String = redis.cmd(&args);
    };
    acl(ACL_USER, ACL_PW, RELAY_ACL);
    acl(READER, READER_PW, REPLICA_ACL);
    let pg = records_db();
    let default_pw = secret_file(dir.path(), "redis-password", REDIS_PW);
    let acl_pw = secret_file(dir.path(), "acl-password", ACL_PW);
    let url = redis.url();

    // The relay as its ACL user (--redis-username and a password file); one replica as the
    // default user with a password file, one as the replicas' ACL user named in the URL.
    let relay = debug(&[
        "relay",
        "--postgres-url",
        &pg.url(),
        "--redis-url",
        &url,
        "--redis-username",
        ACL_USER,
        "--redis-password-file",
        p(&acl_pw),
        "--poll-interval-ms",
        "200",
    ])
    .until("relay: active");
    let by_file = debug(&[
        "--demo-members",
        "2000",
        "--redis-url",
        &url,
        "--redis-password-file",
        p(&default_pw),
    ])
    .ready();
    let acl_url = format!("redis://{READER}:{READER_PW}@127.0.0.1:{}", redis.port());
    let by_url = debug(&["--demo-members", "2000", "--redis-url", &acl_url]).ready();
    let a = person(801);
    pg.execute(&insert_main(&a));
    wait_for("the change on both replicas", 30, || {
        version(&by_file, &a).is_some() && version(&by_url, &a).is_some()
    });
    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    assert!(clients.contains(&format!("user={ACL_USER}")), "{clients}");
    assert!(clients.contains(&format!("user={READER}")), "{clients}");

    // A wrong password, none, an empty file: clear errors naming what to check.
    let wrong = secret_file(dir.path(), "wrong", WRONG_PW);
    let o = eligd_env(
        &[
            "snapshot",
            "position",
            "--redis-url",
            &url,
            "--redis-password-file",
            p(&wrong),
        ],
        &[],
    );
    assert_clean_failure(&o, "refused the credentials: WRONGPASS");
    assert!(
        stderr(&o).contains("--redis-password-file"),
        "{}",
        stderr(&o)
    );
    w.output("wrong password", &o);
    let o = eligd_env(&["snapshot", "position", "--redis-url", &url], &[]);
    assert_clean_failure(&o, "NOAUTH");
    w.output("no password", &o);
    let o = eligd_env(
        &[
            "snapshot",
            "position",
            "--redis-url",
            &format!("redis://{ACL_USER}:{WRONG_PW}@127.0.0.1:{}", redis.port()),
        ],
        &[],
    );
    assert_clean_failure(&o, "WRONGPASS");
    w.output("wrong password in the URL", &o);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let o = eligd_env(
        &[
            "snapshot",
            "position",
            "--redis-url",
            &url,
            "--redis-password-file",
            p(&empty),
        ],
        &[],
    );
    assert_clean_failure(&o, "--redis-password-file");
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = eligd_env(
        &[
            "snapshot",
            "position",
            "--redis-url",
            &url,
            "--redis-username",
            ACL_USER,
        ],
        &[],
    );
    assert_clean_failure(&o, "needs a password");
    let refused = debug(&[
        "--demo-members",
        "2000",
        "--redis-url",
        &url,
        "--redis-password-file",
        p(&wrong),
    ])
    .until("Redis unavailable");
    assert!(refused.log().contains("refused the credentials"));

    for (what, s) in [
        ("relay", &relay),
        ("replica (file)", &by_file),
        ("replica (URL)", &by_url),
        ("replica (wrong)", &refused),
    ] {
        w.served(what, s);
    }
    w.check();
}

#[test]
fn serve_finds_the_master_through_sentinels_that_require_a_password() {
    const MASTER: &str = "eligd";
    let mut w = Witness::default();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_with_password(REDIS_PW);
    let sentinel = Sentinel::start_with_password(MASTER, &redis, 1, Some(SENTINEL_PW));
    wait_for("the sentinel to name the master", 10, || {
        sentinel.master_port(MASTER) == Some(redis.port())
    });
    let redis_pw = secret_file(dir.path(), "redis-password", REDIS_PW);
    let sentinel_pw = secret_file(dir.path(), "sentinel-password", SENTINEL_PW);
    let address = sentinel.address();
    let through = [
        "--redis-sentinels",
        address.as_str(),
        "--redis-master",
        MASTER,
        "--redis-password-file",
        p(&redis_pw),
    ];

    let by_file = debug(&["--demo-members", "2000"])
        .flags(&through)
        .flags(&["--redis-sentinel-password-file", p(&sentinel_pw)])
        .ready();
    let by_env = debug(&["--demo-members", "2000"])
        .flags(&through)
        .env("ELIGD_REDIS_SENTINEL_PASSWORD", SENTINEL_PW)
        .ready();
    for s in [&by_file, &by_env] {
        wait_for("the feed connected through the sentinel", 30, || {
            metric(s, "eligd_feed_connected") == 1.0
        });
    }
    let position = |extra: &[&str]| {
        let mut args = vec!["snapshot", "position"];
        args.extend(through);
        args.extend(extra);
        eligd_env(&args, &[])
    };
    let o = position(&["--redis-sentinel-password-file", p(&sentinel_pw)]);
    assert!(o.status.success(), "{}", stderr(&o));
    w.output("position through the sentinel", &o);

    // Without the sentinels' password, or a wrong one: the sentinel's refusal, naming the
    // sentinel's flags.
    let o = position(&[]);
    assert_clean_failure(&o, "NOAUTH");
    assert!(stderr(&o).contains("--redis-sentinel-password"));
    w.output("no sentinel password", &o);
    let wrong = secret_file(dir.path(), "wrong", WRONG_PW);
    let o = position(&["--redis-sentinel-password-file", p(&wrong)]);
    assert_clean_failure(&o, "WRONGPASS");
    assert!(stderr(&o).contains("--redis-sentinel-password"));
    w.output("wrong sentinel password", &o);
    // The sentinels' password is not the data's: the master refuses it.
    let o = eligd_env(
        &[
            "snapshot",
            "position",
            "--redis-sentinels",
            &address,
            "--redis-master",
            MASTER,
            "--redis-password-file",
            p(&wrong),
            "--redis-sentinel-password-file",
            p(&sentinel_pw),
        ],
        &[],
    );
    assert_clean_failure(&o, "--redis-password-file");
    w.output("wrong master password", &o);

    w.served("replica (sentinel password file)", &by_file);
    w.served("replica (sentinel password env)", &by_env);
    w.check();
}

#[test]
fn postgres_with_scram_is_reached_in_key_value_form_and_with_a_password_file() {
    let mut w = Witness::default();
    let dir = tempfile::tempdir().unwrap();
    let pg = records_db();
    pg.require_password(PG_PW);
    let redis = RedisServer::start();
    let kv = |password: Option<&str>| {
        let quoted = password
            .map(|pw| {
                format!(
                    " password='{}'",
                    pw.replace('\\', "\\\\").replace('\'', "\\'")
                )
            })
            .unwrap_or_default();
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=eligd sslmode=disable{quoted}",
            pg.port()
        )
    };
    let pg_file = secret_file(dir.path(), "pg-password", PG_PW);
    let wrong = secret_file(dir.path(), "wrong", WRONG_PW);
    pg.execute(&insert_main(&person(810)));
    let build = |conninfo: &str, extra: &[&str]| {
        let out = dir.path().join("s.snap");
        let mut args = vec![
            "snapshot",
            "build",
            "--from-postgres",
            conninfo,
            "--out",
            p(&out),
        ];
        args.extend(extra);
        eligd_env(&args, &[])
    };

    // key=value with the password in it; without, and a file; a URL with a wrong password
    // and the file (the file wins).
    for (what, o) in [
        ("key=value with the password", build(&kv(Some(PG_PW)), &[])),
        (
            "key=value and a file",
            build(&kv(None), &["--postgres-password-file", p(&pg_file)]),
        ),
        (
            "URL and a file",
            build(
                &format!(
                    "postgres://postgres:{WRONG_PW}@127.0.0.1:{}/eligd",
                    pg.port()
                ),
                &["--postgres-password-file", p(&pg_file)],
            ),
        ),
    ] {
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        w.output(what, &o);
    }
    for (what, o) in [
        ("wrong password", build(&kv(Some(WRONG_PW)), &[])),
        (
            "wrong password file",
            build(&kv(None), &["--postgres-password-file", p(&wrong)]),
        ),
    ] {
        assert_clean_failure(&o, "password authentication failed");
        w.output(what, &o);
    }
    let o = build(
        &kv(None),
        &["--postgres-password-file", p(&dir.path().join("missing"))],
    );
    assert_clean_failure(&o, "--postgres-password-file");
    w.output("missing password file", &o);

    // The relay in key=value form with a password file; the password is rotated (the role's
    // and the file's), the relay's connections cut: it reconnects with the new one.
    let relay = debug(&[
        "relay",
        "--postgres-url",
        &kv(None),
        "--postgres-password-file",
        p(&pg_file),
        "--redis-url",
        &redis.url(),
        "--poll-interval-ms",
        "200",
    ])
    .until("relay: active");
    let replica = debug(&["--demo-members", "2000", "--redis-url", &redis.url()]).ready();
    let a = person(811);
    pg.execute(&insert_main(&a));
    wait_for("the change relayed", 30, || version(&replica, &a).is_some());
    pg.execute(&format!("ALTER ROLE postgres PASSWORD '{PG_ROTATED}'"));
    std::fs::write(&pg_file, format!("{PG_ROTATED}\n")).unwrap();
    pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE client_addr IS NOT NULL AND pid <> pg_backend_pid()",
    );
    let b = person(812);
    pg.execute(&insert_main(&b));
    wait_for("a change relayed after the rotation", 60, || {
        version(&replica, &b).is_some()
    });
    assert!(
        relay.log().contains("the password file changed"),
        "{}",
        relay.log()
    );
    let refused = debug(&[
        "relay",
        "--postgres-url",
        &kv(None),
        "--postgres-password-file",
        p(&wrong),
        "--redis-url",
        &redis.url(),
    ])
    .until("relay: session ended");
    assert!(
        refused.log().contains("password authentication failed"),
        "{}",
        refused.log()
    );

    w.served("relay", &relay);
    w.served("replica", &replica);
    w.served("relay (wrong password)", &refused);
    w.check();
}

#[test]
fn the_audit_key_can_come_from_a_file() {
    let mut w = Witness::default();
    let dir = tempfile::tempdir().unwrap();
    let key_file = secret_file(dir.path(), "audit-key", AUDIT_HEX);
    let file_env = [("ELIGD_AUDIT_KEY_FILE", p(&key_file))];
    let id = person(1);
    let by_env = eligd_env(
        &["audit", "subject", &id],
        &[("ELIGD_AUDIT_KEY", AUDIT_HEX)],
    );
    let by_file = eligd_env(&["audit", "subject", &id], &file_env);
    assert!(by_file.status.success(), "{}", stderr(&by_file));
    assert_eq!(stdout(&by_file), stdout(&by_env));
    w.output("audit subject", &by_file);

    let log = dir.path().join("audit.log");
    let served = debug(&["--demo-members", "2000", "--audit-log", p(&log)])
        .env("ELIGD_AUDIT_KEY_FILE", p(&key_file))
        .ready();
    let (status, _) = http_get(&served.addr, &format!("/v1/members/{id}/eligibility"));
    assert!(status == 200 || status == 404, "{status}");
    let subject = stdout(&by_env)
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    wait_for("the inquiry's audit line", 10, || {
        crate::audit::lines(&log)
            .iter()
            .any(|l| l["subject"] == subject.as_str())
    });
    w.served("serve", &served);
    w.saw(
        "the audit log",
        std::fs::read_to_string(&log).unwrap_or_default(),
    );

    // Both, a missing file, an empty one, one that is not a key: clear errors.
    let malformed = secret_file(dir.path(), "malformed", &format!("x{WRONG_PW}"));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing");
    for (env, says) in [
        (
            vec![
                ("ELIGD_AUDIT_KEY", AUDIT_HEX),
                ("ELIGD_AUDIT_KEY_FILE", p(&key_file)),
            ],
            "both set",
        ),
        (vec![("ELIGD_AUDIT_KEY_FILE", p(&missing))], "cannot read"),
        (vec![("ELIGD_AUDIT_KEY_FILE", p(&empty))], "empty"),
        (
            vec![("ELIGD_AUDIT_KEY_FILE", p(&malformed))],
            "must hold the key in hexadecimal",
        ),
    ] {
        for args in [
            vec!["audit", "subject", id.as_str()],
            vec!["--listen", "127.0.0.1:0", "--audit-log", p(&log)],
        ] {
            let o = eligd_env(&args, &env);
            assert_clean_failure(&o, says);
            assert!(stderr(&o).contains("ELIGD_AUDIT_KEY"), "{}", stderr(&o));
            w.output(&format!("{args:?} {says}"), &o);
        }
    }
    w.check();
}

/// `--help` shows the environment's values for flags: never those that may hold a secret. A
/// connection string that cannot be read is refused without quoting any of it.
#[test]
fn no_secret_in_help_or_in_refused_connection_strings() {
    let mut w = Witness::default();
    let env = [
        (
            "ELIGD_REDIS_URL",
            format!("redis://:{REDIS_PW}@127.0.0.1:1"),
        ),
        (
            "ELIGD_POSTGRES_URL",
            format!("postgres://u:{ACL_PW}@127.0.0.1:1/db"),
        ),
        ("ELIGD_FROM_POSTGRES", format!("host=h password={ACL_PW}")),
        ("ELIGD_REDIS_SENTINEL_PASSWORD", SENTINEL_PW.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for sub in [
        vec!["serve"],
        vec!["relay"],
        vec!["snapshot", "build"],
        vec!["snapshot", "position"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let o = eligd_env(&args, &env);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("ELIGD_REDIS_URL"),
            "{args:?}: {}",
            stdout(&o)
        );
        w.output(&format!("{args:?}"), &o);
    }
    for (conninfo, says) in [
        (format!("host=h password={PG_PW} bogus=1"), "no `=value`"),
        (format!("host=h password={WRONG_PW} bogus=1"), "unknown key"),
        (format!("host=h password='{WRONG_PW}"), "no closing quote"),
        (WRONG_PW.to_string(), "not a PostgreSQL URL"),
        (
            format!("host=h password={WRONG_PW} sslmode=prefer"),
            "sslmode=prefer is not supported",
        ),
    ] {
        let o = eligd_env(
            &[
                "relay",
                "--postgres-url",
                &conninfo,
                "--redis-url",
                "redis://127.0.0.1:1",
            ],
            &[],
        );
        assert_clean_failure(&o, says);
        assert!(stderr(&o).contains("--postgres-url"), "{}", stderr(&o));
        w.output(&format!("relay --postgres-url ({says})"), &o);
    }
    w.check();
}
