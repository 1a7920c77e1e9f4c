//! The real `eligd` binary as a child process: one-shot subcommands, snapshots built with it,
//! and `serve` (or `relay`) started on a free loopback port, killed on drop.
//!
//! Starting: [`Launch`] (a population, keys, an audit log, descriptor or file-size limits,
//! flags, environment) and then [`Launch::ready`] (polls `GET /readyz` until 200),
//! [`Launch::listening`] (returns once the listening address is logged) or [`Launch::until`]
//! (reads the log until a line, for tests about the log). [`serve`] is `Launch::args(…).ready()`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::http::try_http_get;

/// How long a started process may take to log its address, and then to become ready: generous,
/// for a loaded 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// The audit log key every test uses (`ELIGD_AUDIT_KEY`).
pub(crate) const AUDIT_KEY: &str = "00112233445566778899aabbccddeeff";

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

/// A running `eligd serve` (or `relay`) child, killed on drop.
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

    /// Polls `GET /readyz` until it answers 200; panics with the log if the process exits or
    /// the deadline passes first.
    pub(crate) fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let last = match try_http_get(&self.addr, "/readyz") {
                Ok((200, _)) => return,
                Ok((status, body)) => format!("{status} {body}"),
                Err(e) => e,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before /readyz answered 200 (last: {last}); its log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/readyz on {} not 200 within {within:?} (last: {last}); the log:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start `eligd`: a subcommand (`serve` unless said), its flags, its environment, and
/// the process limits it runs under.
#[derive(Clone, Debug, Default)]
pub(crate) struct Launch {
    subcommand: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    descriptors: Option<u32>,
    file_size: Option<Option<u64>>,
    /// A cgroup directory the process joins before eligd starts (memory caps).
    cgroup: Option<std::path::PathBuf>,
}

impl Launch {
    /// `serve --demo-members N`.
    pub(crate) fn demo(members: u64) -> Launch {
        Launch::default()
            .arg("--demo-members")
            .arg(members.to_string())
    }

    /// Arguments as [`serve`] takes them: a leading subcommand (`serve`, `relay`), if any, then
    /// flags. `--listen 127.0.0.1:0` is added unless they name a `--listen`.
    pub(crate) fn args(args: &[&str]) -> Launch {
        let subcommand = args.iter().take_while(|a| !a.starts_with('-'));
        let flags = args.iter().skip_while(|a| !a.starts_with('-'));
        Launch {
            subcommand: subcommand.map(|s| s.to_string()).collect(),
            args: flags.map(|s| s.to_string()).collect(),
            ..Launch::default()
        }
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Launch {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    pub(crate) fn flags(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    pub(crate) fn env(mut self, name: &str, value: &str) -> Launch {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// `--api-keys FILE`.
    pub(crate) fn keys(self, file: &Path) -> Launch {
        self.arg("--api-keys").arg(file)
    }

    /// `--audit-log FILE` with [`AUDIT_KEY`].
    pub(crate) fn audit(self, file: &Path) -> Launch {
        self.arg("--audit-log")
            .arg(file)
            .env("ELIGD_AUDIT_KEY", AUDIT_KEY)
    }

    /// Runs under `prlimit --nofile=N:N`: the process may hold `n` descriptors (the flood
    /// tests' setup; see also [`raise_own_descriptor_limit`]).
    pub(crate) fn descriptors(mut self, n: u32) -> Launch {
        self.descriptors = Some(n);
        self
    }

    /// Runs under `prlimit --fsize=BYTES` (`None`: unlimited) with SIGXFSZ ignored, so that a
    /// write past the limit fails with EFBIG after writing what fits, as on a full volume.
    pub(crate) fn file_size(mut self, bytes: Option<u64>) -> Launch {
        self.file_size = Some(bytes);
        self
    }

    /// Runs it inside this cgroup (a directory under /sys/fs/cgroup), joined before eligd
    /// starts, so every page it touches is charged there.
    pub(crate) fn cgroup(mut self, dir: &Path) -> Launch {
        self.cgroup = Some(dir.to_path_buf());
        self
    }

    /// The command this describes.
    pub(crate) fn command(&self) -> Command {
        // The wrappers, outermost first: `sh` joining the cgroup, `sh` ignoring SIGXFSZ, then
        // `prlimit`s, then eligd.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(dir) = &self.cgroup {
            argv.extend(
                ["sh", "-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\""].map(Into::into),
            );
            argv.push(dir.clone().into());
        }
        if let Some(limit) = self.file_size {
            let limit = limit.map_or("unlimited".to_string(), |b| b.to_string());
            argv.extend(["sh", "-c", "trap '' XFSZ; exec \"$@\"", "sh", "prlimit"].map(Into::into));
            argv.push(format!("--fsize={limit}:unlimited").into());
            argv.push("--".into());
        }
        if let Some(n) = self.descriptors {
            argv.push("prlimit".into());
            argv.push(format!("--nofile={n}:{n}").into());
            argv.push("--".into());
        }
        argv.push(eligd_bin().into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command.args(&self.subcommand);
        if !self.args.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command.args(&self.args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts it and returns once `GET /readyz` answers 200.
    pub(crate) fn ready(&self) -> Served {
        let mut served = serve_command_listening(self.command());
        served.wait_ready(START_DEADLINE);
        served
    }

    /// Starts it and returns once it has logged its listening address (ready or not).
    pub(crate) fn listening(&self) -> Served {
        serve_command_listening(self.command())
    }

    /// Starts it and returns once its log has a line containing `line` (for tests about the
    /// log; [`Launch::ready`] for tests that want it ready).
    pub(crate) fn until(&self, line: &str) -> Served {
        serve_command(self.command(), line)
    }
}

/// Raises this process's own soft descriptor limit to its hard limit (a flood test's clients
/// need more than the usual 1,024).
pub(crate) fn raise_own_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct on this stack frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Starts `eligd` with `args` (a subcommand, then flags; `--listen 127.0.0.1:0` unless they
/// name a `--listen`) and returns once `GET /readyz` answers 200.
pub(crate) fn serve(args: &[&str]) -> Served {
    Launch::args(args).ready()
}

/// [`serve`] with environment variables set.
pub(crate) fn serve_env(args: &[&str], env: &[(&str, &str)]) -> Served {
    env.iter()
        .fold(Launch::args(args), |l, (k, v)| l.env(k, v))
        .ready()
}

/// Starts `eligd` with `args` as [`serve`] does and reads its log until a line containing
/// `ready_line` (for tests about the log, and processes with no `/readyz` to ask).
pub(crate) fn serve_until(args: &[&str], ready_line: &str) -> Served {
    Launch::args(args).until(ready_line)
}

/// Runs a prepared command (eligd, or a wrapper around it) and returns once `GET /readyz`
/// answers 200.
pub(crate) fn serve_command_ready(command: Command) -> Served {
    let mut served = serve_command_listening(command);
    served.wait_ready(START_DEADLINE);
    served
}

/// Runs a prepared command and returns once it has logged its listening address.
pub(crate) fn serve_command_listening(command: Command) -> Served {
    start(command, None)
}

/// Runs a prepared command (eligd, or a wrapper around it) and reads its log until a line
/// containing `ready_line`.
pub(crate) fn serve_command(command: Command, ready_line: &str) -> Served {
    start(command, Some(ready_line))
}

/// Spawns `command` and reads its log until its address (`address=…`) and then, if given, a
/// line containing `until`. The rest of the log is kept on a thread.
fn start(mut command: Command, until: Option<&str>) -> Served {
    if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
        command.env("RUST_LOG", "info");
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + START_DEADLINE;
    let mut addr = None;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if addr.is_none() {
            // `address=…` in a text log, `"address":"…"` in a JSON one.
            if let Some(rest) = line.split("address=").nth(1) {
                addr = Some(rest.split_whitespace().next().unwrap().to_string());
            } else if let Some(rest) = line.split("\"address\":\"").nth(1) {
                addr = rest.split('"').next().map(str::to_string);
            }
        }
        let found = match until {
            Some(wanted) => line.contains(wanted),
            None => addr.is_some(),
        };
        seen.push(line);
        if found {
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
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{program} never logged its address (address=…); its log:\n{}",
            log.lock().unwrap().join("\n")
        );
    };
    // A wildcard address is asked on loopback.
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
    Served { child, addr, log }
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

/// The operations listener's address of a server started with `--ops-listen` (its log's
/// `ops_address=…`, waited for up to 10 s).
pub(crate) fn ops_address(served: &Served) -> String {
    let mut found = None;
    super::wait_for("the operations address logged", 10, || {
        found = served
            .log()
            .split("ops_address=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        found.is_some()
    });
    found.unwrap_or_default()
}
