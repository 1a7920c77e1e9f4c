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

/// The path of `tool` on `PATH`; a missing tool panics with what to install and how:
/// "needs `prometheus` (Debian: sudo apt-get install prometheus; or run scripts/test.sh, which
/// installs it)". A test that needs a tool calls this first: a missing tool is a failure that
/// says so, never a pass and never a panic somewhere further on.
#[track_caller]
pub fn require_tool(tool: &str, debian_package: &str) -> std::path::PathBuf {
    match find_tool(tool) {
        Some(path) => path,
        None => panic!("{}", missing_tool(tool, debian_package)),
    }
}

/// The path of `tool` on `PATH`, if there.
pub fn find_tool(tool: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The message for a missing tool (see [`require_tool`]).
pub fn missing_tool(tool: &str, debian_package: &str) -> String {
    format!(
        "this test needs `{tool}`, which is not on PATH (Debian: sudo apt-get install \
         {debian_package}; or run scripts/test.sh, which installs it)"
    )
}
