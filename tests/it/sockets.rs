//! Sockets really close: floods that once held every descriptor of a server run under a
//! 300-descriptor limit (`prlimit --nofile=300`), each against the real binary while a new
//! client asks `/healthz` every ~100 ms, during the flood and after it. Every answer must
//! come within 1 s, and the server must not log hundreds of `accept failed` lines.
//!
//! - clients that pipeline requests and never read the answers (their writes stall: the
//!   write timeout and the hard close after eviction free their descriptors);
//! - TCP connections to the TLS listener that never send a ClientHello (counted and evicted
//!   like a connection reading its head);
//! - request bodies that never end on the keyless `POST /v1/public/credit`, one per slot of
//!   `--max-connections` (the oldest busy one is evicted for a new connection).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::metric;
use crate::support::{raise_own_descriptor_limit, Launch, Served};

/// `eligd serve` under a 300-descriptor limit, with `args`.
fn serve_with_300_descriptors(args: &[&str]) -> Served {
    Launch::demo(1000).flags(args).descriptors(300).ready()
}

/// A new client asking `/healthz` every ~100 ms on a thread until stopped; each answer's
/// wait, or the failure (counted as the time it took, at least 3 s).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Result<Duration, String>>>,
}

impl Prober {
    fn start(ask: impl Fn() -> Result<(), String> + Send + 'static) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut waits = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                waits.push(ask().map(|()| started.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
            waits
        });
        Prober { stop, thread }
    }

    /// Stops; asserts every answer came within 1 s and returns the worst wait.
    fn worst(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        let waits = self.thread.join().unwrap();
        let failed: Vec<&String> = waits.iter().filter_map(|w| w.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} health checks failed: {:?}",
            failed.len(),
            waits.len(),
            &failed[..failed.len().min(5)]
        );
        let worst = waits.iter().flatten().max().copied().unwrap_or_default();
        eprintln!("{} health checks, the worst waited {worst:?}", waits.len());
        assert!(waits.len() >= 20, "only {} health checks", waits.len());
        assert!(
            worst < Duration::from_secs(1),
            "a health check waited {worst:?}"
        );
        worst
    }
}

/// `GET /healthz` on a new plain connection, answered 200 within 3 s.
fn healthz(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let wait = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, wait).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    if out.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answer: {:?}", String::from_utf8_lossy(&out)))
    }
}

/// The `accept failed` lines the server logged: at most one a second.
fn assert_few_accept_failures(served: &Served, seconds: usize) {
    let lines = served.log().matches("accept failed").count();
    assert!(
        lines <= seconds + 1,
        "{lines} accept failed lines in {seconds} s"
    );
}

/// The sockets the server holds now (its `/proc` descriptors that are sockets).
fn server_sockets(served: &Served) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", served.pid()))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Opens `n` connections to `addr`, each made by `open` (in a runtime on this thread).
fn flood<F, Fut>(n: usize, open: F) -> Vec<TcpStream>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..n {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(3), open()).await {
                held.push(s);
            }
        }
        held
    })
}

#[test]
fn clients_that_pipeline_and_never_read_hold_no_descriptors_past_the_write_timeout() {
    let _exclusive = crate::exclusive();
    raise_own_descriptor_limit();
    let served = serve_with_300_descriptors(&["--max-connections", "200", "--write-timeout", "3"]);
    let addr = served.addr.clone();
    let probe = Prober::start({
        let addr = addr.clone();
        move || healthz(&addr)
    });
    // 400 clients with a 1 KiB receive buffer, each sending 50 pipelined requests for the
    // page's script (12 KiB): 600 KiB of answers each, more than the server's send buffer.
    let target: SocketAddr = addr.parse().unwrap();
    let requests = "GET /page.js HTTP/1.1\r\nhost: x\r\n\r\n".repeat(50);
    let started = Instant::now();
    let clients = flood(400, || async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(1024)?;
        let stream = socket.connect(target).await?;
        let mut stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let _ = stream.write_all(requests.as_bytes());
        Ok(stream)
    });
    assert!(clients.len() >= 390, "{} clients connected", clients.len());
    // Past the write timeout (3 s) and the grace, the server holds none of them.
    let deadline = Instant::now() + Duration::from_secs(12);
    while server_sockets(&served) >= 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (held, waited) = (server_sockets(&served), started.elapsed());
    eprintln!("{held} sockets held {waited:?} after the flood began");
    std::thread::sleep(Duration::from_secs(1));
    drop(clients);
    std::thread::sleep(Duration::from_secs(2));
    probe.worst();
    assert!(
        held < 20,
        "the server still held {held} sockets after {waited:?}"
    );
    assert!(metric(&served, "eligd_connections_timed_out_total") >= 100.0);
    assert!(metric(&served, "eligd_connections_closed_hard_total") >= 100.0);
    assert_few_accept_failures(&served, started.elapsed().as_secs() as usize);
}

