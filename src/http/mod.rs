//! The HTTP server: hyper 1 over HTTP/1.1 with keep-alive, optional TLS ([`tls`]), a bounded
//! set of connections with separate header-read, idle and write timeouts ([`connections`]),
//! sockets kept within the process's descriptors ([`descriptors`]), and a graceful shutdown.
//! `serve` takes a bound listener and a shutdown future, so the binary binds the configured
//! address and tests bind port 0 and stop the server when they are done.

pub mod connections;
pub mod descriptors;
mod router;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

pub use router::{handle, Routes, MAX_BATCH, MAX_BODY_BYTES};

use crate::app::AppState;
use connections::{Close, ConnectionMetrics, Limits, Registered, Registry, TrackedIo};

/// How long connections get to finish their requests after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the listener treats connections.
#[derive(Clone)]
pub struct ListenerConfig {
    pub tls: Option<Arc<tls::Tls>>,
    pub max_connections: usize,
    /// A client that started a request must send its whole head within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A write that waits this long for a client to read is given up on (the connection is
    /// dropped): a client that never reads its answers holds nothing longer.
    pub write_timeout: Duration,
    pub metrics: ConnectionMetrics,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            tls: None,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            metrics: ConnectionMetrics::default(),
        }
    }
}

/// Serves the API on `listener` with the default listener settings (tests, tools).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let config = ListenerConfig {
        metrics: connection_metrics(&state),
        ..ListenerConfig::default()
    };
    serve_configured(listener, state, config, shutdown).await
}

