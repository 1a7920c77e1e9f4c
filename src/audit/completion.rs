//! No answer before its record: the request that produced audit records waits, before its
//! answer is written to the socket, until the writer has handed every one of them to the
//! operating system (`write` returned), or failed to.
//!
//! Records do not carry a handle through every channel's code. Instead the router polls the
//! request inside [`Captured`], which makes a per-request [`Completion`] the thread's
//! *current* one for the duration of each poll; [`current`] (called by `AuditLog::record`)
//! counts the record on it. Whatever thread a poll runs on and however many awaits the
//! request makes, each record is counted on the request that made it, and a request that made
//! none never waits. Outside a capture (tools, unit tests) records are not waited for.
//!
//! The writer calls [`Completion::done`] once per record, after its batch's `write`
//! returned (or failed). [`Completion::wait`] is ready when all are done, and says whether
//! every one was written. That is group commit: the records of every request that arrived
//! while the last batch was being written go out in the next `write`.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// The records one request made, and whether the writer has dealt with all of them.
#[derive(Default)]
pub struct Completion {
    pending: AtomicU32,
    /// Whether any record was counted (the request waits only then).
    any: AtomicBool,
    failed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Completion {
    /// One more record to wait for.
    fn add(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.any.store(true, Ordering::Relaxed);
    }

    /// The writer is done with one record: written (`true`) or dropped with a failed batch.
    pub(crate) fn done(&self, written: bool) {
        if !written {
            self.failed.store(true, Ordering::Release);
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Whether none of the records was dropped with a failed write.
    pub fn written(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    /// Records still waiting for the writer.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until the writer is done with every record; `true` when all were written.
    pub fn wait(self: Arc<Self>) -> Wait {
        Wait(self)
    }
}

/// The future of [`Completion::wait`].
pub struct Wait(Arc<Completion>);

impl Future for Wait {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let c = &self.0;
        if c.pending() == 0 {
            return Poll::Ready(!c.failed.load(Ordering::Acquire));
        }
        *c.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        // The writer may have finished between the first check and the waker being stored:
        // it takes the waker only after its count reached 0, under the same lock.
        if c.pending() == 0 {
            return Poll::Ready(!c.failed.load(Ordering::Acquire));
        }
        Poll::Pending
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Completion>>> = const { RefCell::new(None) };
}

/// The completion of the request being polled on this thread, counting one more record on
/// it; `None` outside a [`Captured`] poll.
pub(crate) fn current() -> Option<Arc<Completion>> {
    CURRENT.with(|c| {
        c.borrow().as_ref().map(|c| {
            c.add();
            Arc::clone(c)
        })
    })
}

pin_project_lite::pin_project! {
    /// A request's future whose audit records are counted on its own [`Completion`].
    pub struct Captured<F> {
        #[pin]
        inner: F,
        completion: Option<Arc<Completion>>,
    }
}

impl<F: Future> Captured<F> {
    pub fn new(inner: F) -> Captured<F> {
        Captured {
            inner,
            completion: None,
        }
    }
}

impl<F: Future> Future for Captured<F> {
    /// The request's output, and its completion when it made audit records.
    type Output = (F::Output, Option<Arc<Completion>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let mine = this
            .completion
            .take()
            .unwrap_or_else(|| Arc::new(Completion::default()));
        // Nested captures (none today) keep the outer one across the inner poll.
        let outer = CURRENT.with(|c| c.borrow_mut().replace(mine));
        let polled = inner.poll(cx);
        let mine = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
        match polled {
            Poll::Ready(output) => {
                let made_records = mine.filter(|c| c.any.load(Ordering::Relaxed));
                Poll::Ready((output, made_records))
            }
            Poll::Pending => {
                *this.completion = mine;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_waits_for_its_own_records_only() {
        let (out, none) = Captured::new(async { 7 }).await;
        assert_eq!(out, 7);
        assert!(none.is_none(), "no record, no wait");

        let (handles, completion) = Captured::new(async {
            let a = current().unwrap();
            tokio::task::yield_now().await;
            let b = current().unwrap();
            (a, b)
        })
        .await;
        let completion = completion.expect("two records");
        assert!(Arc::ptr_eq(&handles.0, &handles.1));
        assert_eq!(completion.pending(), 2);
        let waiting = tokio::spawn(Arc::clone(&completion).wait());
        handles.0.done(true);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        handles.1.done(true);
        assert!(waiting.await.unwrap(), "both written");
        assert!(current().is_none(), "nothing captured outside a poll");
    }

    #[tokio::test]
    async fn one_record_lost_fails_the_request() {
        let (handle, completion) = Captured::new(async { current().unwrap() }).await;
        handle.done(false);
        assert!(!completion.unwrap().wait().await);
    }
}
