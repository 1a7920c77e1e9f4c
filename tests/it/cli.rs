//! The real `eligd` binary: subcommands, exit codes, clear one-line errors, and `serve`
//! answering and draining on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build's, or `ELIGD_TEST_BIN` (to show that a regression test
/// fails against an older build, as docs/operations.md describes).
pub(crate) fn eligd_bin() -> std::path::PathBuf {
    std::env::var_os("ELIGD_TEST_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_eligd").into())
}

pub(crate) fn eligd(args: &[&str]) -> Output {
    Command::new(eligd_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub(crate) fn build_snapshot(jsonl: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["snapshot", "build"];
    args.extend_from_slice(extra);
    args.extend([
        "--from-jsonl",
        jsonl.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    eligd(&args)
}

/// A real snapshot of `members` synthetic members (seed `seed`) in `dir` under the name its
/// header gives it, as `--snapshot-dir` expects; returns its path.
pub(crate) fn seed_snapshot_dir(dir: &Path, members: u64, seed: u64) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let jsonl = dir.join(format!("seed-{seed}.jsonl"));
    let o = eligd(&[
        "demo-data",
        "--members",
        &members.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        jsonl.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    snapshot_into(dir, &jsonl, &[])
}

/// Builds a snapshot of `jsonl` into the directory `dir` under the name its header gives it
/// (what `snapshot build --out DIR` does; done by hand here so that the regression tests run
/// against older builds too); returns its path.
pub(crate) fn snapshot_into(dir: &Path, jsonl: &Path, extra: &[&str]) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let incoming = dir.join(".incoming.snap");
    let o = build_snapshot(jsonl, &incoming, extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let path = dir.join(canonical_name(&incoming));
    std::fs::rename(&incoming, &path).unwrap();
    path
}

/// The name `--snapshot-dir` expects for this snapshot, from what `snapshot inspect` says.
pub(crate) fn canonical_name(snapshot: &Path) -> String {
    let o = eligd(&["snapshot", "inspect", snapshot.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let built_at = chrono::DateTime::parse_from_rfc3339(&field("built at:"))
        .unwrap()
        .timestamp_millis();
    let position = field("feed position:");
    match position.split_whitespace().next() {
        Some(p) if p.contains('-') => {
            let (ms, seq) = p.split_once('-').unwrap();
            format!("eligd-{built_at:013}-{ms}-{seq}.snap")
        }
        _ => format!("eligd-{built_at:013}-none.snap"),
    }
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One clear line, no panic, no backtrace.
pub(crate) fn assert_clean_failure(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let err = stderr(o);
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

#[test]
fn check_id_exit_codes() {
    let ok = eligd(&["check-id", "۰۰۱۲۳۴۵۶۷۹"]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(stdout(&ok), "valid: 0012345679\n");
    let ok = eligd(&["check-id", "12345679"]);
    assert_eq!(stdout(&ok), "valid: 0012345679\n");
    for (bad, reason) in [
        ("0012345678", "check digit"),
        ("2222222222", "repeat one digit"),
        ("12", "10 digits"),
        ("00x2345679", "only digits"),
        ("", "required"),
    ] {
        let o = eligd(&["check-id", bad]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(
            stdout(&o).starts_with("invalid: ") && stdout(&o).contains(reason),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn demo_data_snapshot_build_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("pop.jsonl");
    let snap = dir.path().join("pop.snap");
    let o = eligd(&[
        "demo-data",
        "--members",
        "5000",
        "--seed",
        "9",
        "--today",
        "2026-11-22",
        "--out",
        jsonl.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(text.lines().count(), 5000);
    // Deterministic: the same arguments write the same bytes.
    let again = eligd(&[
        "demo-data",
        "--members",
        "5000",
        "--seed",
        "9",
        "--today",
        "2026-11-22",
    ]);
    assert_eq!(stdout(&again), text);

    let o = build_snapshot(&jsonl, &snap, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("5000 members"), "{}", stderr(&o));
    let o = eligd(&["snapshot", "inspect", snap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "members:         5000",
        "format version:  4",
        "feed position:   none",
        "verified",
        "kind dependent:",
        "status deceased:",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn snapshot_build_into_a_directory_names_the_file_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("one.jsonl");
    std::fs::write(
        &jsonl,
        r#"{"national_id":"0012345679","version":1,"kind":"main","scheme":"mandatory","status":"active","services":[]}"#,
    )
    .unwrap();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let o = build_snapshot(
        &jsonl,
        &snaps,
        &[
            "--position",
            "1700000000000-3",
            "--epoch",
            crate::feed::EPOCH,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let name = names[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, canonical_name(&names[0]));
    assert!(name.ends_with("-1700000000000-3.snap"), "{name}");
    assert!(stderr(&o).contains(&name), "{}", stderr(&o));
}

#[test]
fn snapshot_build_reports_bad_lines_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("mixed.jsonl");
    let good = r#"{"national_id":"0012345679","version":1,"kind":"main","scheme":"mandatory","status":"active","services":[]}"#;
    std::fs::write(
        &jsonl,
        format!(
            "{good}\n{{broken\n{}\n",
            good.replace("\"main\"", "\"boss\"")
        ),
    )
    .unwrap();
    let snap = dir.path().join("out.snap");
    let o = build_snapshot(&jsonl, &snap, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("skipped line 2:"), "{err}");
    assert!(err.contains("skipped line 3: kind:"), "{err}");
    assert!(err.contains("1 members from 3 lines (2 skipped)"), "{err}");

    let strict = dir.path().join("strict.snap");
    let o = build_snapshot(&jsonl, &strict, &["--strict"]);
    assert_clean_failure(&o, "line 2:");
    assert!(
        !strict.exists(),
        "a failed strict build must not leave a snapshot"
    );
}

#[test]
fn bad_files_and_flags_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let o = eligd(&["snapshot", "inspect", missing.to_str().unwrap()]);
    assert_clean_failure(&o, "No such file");
    let junk = dir.path().join("junk.snap");
    std::fs::write(&junk, b"ELIGDSNP but not really a snapshot").unwrap();
    assert_clean_failure(
        &eligd(&["snapshot", "inspect", junk.to_str().unwrap()]),
        "truncated",
    );
    std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
    assert_clean_failure(
        &eligd(&["snapshot", "inspect", junk.to_str().unwrap()]),
        "wrong magic",
    );
    let o = eligd(&[
        "snapshot",
        "build",
        "--from-jsonl",
        missing.to_str().unwrap(),
        "--out",
        junk.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "cannot open");
    assert_clean_failure(
        &eligd(&["demo-data", "--members", "10", "--today", "2026-02-30"]),
        "--today",
    );
    assert_clean_failure(&eligd(&["demo-data", "--members", "ten"]), "invalid value");
    assert_clean_failure(
        &eligd(&["serve", "--listen", "not-an-address"]),
        "invalid value",
    );
    assert_clean_failure(
        &eligd(&["serve", "--node-id", "100", "--listen", "127.0.0.1:0"]),
        "--node-id",
    );
    assert_clean_failure(
        &eligd(&["serve", "--listen", "0.0.0.0:0"]),
        "refusing to listen",
    );
    assert_clean_failure(&eligd(&["--no-such-flag"]), "unexpected argument");
    let o = eligd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--snapshot",
        junk.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "wrong magic");
}

/// A running `eligd serve` child, killed on drop.
pub(crate) struct Served {
    child: std::process::Child,
    pub(crate) addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    /// Every log line so far (standard error).
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends a signal (`-HUP`, `-STOP`…).
    pub(crate) fn signal(&self, signal: &str) {
        assert!(Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap()
            .success());
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(args: &[&str]) -> Served {
    serve_until(args, "index loaded; ready")
}

/// Starts `eligd` with `args` (after `--listen 127.0.0.1:0` unless they name a `--listen`)
/// and reads its log until a line containing `ready_line`.
pub(crate) fn serve_until(args: &[&str], ready_line: &str) -> Served {
    serve_with_env(args, &[], ready_line)
}

/// [`serve_until`] with environment variables set.
pub(crate) fn serve_with_env(args: &[&str], env: &[(&str, &str)], ready_line: &str) -> Served {
    let listen: &[&str] = if args.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut command = Command::new(eligd_bin());
    command
        .args(args.iter().take_while(|a| !a.starts_with('-')))
        .args(listen)
        .args(args.iter().skip_while(|a| !a.starts_with('-')))
        .envs(env.iter().copied());
    serve_command(command, ready_line)
}

/// Runs a prepared command (eligd, or a wrapper around it) and reads its log until a line
/// containing `ready_line`.
pub(crate) fn serve_command(mut command: Command, ready_line: &str) -> Served {
    if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
        command.env("RUST_LOG", "info");
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut addr = None;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("address=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().to_string());
        }
        let ready = line.contains(ready_line);
        seen.push(line);
        if ready {
            break;
        }
    }
    // Keep the rest of the log (tests scan it) and never let the child block on a full pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
    let keep = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            keep.lock().unwrap().push(line);
        }
    });
    let addr = addr.expect("serve logged its address");
    // A wildcard address is asked on loopback.
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
    Served { child, addr, log }
}

/// An HTTP answer read whole.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on its own connection, with headers and a body.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("")[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

pub(crate) fn terminate(served: &mut Served) -> std::process::ExitStatus {
    let pid = served.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_the_demo_population_then_drain_on_sigterm() {
    // No subcommand: `serve` is the default.
    let mut served = serve(&["--demo-members", "20000"]);
    let (status, body) = http_get(&served.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"members\":20000"), "{body}");
    let status = terminate(&mut served);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn serve_a_snapshot_built_from_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("p.jsonl");
    let snap = dir.path().join("p.snap");
    let member = r#"{"national_id":"0012345679","version":3,"kind":"main","scheme":"voluntary","status":"active","coverage_until":"2030-01-01","services":["dental"],"booklet_no":"42"}"#;
    std::fs::write(&jsonl, format!("{member}\n")).unwrap();
    let o = build_snapshot(&jsonl, &snap, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut served = serve(&["serve", "--snapshot", snap.to_str().unwrap()]);
    let (status, body) = http_get(
        &served.addr,
        "/v1/members/0012345679/eligibility?date=2029-12-31&service=dental",
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "active");
    assert_eq!(answer["days_remaining"], 1);
    assert_eq!(answer["scheme"], "voluntary");
    let (status, _) = http_get(&served.addr, "/v1/booklets/42/eligibility");
    assert_eq!(status, 200);
    assert!(terminate(&mut served).success());
    assert!(Path::new(&snap).exists());
}

#[test]
fn sigterm_during_a_long_load_stops_promptly() {
    let mut served = serve_until(
        &["--demo-members", "40000000"],
        "generating the synthetic demo population",
    );
    let (status, body) = http_get(&served.addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    let started = Instant::now();
    let status = terminate(&mut served);
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn serve_flags_in_the_environment_do_not_affect_other_subcommands() {
    let o = Command::new(env!("CARGO_BIN_EXE_eligd"))
        .args(["check-id", "0012345679"])
        .env("ELIGD_LISTEN", "not an address")
        .env("ELIGD_DEMO_MEMBERS", "many")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_eligd"))
        .env("ELIGD_LISTEN", "not an address")
        .output()
        .unwrap();
    assert_clean_failure(&o, "invalid value");
}

#[test]
fn snapshot_build_with_no_valid_line_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("bad.jsonl");
    std::fs::write(&jsonl, "garbage\n{}\n").unwrap();
    let snap = dir.path().join("bad.snap");
    assert_clean_failure(
        &build_snapshot(&jsonl, &snap, &[]),
        "no valid member in 2 lines",
    );
    assert!(!snap.exists());
    let o = eligd(&[
        "snapshot",
        "inspect",
        dir.path().join("nope.snap").to_str().unwrap(),
    ]);
    assert_eq!(
        stderr(&o).matches("No such file").count(),
        1,
        "{}",
        stderr(&o)
    );
}
