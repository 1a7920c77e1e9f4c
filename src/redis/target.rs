//! Where eligd's Redis is and how to reach it: `redis://` or `rediss://` (TLS, verified
//! against `--redis-ca` or the system's roots; never a fallback to plain text), directly or
//! through Redis Sentinel (`--redis-sentinels`, `--redis-master`). The feed, the relay and
//! snapshot builds all connect through this one description.
//!
//! Through Sentinel, each sentinel is asked in turn for the master's address, and the
//! master is asked its `ROLE` before it is used (a sentinel can be behind a failover); any
//! failure tries the next sentinel, and a failed connection later asks them again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::{Connection, Frame, RespError};
use crate::secret::Secret;
use crate::tls_client::{client_config, SYSTEM_ROOTS};

/// How to reach Redis. Holds passwords (the URL's or a file's, the sentinels'): never printed.
#[derive(Clone)]
pub struct RedisTarget {
    route: Route,
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
    /// The sentinels' own password (`requirepass` in sentinel.conf), not the data's.
    sentinel_password: Option<Secret>,
    pub(super) db: i64,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    /// Which flags to check when Redis refuses the credentials.
    pub(super) credentials_hint: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Direct {
        host: String,
        port: u16,
    },
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("route", &self.route)
            .field("tls", &self.tls.is_some())
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// A bad Redis setting, named for the flag. Never quotes a URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

fn bad(message: impl Into<String>) -> TargetError {
    TargetError(message.into())
}

const URL_FORM: &str = "redis://[[user]:password@]host[:port][/db] or rediss://… for TLS";

impl RedisTarget {
    /// From `--redis-url` alone.
    pub fn from_url(url: &str, ca: Option<&Path>) -> Result<RedisTarget, TargetError> {
        RedisTarget::new(Some(url), None, None, ca)
    }

    /// From the flags: `--redis-url`, or `--redis-sentinels` with `--redis-master` (then a
    /// `--redis-url`, when also given, supplies only TLS, credentials and database; its host
    /// is not used). `--redis-ca` is the PEM file of the CA that signed Redis's certificate.
    pub fn new(
        url: Option<&str>,
        sentinels: Option<&str>,
        master: Option<&str>,
        ca: Option<&Path>,
    ) -> Result<RedisTarget, TargetError> {
        let parsed = url.map(parse_url).transpose()?;
        let route = match (sentinels, master, &parsed) {
            (Some(list), Some(master), _) => Route::Sentinel {
                sentinels: parse_sentinels(list)?,
                master: master.to_string(),
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(bad(
                    "--redis-sentinels and --redis-master go together (host:port,… and the master's name)",
                ))
            }
            (None, None, Some(p)) => Route::Direct {
                host: p.host.clone(),
                port: p.port,
            },
            (None, None, None) => return Err(bad("no Redis given: --redis-url or --redis-sentinels")),
        };
        let tls_wanted = parsed.as_ref().is_some_and(|p| p.tls) || ca.is_some();
        if ca.is_some() && parsed.as_ref().is_some_and(|p| !p.tls) {
            return Err(bad(
                "--redis-ca is given but --redis-url is redis://: use rediss:// for TLS",
            ));
        }
        let tls = tls_wanted.then(|| tls_config(ca)).transpose()?;
        let parsed = parsed.unwrap_or_default();
        Ok(RedisTarget {
            route,
            username: parsed.username,
            password: parsed.password.map(Secret::Value),
            sentinel_password: None,
            db: parsed.db,
            tls,
            credentials_hint:
                "the password and user of --redis-url, --redis-username, --redis-password-file",
        })
    }

    /// Authenticates as `username` (an ACL user, `AUTH user password`) instead of the URL's
    /// user; both given is an error (which one was meant?).
    pub fn with_username(mut self, username: Option<&str>) -> Result<RedisTarget, TargetError> {
        if let Some(user) = username {
            if self.username.is_some() {
                return Err(bad(
                    "--redis-username and a user in --redis-url: give the user in one place",
                ));
            }
            if user.is_empty() {
                return Err(bad("--redis-username is empty"));
            }
            self.username = Some(user.to_string());
        }
        Ok(self)
    }

    /// The password to authenticate with, instead of the URL's (a file's wins over the URL).
    pub fn with_password(mut self, password: Option<Secret>) -> RedisTarget {
        if password.is_some() {
            self.password = password;
        }
        self
    }

    /// Refuses a user without a password: it would never be sent (`AUTH` needs one), and
    /// the connection would silently be Redis's `default` user.
    pub fn checked(self) -> Result<RedisTarget, TargetError> {
        if self.username.is_some() && self.password.is_none() {
            return Err(bad(
                "a Redis user (--redis-username, or the user in --redis-url) needs a password: --redis-password-file, or the URL's",
            ));
        }
        Ok(self)
    }

