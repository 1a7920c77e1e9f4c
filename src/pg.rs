//! Reaching the records database: a `postgres://` URL, or libpq's `key=value` form
//! (`host=db port=5432 user=eligd dbname=records sslmode=verify-full sslrootcert=/ca.pem`,
//! values quoted `'…'` when they hold spaces, `\` escaping), with libpq's TLS parameters,
//! `sslmode=verify-full` (the server's certificate must chain to `sslrootcert`, or to the
//! system's roots, and name the host) or `sslmode=disable`. tokio-postgres does not read
//! `verify-full` or `sslrootcert` itself, so they are taken out of the URL here and become a
//! rustls connector. Modes that would connect without verifying (`require`, `verify-ca`) or
//! fall back to plain text (`prefer`, `allow`) are refused: the relay and snapshot builds
//! either verify the server or say plainly that they do not use TLS.
//!
//! A password file (`--postgres-password-file`) replaces any password in the connection
//! string; it is read again for every new connection (crate::secret). Neither the string nor
//! any value in it is ever echoed: errors name the flag and, at most, a key.

use std::path::Path;
use std::str::FromStr;

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::secret::Secret;
use crate::tls_client::{client_config, SYSTEM_ROOTS};

/// The database and how to reach it. Holds a password when the connection string or a file
/// has one: never printed.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    /// `None`: plain TCP (no `sslmode`, or `sslmode=disable`).
    pub tls: Option<MakeRustlsConnect>,
    /// `--postgres-password-file`: wins over a password in the connection string.
    password: Option<Secret>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A bad URL, named for the flag; never quotes the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgUrlError(String);

const FORM: &str = "postgres://user[:password]@host:port/db[?sslmode=verify-full&sslrootcert=PATH]";
const KV_FORM: &str =
    "host=H port=P user=U dbname=DB [sslmode=verify-full sslrootcert=PATH] (libpq's key=value form)";

impl PgTarget {
    /// Reads `url` (a URL or libpq's `key=value` form), given as `flag` (for messages).
    pub fn parse(url: &str, flag: &str) -> Result<PgTarget, PgUrlError> {
        let bad = |what: String| PgUrlError(format!("{flag}: {what}"));
        let (plain, mode, root) = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let (mut mode, mut root) = (None, None);
            let mut rest = form_urlencoded::Serializer::new(String::new());
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                match key.as_ref() {
                    "sslmode" => mode = Some(value.into_owned()),
                    "sslrootcert" => root = Some(value.into_owned()),
                    _ => {
                        rest.append_pair(&key, &value);
                    }
                }
            }
            let rest = rest.finish();
            let plain = if rest.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{rest}")
            };
            (plain, mode, root)
        } else if other_scheme(url) || !url.contains('=') {
            return Err(bad(format!(
                    "not a PostgreSQL URL or key=value connection string; expected {FORM}, or {KV_FORM}"
                )));
        } else {
            let pairs =
                parse_key_values(url).map_err(|what| bad(format!("{what}; expected {KV_FORM}")))?;
            let (mut mode, mut root) = (None, None);
            let mut rest = Vec::new();
            for (key, value) in pairs {
                match key.as_str() {
                    "sslmode" => mode = Some(value),
                    "sslrootcert" => root = Some(value),
                    _ => rest.push(format!("{key}={}", quote(&value))),
                }
            }
            (rest.join(" "), mode, root)
        };
        let mut config = tokio_postgres::Config::from_str(&plain).map_err(|_| {
            bad(format!(
                "not a usable PostgreSQL connection string (an unknown key or a bad value); expected {FORM}, or {KV_FORM}"
            ))
        })?;
        let tls = match mode.as_deref() {
            None | Some("disable") => {
                if root.is_some() {
                    return Err(bad("sslrootcert needs sslmode=verify-full".into()));
                }
                None
            }
            Some("verify-full") => {
                let (path, label) = match &root {
                    // The path is named only when it is a file: a value that is not could be
                    // the tail of an unquoted password with a space in it.
                    Some(p) if Path::new(p.as_str()).is_file() => {
                        (Path::new(p.as_str()), format!("sslrootcert {p}"))
                    }
                    Some(p) => (
                        Path::new(p.as_str()),
                        "sslrootcert (not a file that can be read)".to_string(),
                    ),
                    None => (
                        Path::new(SYSTEM_ROOTS),
                        format!("sslmode=verify-full without sslrootcert needs the system's roots at {SYSTEM_ROOTS}"),
                    ),
                };
                let tls = client_config(path, &label).map_err(bad)?;
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(tls))
            }
            Some(other) => {
                // libpq's modes are named; anything else is not echoed (it could be the tail
                // of an unquoted password with a space in it).
                let named = if ["allow", "prefer", "require", "verify-ca"].contains(&other) {
                    format!("sslmode={other}")
                } else {
                    "this sslmode".to_string()
                };
                return Err(bad(format!(
                    "{named} is not supported: eligd verifies the server (sslmode=verify-full with sslrootcert) or does not use TLS (sslmode=disable)"
                )));
            }
        };
        if config.get_hosts().is_empty() {
            return Err(bad(format!("names no host; expected {FORM}, or {KV_FORM}")));
        }
        Ok(PgTarget {
            config,
            tls,
            password: None,
        })
    }

    /// Uses the password in this file (`--postgres-password-file`) instead of any in the
    /// connection string.
    pub fn with_password(mut self, password: Option<Secret>) -> PgTarget {
        self.password = password;
        self
    }

    /// The settings for a new connection: a password file is read again now.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        if let Some(password) = &self.password {
            config.password(password.current());
        }
        config
    }

    /// A blocking client (snapshot builds).
    pub fn connect_blocking(&self) -> Result<postgres::Client, postgres::Error> {
        let config = postgres::Config::from(self.config());
        match &self.tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(postgres::NoTls),
        }
    }
}