/// The service's connection counters, as the listener keeps them.
pub fn connection_metrics(state: &AppState) -> ConnectionMetrics {
    let access = &state.metrics.access;
    ConnectionMetrics {
        open: access.connections_open.clone(),
        evicted: access.connections_evicted.clone(),
        refused: access.connections_refused.clone(),
        timed_out: access.connections_timed_out.clone(),
        closed_hard: access.connections_closed_hard.clone(),
        accept_errors: access.accept_errors.clone(),
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets open
/// requests finish (up to [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve_configured(
    listener: TcpListener,
    state: Arc<AppState>,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve_routes(listener, state, router::Routes::All, config, shutdown).await
}

/// [`serve_configured`] for a listener serving only `routes` (`--ops-listen`).
pub async fn serve_routes(
    listener: TcpListener,
    state: Arc<AppState>,
    routes: router::Routes,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
) {
    // One reference to the state for the rest of the process, read by every request, instead
    // of a reference taken and dropped per request: that count would be one word every
    // request on every core writes. `eligd serve` runs one server per listener; an in-process
    // test server keeps its (small) state until the test process ends.
    let state: &'static AppState = Box::leak(Box::new(state));
    let handler = move |request, peer| router::handle_routes(state, routes, request, peer);
    serve_with_config(listener, handler, config, shutdown).await
}

/// The server loop of [`serve`] around any handler (the relay's operations port uses it too).
pub async fn serve_with<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(hyper::Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    serve_with_config(listener, handler, ListenerConfig::default(), shutdown).await
}

async fn serve_with_config<H, F>(
    listener: TcpListener,
    handler: H,
    config: ListenerConfig,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(hyper::Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let registry = Registry::new(limits(&config), config.metrics.clone());
    let mut accept_errors = descriptors::AcceptErrors::new(config.metrics.accept_errors.clone());
    let sweeper = {
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                registry.sweep();
            }
        })
    };
    let mut builder = http1::Builder::new();
    // Header-read and idle timeouts are the registry's (hyper's one timeout would do both).
    // hyper refuses a head (431) only once its read buffer passes this size without holding
    // a whole head, and a read may take a head past it first: with 64 KiB, a 100 KiB head
    // was answered; with 32 KiB, heads are refused somewhere between 32 and 56 KiB.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(32 * 1024);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_errors.accepted();
                    let _ = stream.set_nodelay(true);
                    let Some(registered) = registry.admit(config.tls.is_some()) else {
                        drop(stream);
                        continue;
                    };
                    let (builder, handler, tls) = (builder.clone(), handler.clone(), config.tls.clone());
                    tokio::spawn(async move {
                        let fd = stream.as_raw_fd();
                        match tls {
                            None => connection(stream, fd, peer, registered, builder, handler).await,
                            Some(tls) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                                // Under TLS too, so a client's first handshake bytes are seen.
                                let stream = TrackedIo::new(stream, Arc::clone(&registered.conn));
                                let handshake = acceptor.accept(stream);
                                tokio::pin!(handshake);
                                // Evicted or timed out (the sweeper, at the header-read
                                // timeout) mid-handshake: nothing to finish, dropped now.
                                tokio::select! {
                                    done = handshake.as_mut() => match done {
                                        Ok(stream) => {
                                            registered.conn.handshaken();
                                            connection(stream, fd, peer, registered, builder, handler).await
                                        }
                                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    },
                                    _ = registered.conn.closing(Some(Close::Graceful)) => {
                                        descriptors::reset_on_close(fd);
                                        tracing::debug!("TLS handshake cut: evicted or timed out");
                                    }
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors: drop every connection already given up on, and
                    // wait (10 ms doubling to 100 ms) rather than spin on a failing accept.
                    if descriptors::out_of_descriptors(&e) {
                        registry.descriptors_short();
                    }
                    tokio::time::sleep(accept_errors.failed(&e, std::time::Instant::now())).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing open requests");
    registry.close_all();
    tokio::select! {
        _ = registry.until_empty() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("grace period over, closing remaining connections"),
    }
    sweeper.abort();
}

/// The live connections and sockets the registry may hold: `--max-connections`, and the
/// descriptor budget below `RLIMIT_NOFILE` (which also caps the connections, with a warning).
fn limits(config: &ListenerConfig) -> Limits {
    let limit = descriptors::nofile_limit();
    let budget = descriptors::budget(limit).unwrap_or(usize::MAX);
    let max = config.max_connections.min(budget);
    if max < config.max_connections {
        tracing::warn!(
            max_connections = config.max_connections,
            nofile_limit = limit,
            capped_at = max,
            "connections capped below --max-connections by the descriptor limit (less a \
             reserve); raise LimitNOFILE / ulimit -n to hold more"
        );
    }
    Limits {
        max,
        budget,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        write_timeout: config.write_timeout,
    }
}

/// The send buffer asked of every connection's socket (inherited from the listening socket;
/// Linux doubles it for its bookkeeping, so 128 KiB). Without it the kernel grows a socket's
/// buffer to 4 MiB for a client that never reads before a write ever waits: the write
/// timeout never starts, and such clients pin gigabytes of kernel memory. Every answer
/// (a 100-ID batch, `/metrics`) fits in it whole.
pub const SEND_BUFFER_BYTES: u32 = 64 * 1024;

/// The listen backlog: connections the kernel completes before the server accepts them.
/// tokio's `TcpListener::bind` asks for 128; a burst of more new connections than that (a
/// flood of slow clients, a fleet of clients reconnecting after a restart) overflowed it,
/// and every SYN dropped meant a 1 s retransmit for whoever sent it, good clients included.
/// Not much more: the queue is first come, first served, so under a flood a good client
/// waits behind everything queued ahead of it (4096 made it wait ~100 ms in a debug build).
/// The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listening socket with [`LISTEN_BACKLOG`], [`SEND_BUFFER_BYTES`] (and
/// `SO_REUSEADDR`, as tokio does).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER_BYTES)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The address a connection came from, handed to the handler with every request (not in the
/// request's extensions: inserting there allocates a map per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub std::net::IpAddr);

/// Serves one connection until it ends or the registry asks it to close: at shutdown it may
/// finish what is in flight; evicted or timed out, it has [`connections::CLOSE_GRACE`] to,
/// then it is dropped (its socket `fd` reset, freeing the descriptor at once).
async fn connection<I, H, F>(
    io: I,
    fd: RawFd,
    peer: std::net::SocketAddr,
    registered: Registered,
    builder: http1::Builder,
    handler: H,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let conn = Arc::clone(&registered.conn);
    let tracked = Arc::clone(&conn);
    let peer = Peer(peer.ip());
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        tracked.busy();
        let answered = handler(request, peer);
        let tracked = Arc::clone(&tracked);
        async move {
            let response = answered.await;
            tracked.idle();
            response
        }
    });
    let connection =
        builder.serve_connection(TokioIo::new(TrackedIo::new(io, conn.clone())), service);
    tokio::pin!(connection);
    let mut asked = None;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            how = conn.closing(asked) => {
                if how == Close::Now {
                    descriptors::reset_on_close(fd);
                    break;
                }
                if asked.is_none() {
                    connection.as_mut().graceful_shutdown();
                }
                asked = Some(how);
            }
        }
    }
    // `registered` (a parameter) is dropped after the connection, once its socket is closed.
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog_not_in_syn_retransmits() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Nobody accepts: every connection must still complete into the backlog at once.
        // With tokio's default of 128, the 129th waited for a SYN retransmit (1 s).
        let connected = tokio::task::spawn_blocking(move || {
            (0..600)
                .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
        assert_eq!(connected.map(|c| c.len()).unwrap(), 600);
        drop(listener);
    }
}