// Held for the whole test on purpose: no other flood runs meanwhile (no other task here
// takes it).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_that_never_say_hello_never_stop_healthz() {
    let _exclusive = crate::exclusive();
    raise_own_descriptor_limit();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, trusted) = crate::listener::certificate(dir.path(), "sockets");
    let (cert, key) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    // Only TLS is spoken on the port, so `/readyz` is not asked here: the log says ready.
    let served = tokio::task::spawn_blocking(move || {
        Launch::demo(1000)
            .flags(&[
                "--max-connections",
                "200",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ])
            .descriptors(300)
            .until("index loaded; ready")
    })
    .await
    .unwrap();
    let addr = served.addr.clone();
    let probe = Prober::start({
        let addr = addr.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        move || {
            runtime.block_on(async {
                let asked = crate::listener::https_get(&addr, &trusted, "/healthz");
                match tokio::time::timeout(Duration::from_secs(3), asked).await {
                    Ok(Ok(answer)) if answer.starts_with("HTTP/1.1 200") => Ok(()),
                    Ok(Ok(answer)) => Err(format!("answer: {answer:?}")),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("no answer in 3 s".into()),
                }
            })
        }
    });
    let started = Instant::now();
    let target: SocketAddr = addr.parse().unwrap();
    // 400 TCP connections that never start the handshake, held for 12 s (past the 10 s
    // handshake timeout, when the last of them are dropped).
    let silent = tokio::task::spawn_blocking(move || {
        flood(400, || async {
            tokio::net::TcpStream::connect(target).await?.into_std()
        })
    })
    .await
    .unwrap();
    assert!(silent.len() >= 390, "{} connected", silent.len());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let held = server_sockets(&served);
    drop(silent);
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(move || probe.worst())
        .await
        .unwrap();
    // Past the handshake timeout the server held none of them.
    assert!(held < 20, "the server still held {held} sockets");
    assert_few_accept_failures(&served, started.elapsed().as_secs() as usize);
}

#[test]
fn bodies_that_never_end_on_the_public_endpoint_never_stop_healthz() {
    let _exclusive = crate::exclusive();
    raise_own_descriptor_limit();
    // Allowance enough that every body is read (each request pays before its body, so with
    // the default 10 a minute per address the flood would mostly be refused at once).
    let served = serve_with_300_descriptors(&[
        "--max-connections",
        "100",
        "--public-requests-per-minute",
        "100000",
        "--public-requests-per-second",
        "0",
    ]);
    let addr = served.addr.clone();
    let target: SocketAddr = addr.parse().unwrap();
    let started = Instant::now();
    // Every slot taken by a body that never ends (the handler waits up to 10 s for it).
    let bodies = flood(100, || async {
        let mut s = tokio::net::TcpStream::connect(target).await?.into_std()?;
        s.set_nonblocking(false)?;
        s.write_all(
            b"POST /v1/public/credit HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 3000\r\n\r\n{\"national_id\": \"00",
        )?;
        Ok(s)
    });
    assert_eq!(bodies.len(), 100);
    // Let the server take them all in before the first health check.
    std::thread::sleep(Duration::from_millis(500));
    let probe = Prober::start({
        let addr = addr.clone();
        move || healthz(&addr)
    });
    std::thread::sleep(Duration::from_secs(11));
    drop(bodies);
    std::thread::sleep(Duration::from_secs(2));
    probe.worst();
    // A slot was made by evicting a busy connection (its body still unfinished), never by
    // refusing the new one.
    assert!(metric(&served, "eligd_connections_evicted_total") >= 1.0);
    assert_eq!(metric(&served, "eligd_connections_refused_total"), 0.0);
    assert_few_accept_failures(&served, started.elapsed().as_secs() as usize);
}

