//! Floods and slow clients against the real binary, all at once, while a well-behaved client
//! keeps measuring: slowloris heads, a body that never ends, a 100 KiB header, pipelined
//! requests, and request-smuggling attempts (conflicting `Content-Length` and
//! `Transfer-Encoding`). Each gets a bounded answer or a closed connection; `/healthz` and
//! lookups answer within 50 ms throughout. (More idle connections than descriptors:
//! `listener::more_idle_connections_than_file_descriptors_never_stop_healthz`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{http_get, serve};

/// Everything the server sends on `stream` until it closes it or `wait` passes.
fn read_all(stream: &mut TcpStream, wait: Duration) -> String {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server has closed `stream` (it may have sent something first).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_clients_and_malformed_floods_never_slow_a_good_client() {
    let _exclusive = crate::exclusive();
    let eligd = serve(&[
        "--demo-members",
        "2000",
        "--header-read-timeout",
        "2",
        "--max-connections",
        "2000",
    ]);
    let addr = eligd.addr.clone();
    crate::support::wait_for("the demo samples", 10, || {
        eligd.log().contains("demo_national_id=")
    });
    let log = eligd.log();
    let id = log.split("demo_national_id=").nth(1).unwrap();
    let id = id.split_whitespace().next().unwrap().to_string();

    // 500 slowloris connections, each dribbling a header byte every 200 ms.
    let slowloris: Vec<_> = (0..5)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..100)
                    .filter_map(|_| TcpStream::connect(&addr).ok())
                    .collect();
                for c in &mut conns {
                    let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ");
                }
                let until = Instant::now() + Duration::from_secs(4);
                while Instant::now() < until {
                    for c in &mut conns {
                        let _ = c.write_all(b"a");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                // The header-read timeout closed every one of them.
                conns.iter_mut().map(closed).filter(|c| *c).count()
            })
        })
        .collect();

    // A body that never ends: a declared length, then silence.
    let endless = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{\"national_ids\": [")
                .unwrap();
            read_all(&mut s, Duration::from_secs(15))
        })
    };

    // Meanwhile a good client: health and lookups, each within 50 ms.
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for path in [
            "/healthz".to_string(),
            format!("/v1/members/{id}/eligibility"),
        ] {
            let started = Instant::now();
            let (status, _) = http_get(&addr, &path);
            worst = worst.max(started.elapsed());
            assert_eq!(status, 200, "{path}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        worst < Duration::from_millis(50),
        "a good client waited {worst:?}"
    );

    // A 100 KiB header: refused with 431, or the connection closed; never answered.
    let mut s = TcpStream::connect(&addr).unwrap();
    let _ = s.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nx-big: {}\r\n\r\n",
            "a".repeat(100 * 1024)
        )
        .as_bytes(),
    );
    let answer = read_all(&mut s, Duration::from_secs(3));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // Pipelined requests on one connection: every one answered, in order.
    let mut s = TcpStream::connect(&addr).unwrap();
    let mut pipelined = String::new();
    for i in 0..50 {
        pipelined.push_str(&format!("GET /healthz?n={i} HTTP/1.1\r\nhost: x\r\n\r\n"));
    }
    pipelined.push_str("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(pipelined.as_bytes()).unwrap();
    let answers = read_all(&mut s, Duration::from_secs(5));
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 51);

    // Smuggling: a length and chunked together, hiding a second request in the body. The
    // hidden request must never be answered as one of its own.
    for attack in [
        "POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/members/0012345679/eligibility HTTP/1.1\r\nhost: x\r\n\r\n",
        "POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nGET /\r\n0\r\n\r\n",
        "POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST /v1/eligibility/batch HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 50\r\n\r\nhello",
    ] {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(attack.as_bytes()).unwrap();
        let answers = read_all(&mut s, Duration::from_secs(3));
        assert!(answers.matches("HTTP/1.1").count() <= 1, "{attack:?} → {answers}");
        assert!(!answers.contains("\"data_version\""), "{attack:?} smuggled a lookup: {answers}");
    }

    let closed: usize = slowloris.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        closed >= 450,
        "{closed} of 500 slowloris connections closed by the header timeout"
    );
    let endless = endless.join().unwrap();
    assert!(
        endless.is_empty() || endless.starts_with("HTTP/1.1 400"),
        "a body that never ends gets 400 or a close: {endless}"
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200);
}

/// More idle connections than the process may hold descriptors, opened from several client
/// processes: the server evicts the longest idle to make room, and a good client's health
/// checks and lookups answer within 50 ms throughout.
#[test]
fn idle_connections_beyond_the_descriptor_limit_from_several_processes() {
    let _exclusive = crate::exclusive();
    let served = crate::support::Launch::demo(1000)
        .flags(&["--max-connections", "800"])
        .descriptors(1024)
        .ready();
    let (host, port) = served.addr.rsplit_once(':').unwrap();
    // Three processes, 700 connections each: 2,100 against 1,024 descriptors.
    let script = format!(
        "import socket,time\ns=[]\nfor _ in range(700):\n    try:\n        s.append(socket.create_connection(('{host}',{port}),timeout=2))\n    except OSError:\n        pass\nprint(len(s),flush=True)\ntime.sleep(20)"
    );
    let mut clients: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new("python3")
                .args(["-c", &script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut opened = 0;
    for c in &mut clients {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        opened += line.trim().parse::<usize>().unwrap();
    }
    assert!(opened > 1024, "{opened} connections opened");
    // A client counts a connection as open once it sits in the listen backlog (1024), before
    // the server accepted it; wait until the server has taken every one in (kept, or closed
    // to make room: evicted, or refused when every one is busy), then ask.
    crate::support::wait_for("the server to accept the flood", 30, || {
        let m = |s: &str| crate::support::metric(&served, s);
        m("eligd_connections_open")
            + m("eligd_connections_evicted_total")
            + m("eligd_connections_refused_total")
            >= opened as f64
    });
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        for path in ["/healthz", "/v1/members/0012345679/eligibility"] {
            let started = Instant::now();
            let (status, _) = http_get(&served.addr, path);
            worst = worst.max(started.elapsed());
            assert!(status == 200 || status == 404, "{path}: {status}");
        }
    }
    assert!(
        worst < Duration::from_millis(50),
        "a good client waited {worst:?}"
    );
    assert!(crate::support::metric(&served, "eligd_connections_evicted_total") >= 1.0);
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
}
