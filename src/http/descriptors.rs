//! File descriptors as a resource the listener must not run out of: every socket is one, and
//! a process out of them can accept nobody, `/healthz` included. The listener keeps the
//! sockets it holds under a budget below the process's `RLIMIT_NOFILE` (the rest is a
//! reserve for the process's own files and for the next accepts), drops a connection it has
//! given up on at once (`SO_LINGER` 0: no descriptor or send queue left behind), and when
//! an accept fails anyway backs off instead of spinning, logging once a second at most.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// Descriptors kept back from the budget: a tenth of the limit, at least 64, at most 1,024.
pub fn reserve(limit: u64) -> u64 {
    (limit / 10).clamp(64, 1024)
}

/// The sockets the listener may hold under a descriptor limit of `limit`: the limit less the
/// [`reserve`] (half of it for a limit too small for a reserve); `None` when unlimited.
pub fn budget(limit: Option<u64>) -> Option<usize> {
    let limit = limit?;
    let kept = limit.saturating_sub(reserve(limit)).max(limit / 2).max(1);
    Some(usize::try_from(kept).unwrap_or(usize::MAX))
}

/// The process's soft `RLIMIT_NOFILE`; `None` when unlimited or unknown.
#[allow(unsafe_code)]
pub fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives on this stack frame.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Makes closing the socket `fd` reset the connection (`SO_LINGER` 0): the descriptor and the
/// kernel's send queue are freed at once, not kept while the kernel tries to deliver data a
/// client never reads. Only for a connection given up on: a clean close keeps the default.
#[allow(unsafe_code)]
pub fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the caller owns the socket `fd` (its stream is alive, dropped right after);
    // setsockopt only reads the struct, whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "SO_LINGER");
    }
}

/// Whether a failed accept means descriptors (or kernel memory) ran out.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(100);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Failed accepts in a row: how long to wait before the next, and when to log.
pub struct AcceptErrors {
    backoff: Duration,
    logged: Option<Instant>,
    unlogged: u64,
    counter: Counter,
}

impl AcceptErrors {
    pub fn new(counter: Counter) -> AcceptErrors {
        AcceptErrors {
            backoff: Duration::ZERO,
            logged: None,
            unlogged: 0,
            counter,
        }
    }

    /// An accept succeeded: the next failure waits the shortest again.
    pub fn accepted(&mut self) {
        self.backoff = Duration::ZERO;
    }

    /// Counts a failed accept, logs it unless one was logged within the last second (saying
    /// how many were not), and says how long to wait: 10 ms doubling to 100 ms.
    pub fn failed(&mut self, e: &io::Error, now: Instant) -> Duration {
        self.counter.inc();
        if self
            .logged
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            self.unlogged += 1;
        } else {
            tracing::warn!(error = %e, also_since_last_logged = self.unlogged, "accept failed");
            self.logged = Some(now);
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_a_reserve_below_the_limit() {
        assert_eq!(budget(None), None);
        assert_eq!(budget(Some(300)), Some(236));
        assert_eq!(budget(Some(1024)), Some(922));
        assert_eq!(budget(Some(65_536)), Some(64_512));
        assert_eq!(
            budget(Some(100)),
            Some(50),
            "too small for the reserve: half"
        );
        assert_eq!(budget(Some(1)), Some(1));
    }

    #[test]
    fn failed_accepts_back_off_and_log_once_a_second() {
        let counter = Counter::default();
        let mut errors = AcceptErrors::new(counter.clone());
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_descriptors(&e));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        let start = Instant::now();
        let waits: Vec<u64> = (0..6)
            .map(|i| {
                errors
                    .failed(&e, start + Duration::from_millis(i))
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 100, 100]);
        assert_eq!((errors.unlogged, counter.get()), (5, 6));
        errors.failed(&e, start + Duration::from_millis(1001));
        assert_eq!(errors.unlogged, 0, "logged again a second later");
        errors.accepted();
        assert_eq!(errors.failed(&e, start).as_millis(), 10);
    }
}
