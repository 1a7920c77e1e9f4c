//! Private database servers for tests and load tools: each one gets its own temp dir and
//! free port on 127.0.0.1 and is stopped on drop, so tests never share state or need a
//! system-wide service. Test tooling: failures panic with a message saying what to fix.

mod postgres;
mod proxy;
mod redis;

pub mod certs;
pub mod docker;
pub use crate::postgres::PgServer;
pub use crate::proxy::TcpProxy;
pub use crate::redis::{RedisServer, Sentinel};

/// A TCP port nothing listens on right now (the server binds it next; callers retry on a
/// race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free TCP port on 127.0.0.1")
        .port()
}
