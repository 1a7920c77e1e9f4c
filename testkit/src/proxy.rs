//! A TCP proxy in front of a test server, for faults a direct connection cannot show: the
//! backend restarts while the client's connection stays open (what Redis Enterprise's proxy,
//! Envoy and twemproxy do), and traffic held back and let through again (fencing tests).
//!
//! Each client connection gets a backend connection of its own. When the backend drops it
//! (the server restarted), the proxy connects again and carries on with the same client
//! connection; bytes in flight at that moment may be lost, as they would through a real
//! proxy. Everything stops on drop. Threads, not async: tests and load tools of any kind can
//! use it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a client's bytes wait for the backend to come back before the client's
/// connection is closed.
const BACKEND_GONE_FOR: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_millis(10);

pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    backend: String,
    stop: AtomicBool,
    held: Mutex<bool>,
    released: Condvar,
    accepted: AtomicU64,
    reconnects: AtomicU64,
    /// Every socket the proxy opened or accepted, shut down on drop to wake blocked threads.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn track(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(clone);
        }
    }

    /// Connects to the backend, retrying until it answers, the proxy stops or `give_up`.
    fn connect_backend(&self, give_up: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + give_up;
        while !self.stopped() && Instant::now() < deadline {
            if let Ok(stream) = TcpStream::connect(&self.backend) {
                let _ = stream.set_nodelay(true);
                self.track(&stream);
                return Some(stream);
            }
            std::thread::sleep(RETRY_EVERY);
        }
        None
    }

    /// Blocks while traffic is held.
    fn wait_released(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held && !self.stopped() {
            held = self
                .released
                .wait_timeout(held, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// One client connection and its current backend connection.
struct Link {
    client: TcpStream,
    backend: Mutex<(u64, TcpStream)>,
    closed: AtomicBool,
}

impl Link {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        if let Ok(b) = self.backend.lock() {
            let _ = b.1.shutdown(Shutdown::Both);
        }
    }

    fn current(&self) -> Option<(u64, TcpStream)> {
        let b = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        b.1.try_clone().ok().map(|s| (b.0, s))
    }
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `backend`
    /// (`host:port`).
    pub fn start(backend: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("no free TCP port on 127.0.0.1");
        let port = listener.local_addr().expect("a bound address").port();
        listener
            .set_nonblocking(true)
            .expect("cannot make the proxy's listener non-blocking");
        let shared = Arc::new(Shared {
            backend: backend.to_string(),
            stop: AtomicBool::new(false),
            held: Mutex::new(false),
            released: Condvar::new(),
            accepted: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || accept(listener, s));
        TcpProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`, for a Redis backend.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding client → backend bytes (they wait, none are lost) until
    /// [`TcpProxy::release`]. Replies to bytes already forwarded still arrive.
    pub fn hold(&self) {
        *self.shared.held.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Lets held bytes through, in order, and forwards again.
    pub fn release(&self) {
        *self.shared.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.shared.released.notify_all();
    }

    /// Client connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Times a backend connection dropped and the proxy connected again, the client's
    /// connection staying open.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.released.notify_all();
        for s in self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopped() {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                shared.track(&client);
                let s = Arc::clone(&shared);
                std::thread::spawn(move || serve(client, s));
            }
            Err(_) => std::thread::sleep(RETRY_EVERY),
        }
    }
}

/// Starts both directions of one client connection.
fn serve(client: TcpStream, shared: Arc<Shared>) {
    let Some(backend) = shared.connect_backend(BACKEND_GONE_FOR) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let link = Arc::new(Link {
        client,
        backend: Mutex::new((0, backend)),
        closed: AtomicBool::new(false),
    });
    let (l, s) = (Arc::clone(&link), Arc::clone(&shared));
    std::thread::spawn(move || backend_to_client(&l, &s));
    client_to_backend(&link, &shared);
}

fn client_to_backend(link: &Link, shared: &Shared) {
    let Ok(mut client) = link.client.try_clone() else {
        return link.close();
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => return link.close(),
            Ok(n) => n,
        };
        shared.wait_released();
        // A write fails when the backend went away: the bytes go to the next backend
        // connection once the other direction has made it (or are lost with the old one).
        let deadline = Instant::now() + BACKEND_GONE_FOR;
        let mut tried = None;
        loop {
            if shared.stopped() || link.closed.load(Ordering::SeqCst) {
                return link.close();
            }
            match link.current() {
                Some((generation, mut backend)) if tried != Some(generation) => {
                    if backend.write_all(&buf[..n]).is_ok() {
                        break;
                    }
                    tried = Some(generation);
                }
                _ if Instant::now() >= deadline => return link.close(),
                _ => std::thread::sleep(RETRY_EVERY),
            }
        }
    }
}

fn backend_to_client(link: &Link, shared: &Shared) {
    let Ok(mut client) = link.client.try_clone() else {
        return link.close();
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Some((generation, mut backend)) = link.current() else {
            return link.close();
        };
        loop {
            match backend.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client.write_all(&buf[..n]).is_err() {
                        return link.close();
                    }
                }
            }
        }
        if shared.stopped() || link.closed.load(Ordering::SeqCst) {
            return link.close();
        }
        // The backend went away: connect again, keeping the client's connection.
        let Some(fresh) = shared.connect_backend(BACKEND_GONE_FOR) else {
            return link.close();
        };
        *link.backend.lock().unwrap_or_else(|p| p.into_inner()) = (generation + 1, fresh);
        shared.reconnects.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisServer;

    /// Sends an inline command and reads one reply line.
    fn roundtrip(conn: &mut TcpStream, command: &str) -> std::io::Result<String> {
        conn.write_all(format!("{command}\r\n").as_bytes())?;
        read_line(conn)
    }

    fn read_line(conn: &mut TcpStream) -> std::io::Result<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if conn.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            line.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }

    fn connect(proxy: &TcpProxy) -> TcpStream {
        let conn = TcpStream::connect(proxy.address()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn
    }

    #[test]
    fn forwards_both_ways() {
        let redis = RedisServer::start_ephemeral();
        let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
        let mut conn = connect(&proxy);
        assert_eq!(roundtrip(&mut conn, "SET k hello").unwrap(), "+OK");
        assert_eq!(roundtrip(&mut conn, "GET k").unwrap(), "$5");
        assert_eq!(read_line(&mut conn).unwrap(), "hello");
        // A large write crosses in pieces.
        let big = "x".repeat(300_000);
        let set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$300000\r\n{big}\r\n");
        conn.write_all(set.as_bytes()).unwrap();
        assert_eq!(read_line(&mut conn).unwrap(), "+OK");
        assert_eq!(roundtrip(&mut conn, "STRLEN big").unwrap(), ":300000");
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.reconnects(), 0);
    }

    #[test]
    fn a_restarted_backend_keeps_the_client_connection_open() {
        let mut redis = RedisServer::start();
        let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
        let mut conn = connect(&proxy);
        assert_eq!(roundtrip(&mut conn, "SET k before").unwrap(), "+OK");
        let older = redis.copy_data();
        assert_eq!(roundtrip(&mut conn, "SET k after").unwrap(), "+OK");
        redis.kill9();
        redis.restore_data(&older);
        redis.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.reconnects() == 0 {
            assert!(Instant::now() < deadline, "the proxy did not reconnect");
            std::thread::sleep(RETRY_EVERY);
        }
        // The same client connection, now on the restarted server, which came back older.
        assert_eq!(roundtrip(&mut conn, "GET k").unwrap(), "$6");
        assert_eq!(read_line(&mut conn).unwrap(), "before");
        assert_eq!(proxy.accepted(), 1);
        // Once or more: the dying server may still accept a connection it then drops.
        assert!(proxy.reconnects() >= 1);
    }

    #[test]
    fn held_bytes_wait_and_arrive_in_order_on_release() {
        let redis = RedisServer::start_ephemeral();
        let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
        let mut conn = connect(&proxy);
        assert_eq!(roundtrip(&mut conn, "PING").unwrap(), "+PONG");
        proxy.hold();
        conn.write_all(b"SET k held\r\nGET k\r\n").unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(read_line(&mut conn).is_err(), "held bytes were forwarded");
        // Nothing reached the server: another connection, also held, would not see it
        // either, so look directly.
        let direct: Option<String> = redis.cmd(&["GET", "k"]);
        assert_eq!(direct, None);
        proxy.release();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(read_line(&mut conn).unwrap(), "+OK");
        assert_eq!(read_line(&mut conn).unwrap(), "$4");
        assert_eq!(read_line(&mut conn).unwrap(), "held");
    }

    #[test]
    fn dropped_it_closes_its_connections_and_stops_listening() {
        let redis = RedisServer::start_ephemeral();
        let proxy = TcpProxy::start(&format!("127.0.0.1:{}", redis.port()));
        let mut conn = connect(&proxy);
        assert_eq!(roundtrip(&mut conn, "PING").unwrap(), "+PONG");
        drop(proxy);
        // The client's connection is closed (drop also joined the acceptor, closing the
        // listener; its port may already serve a test running beside this one).
        assert!(roundtrip(&mut conn, "PING").is_err());
    }
}
