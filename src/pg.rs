//! Reaching the records database: a `postgres://` URL with libpq's TLS parameters,
//! `sslmode=verify-full` (the server's certificate must chain to `sslrootcert`, or to the
//! system's roots, and name the host) or `sslmode=disable`. tokio-postgres does not read
//! `verify-full` or `sslrootcert` itself, so they are taken out of the URL here and become a
//! rustls connector. Modes that would connect without verifying (`require`, `verify-ca`) or
//! fall back to plain text (`prefer`, `allow`) are refused: the relay and snapshot builds
//! either verify the server or say plainly that they do not use TLS.

use std::path::Path;
use std::str::FromStr;

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls_client::{client_config, SYSTEM_ROOTS};

/// The database and how to reach it. Holds a password when the URL has one: never printed.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    /// `None`: plain TCP (no `sslmode`, or `sslmode=disable`).
    pub tls: Option<MakeRustlsConnect>,
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

impl PgTarget {
    /// Reads `url`, given as `flag` (for messages).
    pub fn parse(url: &str, flag: &str) -> Result<PgTarget, PgUrlError> {
        let bad = |what: String| PgUrlError(format!("{flag}: {what}"));
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(format!("not a PostgreSQL URL; expected {FORM}")));
        }
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
        let mut config = tokio_postgres::Config::from_str(&plain)
            .map_err(|_| bad(format!("not a usable PostgreSQL URL; expected {FORM}")))?;
        let tls = match mode.as_deref() {
            None | Some("disable") => {
                if root.is_some() {
                    return Err(bad("sslrootcert needs sslmode=verify-full".into()));
                }
                None
            }
            Some("verify-full") => {
                let (path, label) = match &root {
                    Some(p) => (Path::new(p.as_str()), format!("sslrootcert {p}")),
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
                return Err(bad(format!(
                    "sslmode={other} is not supported: eligd verifies the server (sslmode=verify-full with sslrootcert) or does not use TLS (sslmode=disable)"
                )))
            }
        };
        Ok(PgTarget { config, tls })
    }

    /// A blocking client (snapshot builds).
    pub fn connect_blocking(&self) -> Result<postgres::Client, postgres::Error> {
        let config = postgres::Config::from(self.config.clone());
        match &self.tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(postgres::NoTls),
        }
    }
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
                "sslrootcert /nonexistent.pem",
            ),
            ("mysql://u:hunter2@h/db", "not a PostgreSQL URL"),
            (
                "postgres://u:hunter2@h:port/db",
                "not a usable PostgreSQL URL",
            ),
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