    /// The sentinels' own password; only with `--redis-sentinels`.
    pub fn with_sentinel_password(
        mut self,
        password: Option<Secret>,
    ) -> Result<RedisTarget, TargetError> {
        if password.is_some() && !matches!(self.route, Route::Sentinel { .. }) {
            return Err(bad(
                "--redis-sentinel-password(-file) is given without --redis-sentinels",
            ));
        }
        self.sentinel_password = password;
        Ok(self)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to the primary and authenticates.
    pub async fn connect(&self) -> Result<Connection, RespError> {
        match &self.route {
            Route::Direct { host, port } => Connection::open(self, host, *port).await,
            Route::Sentinel { sentinels, master } => self.via_sentinel(sentinels, master).await,
        }
    }

    async fn via_sentinel(
        &self,
        sentinels: &[(String, u16)],
        master: &str,
    ) -> Result<Connection, RespError> {
        let mut last = None;
        for (host, port) in sentinels {
            match self.ask_sentinel(host, *port, master).await {
                Ok(connection) => return Ok(connection),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RespError::Unsupported("no sentinel given".into())))
    }

    async fn ask_sentinel(
        &self,
        host: &str,
        port: u16,
        master: &str,
    ) -> Result<Connection, RespError> {
        // Sentinels take neither the data's credentials nor its database: their own
        // password, if they have one (`requirepass` in sentinel.conf).
        let sentinel_target = RedisTarget {
            route: Route::Direct {
                host: host.to_string(),
                port,
            },
            username: None,
            password: self.sentinel_password.clone(),
            sentinel_password: None,
            db: 0,
            tls: self.tls.clone(),
            credentials_hint: "--redis-sentinel-password or --redis-sentinel-password-file",
        };
        let mut sentinel = Connection::open(&sentinel_target, host, port).await?;
        let reply = sentinel
            .command(
                &[b"SENTINEL", b"get-master-addr-by-name", master.as_bytes()],
                SENTINEL_TIMEOUT,
            )
            .await
            .map_err(|e| {
                super::credentials_refused(e, host, port, sentinel_target.credentials_hint)
            })?;
        let (addr_host, addr_port) = master_address(&reply).ok_or_else(|| {
            RespError::Unsupported(format!(
                "sentinel {host}:{port} knows no master named {master}"
            ))
        })?;
        let mut connection = Connection::open(self, &addr_host, addr_port).await?;
        let role = connection
            .command(&[b"ROLE"], SENTINEL_TIMEOUT)
            .await
            .map_err(|e| {
                super::credentials_refused(e, &addr_host, addr_port, self.credentials_hint)
            })?;
        match role {
            Frame::Array(items) if items.first().and_then(Frame::bytes) == Some(b"master") => {
                Ok(connection)
            }
            _ => Err(RespError::Unsupported(format!(
                "sentinel {host}:{port} named {addr_host}:{addr_port} as master {master}, but it is not a master (a failover in progress)"
            ))),
        }
    }
}

const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

fn master_address(reply: &Frame) -> Option<(String, u16)> {
    let Frame::Array(items) = reply else {
        return None;
    };
    let [host, port] = items.as_slice() else {
        return None;
    };
    let host = std::str::from_utf8(host.bytes()?).ok()?.to_string();
    let port = std::str::from_utf8(port.bytes()?).ok()?.parse().ok()?;
    Some((host, port))
}

#[derive(Default)]
struct ParsedUrl {
    tls: bool,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

fn parse_url(raw: &str) -> Result<ParsedUrl, TargetError> {
    let url = url::Url::parse(raw).map_err(|e| {
        bad(format!(
            "--redis-url is not a URL ({e}); expected {URL_FORM}"
        ))
    })?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        // The scheme is not echoed: a mistyped URL can put a secret there.
        _ => {
            return Err(bad(format!(
                "--redis-url: the URL's scheme is not supported; expected {URL_FORM}"
            )))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(format!("--redis-url has no host; expected {URL_FORM}")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad("--redis-url: the user or password is not UTF-8 once decoded"))
    };
    let username = Some(url.username())
        .filter(|u| !u.is_empty())
        .map(decode)
        .transpose()?;
    let password = url.password().map(decode).transpose()?;
    let db =
        match url.path().trim_start_matches('/') {
            "" => 0,
            n => n.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                bad("--redis-url: the path must be a database number (/0, /1, …)")
            })?,
        };
    Ok(ParsedUrl {
        tls,
        host,
        port: url.port().unwrap_or(6379),
        username,
        password,
        db,
    })
}

fn parse_sentinels(list: &str) -> Result<Vec<(String, u16)>, TargetError> {
    let sentinels: Vec<(String, u16)> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("--redis-sentinels: {s:?} is not host:port")))?;
            let port = port
                .parse()
                .map_err(|_| bad(format!("--redis-sentinels: {s:?} has no valid port")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(bad(format!("--redis-sentinels: {s:?} has no host")));
            }
            Ok((host.to_string(), port))
        })
        .collect::<Result<_, _>>()?;
    if sentinels.is_empty() {
        return Err(bad("--redis-sentinels: give at least one host:port"));
    }
    Ok(sentinels)
}