/// Asks `GET /healthz` on one keep-alive connection `per_second` times a second for
/// `seconds`; returns (answered, failed). A failure reconnects.
fn keep_alive_partner(addr: String, per_second: u32, seconds: u64) -> (usize, usize) {
    use std::io::{BufRead, BufReader};
    let connect = || {
        let s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        (BufReader::new(s.try_clone().unwrap()), s)
    };
    let (mut reader, mut writer) = connect();
    let (mut answered, mut failed) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let ok = writer
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .is_ok()
            && (|| {
                let mut line = String::new();
                reader.read_line(&mut line).ok()?;
                line.starts_with("HTTP/1.1 200").then_some(())?;
                // The rest of the head, then the 3-byte body "ok\n".
                loop {
                    line.clear();
                    reader.read_line(&mut line).ok()?;
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = [0u8; 3];
                reader.read_exact(&mut body).ok()
            })()
            .is_some();
        if ok {
            answered += 1;
        } else {
            failed += 1;
            (reader, writer) = connect();
        }
        std::thread::sleep(Duration::from_millis(1000 / u64::from(per_second)));
    }
    (answered, failed)
}

#[test]
fn a_churn_of_half_open_connections_never_cuts_a_keep_alive_client() {
    let _exclusive = crate::exclusive();
    // An attacker without a key holds every slot with half a request head and keeps closing
    // and reopening them; an honest partner asks 100 times a second on one keep-alive
    // connection and a new client asks /healthz every 100 ms. Before strangers and
    // half-heads went first, the partner lost about a quarter of its requests (the attack
    // review's F1), and here 10 of 79 new clients failed.
    let served = crate::support::serve(&["--demo-members", "1000", "--max-connections", "120"]);
    let target: SocketAddr = served.addr.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                let mut opened = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = TcpStream::connect(target) {
                        let _ = s.write_all(b"GET /x HTTP/1.1\r\n");
                        held.push_back(s);
                        opened += 1;
                    }
                    if held.len() > 70 {
                        held.pop_front();
                    }
                    // About 2,000 new connections a second in all: churn enough to evict
                    // constantly, without starving the machine.
                    std::thread::sleep(Duration::from_micros(900));
                }
                opened
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let probes = {
        let addr = served.addr.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut waits = Vec::new();
            while started.elapsed() < Duration::from_secs(8) {
                let asked = Instant::now();
                waits.push(healthz(&addr).map(|()| asked.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
            waits
        })
    };
    let (answered, failed) = keep_alive_partner(served.addr.clone(), 100, 8);
    let waits = probes.join().unwrap();
    let probe_failures = waits.iter().filter(|w| w.is_err()).count();
    let worst = waits.iter().flatten().max().copied().unwrap_or_default();
    eprintln!(
        "new clients: {probe_failures} of {} failed, worst {worst:?}",
        waits.len()
    );
    // A new client is a stranger until answered: while the churn holds every slot, one may
    // be evicted before it is read (the previous build: 13 %). At most 1 in 20 here.
    assert!(
        probe_failures * 20 <= waits.len(),
        "{probe_failures} of {} new clients failed",
        waits.len()
    );
    assert!(
        worst < Duration::from_secs(1),
        "a new client waited {worst:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let opened: u64 = churners.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!(
        "partner: {answered} answered, {failed} failed; the churn opened {opened} connections"
    );
    assert!(opened > 2_000, "the churn opened only {opened} connections");
    assert!(metric(&served, "eligd_connections_evicted_total") > 1_000.0);
    assert_eq!(
        failed,
        0,
        "{failed} of {} partner requests failed",
        answered + failed
    );
}
