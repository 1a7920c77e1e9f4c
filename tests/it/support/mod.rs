//! Helpers for the integration tests.
//!
//! - Here: a fixture population with one member of every kind and outcome, a server started
//!   in-process on a free port and stopped on drop, and a hyper client for it.
//! - [`process`]: the real binary as a child process — one-shot subcommands, snapshots, and
//!   [`Launch`]/[`serve`] starting `serve` or `relay` with a population, keys, an audit log,
//!   descriptor or file-size limits, returning once `/readyz` answers 200.
//! - [`http`]: a small blocking HTTP client ([`http_get`], [`http`]) whose errors say what came
//!   back instead of panicking on an empty reply.
//! - [`metrics`]: [`metric`] (a series, summed over labels; panics when absent), [`wait_for`].
//! - Tools a test needs: [`require_tool`] fails with the Debian package and the command.

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod process;

#[allow(unused_imports)]
pub(crate) use http::{http, http_get, try_http, try_http_get, Answer};
#[allow(unused_imports)]
pub(crate) use metrics::{metric, metric_if_any, readyz, wait_for, wait_ready};
#[allow(unused_imports)]
pub(crate) use process::{
    assert_clean_failure, build_snapshot, canonical_name, eligd, eligd_bin, ops_address,
    raise_own_descriptor_limit, seed_snapshot_dir, serve, serve_command, serve_command_listening,
    serve_command_ready, serve_env, serve_until, snapshot_into, stderr, stdout, terminate, Launch,
    Served, AUDIT_KEY,
};
pub(crate) use testkit::require_tool;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use eligd::app::AppState;
use eligd::index::Index;
use eligd::member::Member;
use eligd::national_id::NationalId;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// The date every fixture answer is asked for.
pub const AS_OF: &str = "2026-11-22";

/// A valid ID built from a small number (its check digit appended).
pub fn id(n: u32) -> String {
    NationalId::from_prefix(n).unwrap().to_string()
}

pub struct Fixture;

impl Fixture {
    pub const MAIN: &'static str = "0499370899";
    pub const CHILD: &'static str = "0012345679";
    pub fn expired() -> String {
        id(1001)
    }
    pub fn suspended() -> String {
        id(1002)
    }
    pub fn deceased() -> String {
        id(1003)
    }
    pub fn pensioner() -> String {
        id(1004)
    }
    pub fn suspended_main() -> String {
        id(1005)
    }
    pub fn dependent_of_suspended() -> String {
        id(1006)
    }
    pub fn orphan() -> String {
        id(1007)
    }
    pub fn missing_main() -> String {
        id(1008)
    }
    pub fn other_primary() -> String {
        id(1009)
    }
    pub fn unknown() -> String {
        id(1010)
    }
}

fn record(id: &str, extra: serde_json::Value) -> Member {
    let mut v = serde_json::json!({
        "national_id": id, "version": 7, "kind": "main", "scheme": "mandatory", "status": "active",
        "coverage_until": "2027-03-20", "services": ["outpatient", "inpatient", "pharmacy", "paraclinic", "dental"],
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    Member::from_json(&v.to_string()).unwrap()
}

pub fn fixture_members() -> Vec<Member> {
    use serde_json::json;
    vec![
        record(
            Fixture::MAIN,
            json!({"booklet_no": "930123456789", "display_name": "رضا رضایی",
            "other_insurers": [{"code": "salamat", "primary": false}]}),
        ),
        record(
            Fixture::CHILD,
            json!({"version": 42, "kind": "dependent", "main_national_id": Fixture::MAIN,
            "relation": "child", "coverage_until": "2026-12-31", "special_conditions": ["dialysis"],
            "services": ["outpatient", "pharmacy"], "booklet_no": "000777", "display_name": "علی رضایی"}),
        ),
        record(
            &Fixture::expired(),
            json!({"coverage_until": "2026-11-21", "display_name": "Sara Ahmadi"}),
        ),
        record(&Fixture::suspended(), json!({"status": "suspended"})),
        record(&Fixture::deceased(), json!({"status": "deceased"})),
        record(
            &Fixture::pensioner(),
            json!({"kind": "pensioner", "scheme": "pensioner", "coverage_until": null}),
        ),
        record(&Fixture::suspended_main(), json!({"status": "suspended"})),
        record(
            &Fixture::dependent_of_suspended(),
            json!({"kind": "dependent", "relation": "spouse",
            "main_national_id": Fixture::suspended_main(), "coverage_until": null}),
        ),
        record(
            &Fixture::orphan(),
            json!({"kind": "dependent", "main_national_id": Fixture::missing_main()}),
        ),
        record(
            &Fixture::other_primary(),
            json!({"other_insurers": [{"code": "armed_forces", "primary": true}]}),
        ),
    ]
}

pub fn fixture_index() -> Index {
    Index::from_members(fixture_members()).unwrap()
}

/// An eligd HTTP server running in this process on a free loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// A server whose index is not loaded yet.
    pub async fn start_empty() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AppState::new(5).unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(eligd::http::serve(
            listener,
            Arc::clone(&state),
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A server answering from the fixture population.
    pub async fn start() -> TestServer {
        let server = TestServer::start_empty().await;
        server.state.install_index(Arc::new(fixture_index()), 0.0);
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting, lets open requests finish, and waits for the server to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn request(
    method: Method,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    request(Method::GET, url, None, &[]).await
}

pub async fn post(url: &str, body: &str) -> Reply {
    request(
        Method::POST,
        url,
        Some(body.as_bytes()),
        &[("content-type", "application/json")],
    )
    .await
}

/// Persian digits for an ASCII digit string.
pub fn persian(s: &str) -> String {
    s.chars()
        .map(|c| char::from_u32(0x06F0 + c.to_digit(10).unwrap()).unwrap())
        .collect()
}

pub fn arabic_indic(s: &str) -> String {
    s.chars()
        .map(|c| char::from_u32(0x0660 + c.to_digit(10).unwrap()).unwrap())
        .collect()
}

/// Percent-encodes every non-ASCII byte (as a client puts Persian digits in a path).
pub fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn eligibility_url(server: &TestServer, id: &str, query: &str) -> String {
    server.url(&format!(
        "/v1/members/{}/eligibility?{query}",
        encode_path(id)
    ))
}

/// A deterministic pseudo-random sequence (xorshift64) for randomized tests: the same seed
/// gives the same cases, so a failure names a reproducible one.
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The next value below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
