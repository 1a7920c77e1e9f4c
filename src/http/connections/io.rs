//! A connection's IO as the registry sees it: when an idle connection starts sending a
//! request head (or a TLS client its first handshake bytes), and when a write starts
//! waiting for a client that does not read.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Conn, HANDSHAKE, IDLE, READING_HEAD, SILENT_HANDSHAKE};

/// A connection's IO, noting when an idle connection starts sending a request head, and
/// when a write starts waiting for a client that does not read (the sweeper closes it after
/// the write timeout).
pub struct TrackedIo<I> {
    inner: I,
    conn: Arc<Conn>,
}

impl<I> TrackedIo<I> {
    pub fn new(inner: I, conn: Arc<Conn>) -> TrackedIo<I> {
        TrackedIo { inner, conn }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.spoke.store(true, Ordering::Relaxed);
            match self.conn.state.load(Ordering::Acquire) {
                IDLE => self.conn.set(READING_HEAD),
                // The ClientHello (or part of it) arrived: no longer silent.
                SILENT_HANDSHAKE => self.conn.set(HANDSHAKE),
                _ => {}
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.conn.note_write(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.conn.note_write(&polled);
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.conn.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.conn.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
