//! `hello-server ADDR [BODY_BYTES]`: a minimal hyper 1 HTTP/1.1 server answering every
//! request with a 200 and a fixed JSON body (`{"ok":true}`, or padded to `BODY_BYTES` so that
//! it is as long as the answer it stands in for): the baseline `http-load` and `bench` compare
//! eligd against (same machine, same run). Loopback addresses only; runs until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// `{"ok":true}`, padded with a string field to `bytes` when that is longer.
fn body(bytes: usize) -> Bytes {
    // `{"ok":true,"pad":""}` is 20 bytes before its padding.
    let padding = bytes.saturating_sub(20);
    if padding == 0 {
        return Bytes::from_static(b"{\"ok\":true}");
    }
    Bytes::from(format!(r#"{{"ok":true,"pad":"{}"}}"#, "x".repeat(padding)))
}

fn main() -> ExitCode {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hello-server: error: {e}");
            return ExitCode::from(2);
        }
    };
    let bytes = match std::env::args().nth(2).map(|b| b.parse::<usize>()) {
        None => 0,
        Some(Ok(b)) if b <= 1 << 20 => b,
        Some(_) => {
            eprintln!("hello-server: error: BODY_BYTES must be a number up to 1 MiB");
            return ExitCode::from(2);
        }
    };
    let body = body(bytes);
    if !addr.ip().is_loopback() {
        eprintln!("hello-server: error: loopback addresses only");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hello-server: error: {e}");
            return ExitCode::from(2);
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let body = body.clone();
            tokio::spawn(async move {
                let hello = move |_: Request<hyper::body::Incoming>| {
                    let mut response = Response::new(Full::new(body.clone()));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    response.headers_mut().insert(
                        hyper::header::CACHE_CONTROL,
                        hyper::header::HeaderValue::from_static("no-store"),
                    );
                    std::future::ready(Ok::<_, Infallible>(response))
                };
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    });
    if let Err(e) = result {
        eprintln!("hello-server: error: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