/// The TLS settings: the server's certificate must chain to `--redis-ca` (or, without it, to
/// the system's roots) and name the host connected to.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TargetError> {
    let (path, label) = match ca {
        Some(path) => (path, format!("--redis-ca {}", path.display())),
        None => (
            Path::new(SYSTEM_ROOTS),
            format!("rediss:// without --redis-ca needs the system's roots at {SYSTEM_ROOTS}"),
        ),
    };
    client_config(path, &label).map(Arc::new).map_err(bad)
}

/// The name a certificate must carry: the host as given (a name, or an IP address).
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, RespError> {
    ServerName::try_from(host.to_string())
        .map_err(|_| RespError::Unsupported(format!("{host:?} is not a host name for TLS")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_credentials_database_and_tls() {
        let t = RedisTarget::from_url("redis://u:p%40ss@cache.local:7000/3", None).unwrap();
        assert_eq!(
            t.route,
            Route::Direct {
                host: "cache.local".into(),
                port: 7000
            }
        );
        assert_eq!(t.username.as_deref(), Some("u"));
        assert_eq!(
            t.password.as_ref().map(Secret::current).as_deref(),
            Some("p@ss")
        );
        assert_eq!(t.db, 3);
        assert!(!t.is_tls());
        let t = RedisTarget::from_url("redis://:secret@127.0.0.1", None).unwrap();
        assert_eq!(t.username, None);
        assert_eq!(
            t.password.as_ref().map(Secret::current).as_deref(),
            Some("secret")
        );
        assert!(!format!("{t:?}").contains("secret"), "never printed");
    }

    #[test]
    fn a_username_flag_a_password_file_and_the_sentinels_password() {
        let t = RedisTarget::from_url("redis://:fromurl@h", None)
            .unwrap()
            .with_username(Some("eligd"))
            .unwrap()
            .with_password(Some(Secret::Value("fromfile".into())));
        assert_eq!(t.username.as_deref(), Some("eligd"));
        assert_eq!(
            t.password.as_ref().map(Secret::current).as_deref(),
            Some("fromfile")
        );
        let e = RedisTarget::from_url("redis://u:p@h", None)
            .unwrap()
            .with_username(Some("eligd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("one place"), "{e}");
        let e = RedisTarget::from_url("redis://h", None)
            .unwrap()
            .with_sentinel_password(Some(Secret::Value("s".into())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("without --redis-sentinels"), "{e}");
        let e = RedisTarget::from_url("redis://h", None)
            .unwrap()
            .with_username(Some("eligd"))
            .unwrap()
            .checked()
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a password"), "{e}");
        let t = RedisTarget::new(None, Some("h:1"), Some("m"), None)
            .unwrap()
            .with_sentinel_password(Some(Secret::Value("sentinelpw".into())))
            .unwrap();
        assert!(!format!("{t:?}").contains("sentinelpw"), "never printed");
    }

    #[test]
    fn bad_settings_are_clear_errors_that_never_quote_the_url() {
        for (url, says) in [
            ("http://h:1", "scheme"),
            ("redis://", "no host"),
            ("redis://h:1/x", "database number"),
            ("not a url", "not a URL"),
            ("unix:///tmp/redis.sock", "scheme"),
        ] {
            let e = RedisTarget::from_url(url, None).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = RedisTarget::from_url("redis://:hunter2@h:1/x", None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = RedisTarget::from_url("redis://h:1", Some(Path::new("/x.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss://"), "{e}");
        let e = RedisTarget::from_url("rediss://h:1", Some(Path::new("/nonexistent.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--redis-ca /nonexistent.pem"), "{e}");
    }

    #[test]
    fn sentinels_need_a_master_name_and_valid_addresses() {
        let t =
            RedisTarget::new(None, Some("127.0.0.1:26379, [::1]:26380"), Some("m"), None).unwrap();
        assert_eq!(
            t.route,
            Route::Sentinel {
                sentinels: vec![("127.0.0.1".into(), 26379), ("::1".into(), 26380)],
                master: "m".into()
            }
        );
        for (list, master, says) in [
            ("h:1", None, "go together"),
            ("h", Some("m"), "host:port"),
            ("h:x", Some("m"), "valid port"),
            (":1", Some("m"), "no host"),
            (" , ", Some("m"), "at least one"),
        ] {
            let e = RedisTarget::new(None, Some(list), master, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{list}: {e}");
        }
        assert!(RedisTarget::new(None, None, None, None).is_err());
    }

    #[test]
    fn a_sentinel_reply_names_host_and_port() {
        let bulk = |s: &str| Frame::Bulk(s.as_bytes().to_vec());
        let reply = Frame::Array(vec![bulk("10.0.0.5"), bulk("6380")]);
        assert_eq!(master_address(&reply), Some(("10.0.0.5".into(), 6380)));
        assert_eq!(master_address(&Frame::Nil), None);
        assert_eq!(
            master_address(&Frame::Array(vec![bulk("h"), bulk("x")])),
            None
        );
    }
}
