//! A private `redis-server`: its own temp dir and free port, stopped on drop. [`RedisServer::start`]
//! keeps an append-only file fsynced on every write, so a `kill -9` and restart keeps the
//! stream (fault tests kill, pause and restart it); [`RedisServer::start_ephemeral`] persists
//! nothing, for load tools that only want speed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    persistent: bool,
    /// More `redis-server` arguments (replication, TLS).
    extra: Vec<String>,
    /// `requirepass`, when set: the test's own client authenticates with it.
    password: Option<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Append-only file on, `appendfsync always`: what was acknowledged survives `kill9`.
    pub fn start() -> RedisServer {
        Self::start_with(true)
    }

    /// No append-only file, no snapshots: nothing survives a restart.
    pub fn start_ephemeral() -> RedisServer {
        Self::start_with(false)
    }

    /// A persistent replica of `primary` (`--replicaof`), for Sentinel tests.
    pub fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let of = vec![
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            primary.port.to_string(),
        ];
        Self::start_full(true, |_| of.clone())
    }

    /// Persistent as [`RedisServer::start`], with `requirepass` (the `default` user's
    /// password): clients must `AUTH`. The test's own commands ([`RedisServer::cmd`]…) do.
    pub fn start_with_password(password: &str) -> RedisServer {
        let args = vec!["--requirepass".to_string(), password.to_string()];
        let mut server = Self::start_full_with(true, |_| args.clone(), Some(password));
        server.password = Some(password.to_string());
        server
    }

    /// Also listening with TLS on a port of its own (returned), with this certificate and key
    /// (PEM files); clients are not asked for certificates. The plain port stays, for the
    /// test's own writes. `persistent` as [`RedisServer::start`], else as `start_ephemeral`.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        persistent: bool,
    ) -> (RedisServer, u16) {
        let tls_port = crate::free_port();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let server = Self::start_full(persistent, |_| {
            vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                cert.clone(),
                "--tls-key-file".into(),
                key.clone(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        });
        (server, tls_port)
    }

    fn start_with(persistent: bool) -> RedisServer {
        Self::start_full(persistent, |_| Vec::new())
    }

    fn start_full(persistent: bool, extra: impl Fn(u16) -> Vec<String>) -> RedisServer {
        Self::start_full_with(persistent, extra, None)
    }

    fn start_full_with(
        persistent: bool,
        extra: impl Fn(u16) -> Vec<String>,
        password: Option<&str>,
    ) -> RedisServer {
        // Another process may take the free port before redis-server binds it: try another.
        for _ in 0..5 {
            let port = crate::free_port();
            let mut server = RedisServer {
                dir: tempfile::tempdir().expect("cannot create a temp dir"),
                port,
                persistent,
                extra: extra(port),
                password: password.map(str::to_string),
                child: None,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a private redis-server");
    }

    /// Starts the process on this server's port and dir; false when it did not come up.
    fn spawn(&mut self) -> bool {
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--dir",
                self.dir.path().to_str().expect("temp dir is UTF-8"),
            ])
            .args(aof)
            .args(["--save", ""])
            .args([
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    panic!("{}", crate::missing_tool("redis-server", "redis-server"))
                }
                _ => panic!("cannot run redis-server: {e}"),
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.client().get_connection() {
                if ::redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return true;
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    /// `redis://127.0.0.1:PORT`, without credentials (also for a server with a password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process ID (to pause or kill it from a test).
    pub fn process_id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn client(&self) -> ::redis::Client {
        let url = match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => self.url(),
        };
        ::redis::Client::open(url).expect("valid redis URL")
    }

    fn pid(&self) -> String {
        self.child
            .as_ref()
            .expect("redis-server runs")
            .id()
            .to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill {signal} redis-server failed");
    }

    /// `kill -9`: no shutdown, no final save; the append-only file is what survives.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and dir (after [`RedisServer::kill9`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A copy of the data files as they are now (the append-only file is fsynced on every
    /// write, so it holds every acknowledged write): what a backup, or a replica that had
    /// fallen behind, would hold.
    pub fn copy_data(&self) -> tempfile::TempDir {
        let copy = tempfile::tempdir().expect("cannot create a temp dir");
        copy_tree(self.dir.path(), copy.path());
        copy
    }

    /// Replaces the data files with `copy` (after [`RedisServer::kill9`]): the next
    /// [`RedisServer::restart`] comes back from that older state.
    pub fn restore_data(&mut self, copy: &tempfile::TempDir) {
        assert!(self.child.is_none(), "kill it first");
        for entry in std::fs::read_dir(self.dir.path()).expect("redis dir readable") {
            let path = entry.expect("redis dir entry").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("cannot clear the redis dir");
            } else {
                std::fs::remove_file(&path).expect("cannot clear the redis dir");
            }
        }
        copy_tree(copy.path(), self.dir.path());
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: ::redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.connection();
        let mut cmd = ::redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// XADD with these fields; returns the entry ID.
    pub fn xadd(&self, stream: &str, fields: &[(&str, &str)]) -> String {
        let mut c = self.connection();
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("redis XADD {stream}: {e}"))
    }

    fn connection(&self) -> ::redis::Connection {
        self.client()
            .get_connection()
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must be woken to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            std::fs::create_dir_all(&target).expect("cannot create a dir");
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("cannot copy a data file");
        }
    }
}

/// A private `redis-server --sentinel` monitoring one master, on a free port, stopped on drop.
/// Fast settings: the master counts as down after 1 s, a failover may take 5 s.
pub struct Sentinel {
    _dir: tempfile::TempDir,
    port: u16,
    /// Its `requirepass`, if any.
    password: Option<String>,
    child: Child,
}

impl Sentinel {
    pub fn start(master_name: &str, master: &RedisServer, quorum: u32) -> Sentinel {
        Self::start_with_password(master_name, master, quorum, None)
    }

    /// [`Sentinel::start`] with the sentinel's own `requirepass` (clients, and other
    /// sentinels, must `AUTH` with it); a master with a password is monitored with it
    /// (`sentinel auth-pass`).
    pub fn start_with_password(
        master_name: &str,
        master: &RedisServer,
        quorum: u32,
        requirepass: Option<&str>,
    ) -> Sentinel {
        let dir = tempfile::tempdir().expect("cannot create a temp dir");
        let mut secured = String::new();
        if let Some(password) = requirepass {
            secured.push_str(&format!("requirepass \"{password}\"\n"));
        }
        if let Some(password) = &master.password {
            secured.push_str(&format!(
                "sentinel auth-pass {master_name} \"{password}\"\n"
            ));
        }
        let port = crate::free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\nloglevel warning\n\
                 dir {dir}\n\
                 sentinel monitor {master_name} 127.0.0.1 {mport} {quorum}\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n{secured}",
                dir = dir.path().display(),
                mport = master.port,
            ),
        )
        .expect("cannot write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    panic!("{}", crate::missing_tool("redis-server", "redis-sentinel"))
                }
                _ => panic!("cannot run redis-server --sentinel: {e}"),
            });
        let sentinel = Sentinel {
            _dir: dir,
            port,
            password: requirepass.map(str::to_string),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server --sentinel did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sentinel
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port of the master this sentinel names now.
    pub fn master_port(&self, master_name: &str) -> Option<u16> {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let client =
            ::redis::Client::open(format!("redis://{auth}127.0.0.1:{}", self.port)).ok()?;
        let mut c = client.get_connection().ok()?;
        let addr: Vec<String> = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name)
            .query(&mut c)
            .ok()?;
        addr.get(1)?.parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