/// Whether `text` starts like a URL of some scheme (`mysql://…`): not `key=value`, where a
/// value may hold `://`.
fn other_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// The keys libpq knows: an error may name one of these. Any other word may be part of a
/// password given unquoted with a space in it, so it is never named.
const KNOWN_KEYS: [&str; 24] = [
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "service",
];

fn named(key: &str) -> String {
    if KNOWN_KEYS.contains(&key) {
        format!("{key:?}")
    } else {
        "a key libpq does not know (a password with a space, unquoted?)".to_string()
    }
}

/// libpq's `key=value` connection string as pairs: whitespace between pairs and around `=`,
/// a value quoted `'…'` or bare, `\\` escaping the next character in both. An error names at
/// most a key libpq knows, never a value.
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("{} has no `=value`", named(&key)));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!("the value of {} has no closing quote", named(&key)))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(format!("{} has an empty value (quote it: '')", named(&key)));
            }
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(format!("{} is given twice", named(&key)));
        }
        pairs.push((key, value));
    }
}

/// A value quoted for the `key=value` form.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_kept() {
        let t = PgTarget::parse(
            "postgres://u:pw@db:5433/records?application_name=relay",
            "--x",
        )
        .unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.config.get_application_name(), Some("relay"));
        assert_eq!(t.config.get_dbname(), Some("records"));
        let t = PgTarget::parse("postgres://u@db/records?sslmode=disable", "--x").unwrap();
        assert!(t.tls.is_none());
    }

    #[test]
    fn the_key_value_form_is_read_like_libpq_and_a_password_file_wins() {
        let t = PgTarget::parse(
            "host=db port = 5433 user=eligd dbname='the records' password='it\\'s a \\\\ secret' sslmode=disable application_name=relay",
            "--x",
        )
        .unwrap();
        assert!(t.tls.is_none());
        let c = t.config();
        assert_eq!(c.get_dbname(), Some("the records"));
        assert_eq!(c.get_user(), Some("eligd"));
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_application_name(), Some("relay"));
        assert_eq!(c.get_password(), Some(&b"it's a \\ secret"[..]));
        let t = t.with_password(Some(Secret::Value("fromfile".into())));
        assert_eq!(t.config().get_password(), Some(&b"fromfile"[..]));
        let t = PgTarget::parse("postgres://u:inurl@db/records", "--x")
            .unwrap()
            .with_password(Some(Secret::Value("fromfile".into())));
        assert_eq!(t.config().get_password(), Some(&b"fromfile"[..]));
        assert!(!format!("{t:?}").contains("fromfile"));
        let e = PgTarget::parse(
            "host=db sslmode=verify-full sslrootcert=/nonexistent.pem",
            "--x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sslrootcert (not a file that can be read)"),
            "{e}"
        );
        assert!(
            !e.contains("nonexistent"),
            "a value that is not a file is not echoed: {e}"
        );
    }

    #[test]
    fn unverified_or_fallback_modes_and_bad_urls_are_clear_errors_without_the_password() {
        for (url, says) in [
            (
                "postgres://u:hunter2@h/db?sslmode=require",
                "sslmode=require is not supported",
            ),
            (
                "postgres://u:hunter2@h/db?sslmode=prefer",
                "sslmode=prefer is not supported",
            ),
            ("postgres://u:hunter2@h/db?sslmode=verify-ca", "verify-full"),
            (
                "postgres://u:hunter2@h/db?sslrootcert=/x.pem",
                "needs sslmode=verify-full",
            ),
            (
                "postgres://u:hunter2@h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem",
                "sslrootcert (not a file that can be read)",
            ),
            ("mysql://u:hunter2@h/db", "not a PostgreSQL URL"),
            (
                "postgres://u:hunter2@h:port/db",
                "not a usable PostgreSQL connection string",
            ),
            ("hunter2", "not a PostgreSQL URL or key=value"),
            ("host=h password='hunter2", "no closing quote"),
            ("host=h password", "\"password\" has no `=value`"),
            ("host=h password=hunter2 bogus=hunter2", "unknown key"),
            ("host=h password=hunter2 port=hunter2", "bad value"),
            ("host=h password=hunter2 password=x", "given twice"),
            ("host=h password=hun ter2", "a key libpq does not know"),
            (
                "password=hunter2 sslmode=require",
                "sslmode=require is not supported",
            ),
            ("user=u password=hunter2", "names no host"),
        ] {
            let e = PgTarget::parse(url, "--postgres-url")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(says) && e.starts_with("--postgres-url"),
                "{url}: {e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
