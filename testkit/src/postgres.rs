//! A private PostgreSQL for one test: `initdb` into a fresh temp dir, the postmaster on a free
//! port on 127.0.0.1 (its unix socket in that dir, never /var/run), stopped on drop. Fault
//! tests `kill9`, `stop` and `restart` it; crash recovery replays the WAL like in production.
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs tests as root: then they run as
//! the `postgres` system user (uid/gid switched in the child, like `setpriv`, so the child we
//! hold *is* the postmaster and signals reach it directly) and the temp dir is chowned to it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the server may take to accept connections (crash recovery included).
const READY_WITHIN: Duration = Duration::from_secs(30);
const LOG: &str = "server.log";

pub struct PgServer {
    /// Holds `data/`, the unix socket and the log; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    /// The postmaster, while it runs.
    child: Option<Child>,
}

/// The server binaries: `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
fn bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| {
        let has_server =
            |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|d| has_server(d));
        // libpq-dev alone ships pg_config without the server: fall back to the versioned dirs.
        from_pg_config
            .or_else(|| {
                std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let version: f64 = e.file_name().to_str()?.parse().ok()?;
                        Some((version, e.path().join("bin")))
                    })
                    .filter(|(_, bin)| has_server(bin))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, bin)| bin)
            })
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL server binaries not found (pg_config --bindir, \
                     /usr/lib/postgresql/*/bin): this test needs the PostgreSQL server (Debian: sudo apt-get \
                     install postgresql; or run scripts/test.sh, which installs it)"
                )
            })
    })
}

/// The uid and gid to run the server as: `None` runs it as ourselves, `Some` (the `postgres`
/// system user) when we are root.
fn run_as() -> Option<(u32, u32)> {
    static RUN_AS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Some((uid, gid)),
            _ => panic!(
                "running as root, and initdb/postgres refuse to: they would run as the \
                 `postgres` user, which does not exist; install the Debian package `postgresql`"
            ),
        }
    })
}

/// The sync `postgres` client drives its own tokio runtime, which panics inside another
/// (async tests, load tools): run it on a thread of its own.
fn off_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.to_string(),
        None => e.to_string(),
    }
}

enum Spawn {
    Ready,
    /// The postmaster exited before accepting connections.
    Exited,
    TimedOut,
}

impl PgServer {
    /// A server with its private dir (owned by the user it runs as) and a free port, before
    /// its data dir exists.
    fn unstarted() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("testkit-pg-")
            // Short and traversable by the `postgres` user: the socket path has a ~100 byte limit.
            .tempdir_in("/tmp")
            .expect("cannot create a temp dir under /tmp");
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("cannot chown the temp dir to the postgres user");
        }
        PgServer {
            dir,
            port: crate::free_port(),
            child: None,
        }
    }

    /// A fresh cluster with an empty database `eligd`, accepting connections.
    pub fn start() -> PgServer {
        Self::start_with("")
    }

    /// [`PgServer::start`] with more `postgresql.conf` lines (later lines win), e.g.
    /// `max_connections = 200` for a load test.
    pub fn start_with(settings: &str) -> PgServer {
        // From here on, a panic drops `server`, which stops whatever was started.
        let mut server = PgServer::unstarted();
        server.initdb(settings);
        // Another process may take the free port before the postmaster binds it: try another.
        for _ in 0..5 {
            match server.spawn() {
                Spawn::Ready => {
                    server.with_client("postgres", |c| c.batch_execute("CREATE DATABASE eligd"));
                    return server;
                }
                Spawn::Exited if server.log_tail().contains("Address already in use") => {
                    server.port = crate::free_port();
                }
                _ => server.fail("did not start"),
            }
        }
        server.fail("found no free port")
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`, WAL streamed), started on a free
    /// port and following it. [`PgServer::stop`] it to make it miss what the primary commits
    /// next (an asynchronous standby behind), then [`PgServer::promote_at`].
    pub fn standby_of(primary: &PgServer) -> PgServer {
        let mut server = PgServer::unstarted();
        let status = server
            .command("pg_basebackup")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-R", "-X", "stream", "-h", "127.0.0.1", "-U", "postgres"])
            .args([
                "-p",
                &primary.port.to_string(),
                "--no-sync",
                "--checkpoint=fast",
            ])
            .status()
            .unwrap_or_else(|e| panic!("cannot run pg_basebackup: {e}"));
        if !status.success() {
            server.fail("pg_basebackup failed");
        }
        // The copied postgresql.conf names the primary's socket dir: use our own.
        let conf = server.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf readable");
        text.push_str(&format!(
            "\nunix_socket_directories = '{}'\n",
            server.dir.path().display()
        ));
        std::fs::write(&conf, text).expect("cannot write postgresql.conf");
        match server.spawn() {
            Spawn::Ready => server,
            _ => server.fail("the standby did not start"),
        }
    }

    /// Promotes a stopped standby to primary on `port` (the old primary's, as a virtual IP
    /// would move): it forgets its upstream, starts there, and leaves recovery with what it
    /// had received; transactions it had not are lost, as with an asynchronous standby.
    pub fn promote_at(&mut self, port: u16) {
        assert!(self.child.is_none(), "stop it first");
        let auto = self.data_dir().join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("primary_conninfo"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&auto, kept).expect("cannot write postgresql.auto.conf");
        self.port = port;
        self.restart();
        self.with_client("postgres", |c| {
            c.batch_execute("SELECT pg_promote(true, 30)")
        });
        let deadline = Instant::now() + READY_WITHIN;
        while self.query_in("postgres", "SELECT pg_is_in_recovery()::int") != 0 {
            assert!(
                Instant::now() < deadline,
                "the standby did not leave recovery"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/eligd`; trust authentication, no password.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/eligd", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process ID (from `postmaster.pid`), to pin it to cores or read its
    /// CPU time; backends forked after a pin inherit it.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Turns TLS on (`ssl = on`) with this PEM certificate chain and key, and reloads: clients
    /// may then connect with `sslmode=verify-full` (plain connections stay allowed).
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).expect("cannot write the TLS files");
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("cannot chmod the TLS files");
            if let Some((uid, gid)) = run_as() {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .expect("cannot chown the TLS files");
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf readable");
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("cannot write postgresql.conf");
        self.with_client("postgres", |c| c.batch_execute("SELECT pg_reload_conf()"));
        // The reload is asynchronous: wait until the server says TLS is on.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let on = self.with_client("postgres", |c| c.simple_query("SHOW ssl"));
            let is_on = on.iter().any(
                |m| matches!(m, ::postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("on")),
            );
            if is_on {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "ssl did not turn on");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Gives the `postgres` role this password (stored as SCRAM-SHA-256) and makes every TCP
    /// connection authenticate with `scram-sha-256` (pg_hba.conf), then reloads: clients must
    /// then send the password, as in production. The unix socket, which only the test's own
    /// client uses, stays `trust`.
    pub fn require_password(&self, password: &str) {
        let escaped = password.replace('\'', "''");
        self.with_client("postgres", |c| {
            c.batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '{escaped}'"
            ))
        });
        std::fs::write(
            self.data_dir().join("pg_hba.conf"),
            "local all all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n\
             local replication all trust\n",
        )
        .expect("cannot write pg_hba.conf");
        self.with_client("postgres", |c| c.batch_execute("SELECT pg_reload_conf()"));
        let stored = self.query_in(
            "postgres",
            "SELECT (rolpassword LIKE 'SCRAM-SHA-256$%')::int FROM pg_authid WHERE rolname = 'postgres'",
        );
        assert_eq!(stored, 1, "the password is not stored as SCRAM-SHA-256");
        // The reload is asynchronous: wait until TCP without a password is refused.
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let refused = off_thread(move || {
                let mut config = ::postgres::Config::new();
                config
                    .host("127.0.0.1")
                    .port(port)
                    .user("postgres")
                    .dbname("postgres")
                    .connect_timeout(Duration::from_secs(2));
                config.connect(::postgres::NoTls).is_err()
            });
            if refused {
                return;
            }
            assert!(Instant::now() < deadline, "pg_hba.conf was not reloaded");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server binaries, as the right user, in the temp dir (the binaries must be
    /// able to resolve their cwd), output appended to the log.
    fn command(&self, program: &str) -> Command {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(LOG))
            .expect("cannot open the server log");
        let mut cmd = Command::new(bindir().join(program));
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot dup the log"))
            .stderr(log);
        if let Some((uid, gid)) = run_as() {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self, extra: &str) {
        let status = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
            ])
            // The cluster is thrown away; a killed postmaster does not lose the page cache.
            .args(["--no-sync", "--no-instructions"])
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", bindir().display()));
        if !status.success() {
            self.fail("initdb failed");
        }
        let settings = format!(
            "\n# testkit\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 50\nwal_level = logical\nfsync = on\nsynchronous_commit = on\n{extra}\n",
            self.dir.path().display()
        );
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("initdb wrote no postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("cannot write postgresql.conf");
    }

    /// Starts the postmaster on this server's port and data dir and waits until it accepts
    /// connections (after crash recovery, if any).
    fn spawn(&mut self) -> Spawn {
        assert!(self.child.is_none(), "the server already runs");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-c", &format!("port={}", self.port)])
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}/postgres: {e}", bindir().display()));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Spawn::Exited;
            }
            // The postmaster binds TCP before the unix socket and exits if it cannot, so
            // an answer here means the URL's port is ours too.
            if self.try_connect() {
                return Spawn::Ready;
            }
            if Instant::now() > deadline {
                self.kill9();
                return Spawn::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config(&self, db: &str) -> ::postgres::Config {
        let mut config = ::postgres::Config::new();
        // Our own clients use the unix socket in our private dir: a TCP port taken by some
        // other process would answer TCP connects and then never speak.
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(2));
        config
    }

    fn try_connect(&self) -> bool {
        let config = self.config("postgres");
        off_thread(move || config.connect(::postgres::NoTls).is_ok())
    }

    /// Runs `f` on a fresh connection to `db`; panics with the server's message on error.
    fn with_client<R: Send>(
        &self,
        db: &str,
        f: impl FnOnce(&mut ::postgres::Client) -> Result<R, ::postgres::Error> + Send,
    ) -> R {
        let config = self.config(db);
        // Panic here rather than on the helper thread, so the message names the test's thread.
        off_thread(move || {
            let mut client = config
                .connect(::postgres::NoTls)
                .map_err(|e| format!("cannot connect: {e}"))?;
            f(&mut client).map_err(|e| describe(&e))
        })
        .unwrap_or_else(|e| panic!("postgres on port {}: {e}", self.port))
    }

    /// `SIGKILL` to the postmaster and, since a crashed postmaster's backends linger and would
    /// keep [`PgServer::restart`] out of the shared memory, to every process of this cluster.
    /// Committed transactions survive in the WAL; nothing else is flushed.
    pub fn kill9(&mut self) {
        assert!(self.kill_all(), "postgres backends survive SIGKILL");
    }

    /// SIGKILL to the postmaster, then to this cluster's processes until none is left; false
    /// when some outlive 10 s.
    fn kill_all(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stragglers = self.processes();
            if stragglers.is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            for pid in stragglers {
                // SAFETY: kill has no memory preconditions; a pid that already exited is ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The live processes working in this cluster's data dir (the server `chdir`s there).
    fn processes(&self) -> Vec<libc::pid_t> {
        let Ok(data) = self.data_dir().canonicalize() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
            // Zombies have no cwd: they are gone for our purposes (their shared memory too).
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data)
            })
            .collect()
    }

    /// Fast shutdown (what `pg_ctl stop -m fast` sends): sessions are cut, a shutdown
    /// checkpoint is written, and the postmaster exits.
    pub fn stop(&mut self) {
        if !self.shut_down(libc::SIGINT, READY_WITHIN) {
            self.kill9();
            self.fail("did not stop within 30 s (fast shutdown); killed it");
        }
    }

    /// Sends the postmaster a shutdown signal and waits for it to exit; true when it did (or
    /// was not running).
    fn shut_down(&mut self, signal: libc::c_int, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Starts again on the same data dir and port after [`PgServer::kill9`] or
    /// [`PgServer::stop`]; after a kill this runs crash recovery.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill9 it first");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.spawn() {
                Spawn::Ready => return,
                // The port or the old shared memory may still be held for a moment.
                Spawn::Exited if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => self.fail("did not restart"),
            }
        }
    }

    /// SIGSTOP to the server and every backend: it keeps its connections and answers nothing
    /// (a paused machine, a path that drops packets).
    pub fn pause(&self) {
        self.signal_all("-STOP");
    }

    /// SIGCONT: answering again.
    pub fn resume(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let pid = child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args([signal, &pid])
            .status();
        let _ = std::process::Command::new("pkill")
            .args([signal, "-P", &pid])
            .status();
    }

    /// Runs a batch of statements (simple query protocol, so several are fine) in `eligd`.
    pub fn execute(&self, sql: &str) {
        self.with_client("eligd", |c| c.batch_execute(sql));
    }

    /// The first column of the first row as an integer: `SELECT count(*) FROM …`.
    pub fn query_i64(&self, sql: &str) -> i64 {
        self.query_in("eligd", sql)
    }

    fn query_in(&self, db: &str, sql: &str) -> i64 {
        let messages = self.with_client(db, |c| c.simple_query(sql));
        let row = messages
            .iter()
            .find_map(|m| match m {
                ::postgres::SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no rows from {sql:?}"));
        let text = row.get(0).unwrap_or_else(|| panic!("NULL from {sql:?}"));
        text.parse()
            .unwrap_or_else(|_| panic!("{text:?} from {sql:?} is not an i64"))
    }

    /// The last lines of the server's log, for panic messages.
    fn log_tail(&self) -> String {
        let bytes = std::fs::read(self.dir.path().join(LOG)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "private postgres on port {} {what}; log ({}):\n{}",
            self.port,
            self.dir.path().join(LOG).display(),
            self.log_tail()
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate shutdown: no checkpoint, the data is thrown away anyway. Then make sure,
        // without panicking (we may be unwinding), that nothing of the cluster is left.
        self.shut_down(libc::SIGQUIT, Duration::from_secs(10));
        self.kill_all();
    }
}
