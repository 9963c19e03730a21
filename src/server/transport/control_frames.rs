//! HTTP/2 control frames counted against the work they come with. PING, SETTINGS, PRIORITY,
//! WINDOW_UPDATE and RST_STREAM cost the server a little each (h2 answers pings and settings on
//! its own), and a client may send them at will: 300 MB of PINGs in 4 s went through, connection
//! still open. Real clients send them in proportion to their calls (a window update per reply
//! read, a BDP ping per burst, a keepalive ping a second at most), so a connection whose control
//! frames outnumber its calls' frames by far is flooding, and is closed with GOAWAY
//! ENHANCE_YOUR_CALM, as grpc-go answers a ping flood with `too_many_pings` and Envoy caps
//! what it will answer.
//!
//! Counted from the bytes as they pass between the socket and h2 (after TLS): each frame's
//! 9-byte header says its type, so nothing is decoded twice.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::server::context::WindowedCount;

/// Control frames a connection may send in a window besides [`PER_CALL_FRAME`] for each frame
/// of its calls: ten times what a busy grpc-js client with a 1 s keepalive sends.
const FREE_CONTROL_FRAMES: u32 = 1000;

/// Control frames allowed per HEADERS or DATA frame of a call, in either direction: a window
/// update for the stream and one for the connection per reply frame read, a BDP ping, and room
/// to spare.
const PER_CALL_FRAME: u32 = 4;

/// The window frames are counted over.
const WINDOW: Duration = Duration::from_secs(10);

/// The limit, in words, for log lines.
pub(in crate::server) const CONTROL_FLOOD_DESCRIPTION: &str = "sent more than 1000 control frames in 10 s \
     (PING, SETTINGS, PRIORITY, WINDOW_UPDATE, RST_STREAM) beyond 4 per frame of its calls";

/// The HTTP/2 frame types counted.
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
const ACK: u8 = 0x1;

/// One connection's count, shared by its two directions and its loop.
#[derive(Debug, Default)]
pub(in crate::server) struct ControlFrames {
    /// Control frames in the current window: its lock is taken only for control frames.
    control: WindowedCount,
    /// Frames of calls in the current window: counted on every read and write, without a lock.
    calls: AtomicU32,
    flooded: AtomicBool,
    /// Woken when the connection floods.
    spent: Notify,
}

impl ControlFrames {
    /// Completes once the connection has flooded.
    pub(in crate::server) async fn exhausted(&self) {
        self.spent.notified().await;
    }

    fn record(&self, control: u32, calls: u32) {
        if calls > 0 {
            self.calls.fetch_add(calls, Ordering::Relaxed);
        }
        if control == 0 || self.flooded.load(Ordering::Relaxed) {
            return;
        }
        let (sent, restarted) = self.control.add(control, WINDOW);
        if restarted {
            self.calls.store(0, Ordering::Relaxed);
        }
        let calls = self.calls.load(Ordering::Relaxed);
        if sent > FREE_CONTROL_FRAMES.saturating_add(calls.saturating_mul(PER_CALL_FRAME)) {
            self.flooded.store(true, Ordering::Relaxed);
            self.spent.notify_one();
        }
    }
}

/// Follows the frames in one direction of an HTTP/2 byte stream, as it passes in pieces.
#[derive(Debug)]
struct FrameScanner {
    /// Bytes to pass over before the next frame header: the preface, or a frame's payload.
    skip: usize,
    header: [u8; 9],
    have: usize,
}

impl FrameScanner {
    fn new(skip: usize) -> Self {
        Self {
            skip,
            header: [0; 9],
            have: 0,
        }
    }

    /// Counts the frames that begin in `bytes`: (control frames, call frames).
    fn feed(&mut self, mut bytes: &[u8]) -> (u32, u32) {
        let (mut control, mut calls) = (0, 0);
        loop {
            if self.skip >= bytes.len() {
                self.skip -= bytes.len();
                return (control, calls);
            }
            bytes = &bytes[self.skip..];
            self.skip = 0;
            // Usually a frame's header is whole in the bytes read: read it where it is.
            let header = if self.have == 0 && bytes.len() >= 9 {
                let header: [u8; 9] = bytes[..9].try_into().expect("nine bytes");
                bytes = &bytes[9..];
                header
            } else {
                let taken = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + taken].copy_from_slice(&bytes[..taken]);
                self.have += taken;
                bytes = &bytes[taken..];
                if self.have < 9 {
                    return (control, calls);
                }
                self.have = 0;
                self.header
            };
            let [l0, l1, l2, kind, flags, ..] = header;
            let length = u32::from_be_bytes([0, l0, l1, l2]) as usize;
            self.skip = length;
            match kind {
                HEADERS => calls += 1,
                DATA if length > 0 => calls += 1,
                PING | SETTINGS if flags & ACK == 0 => control += 1,
                PRIORITY | RST_STREAM | WINDOW_UPDATE => control += 1,
                _ => {}
            }
        }
    }
}

/// An HTTP/2 server connection's transport, its frames counted on the way through.
pub(in crate::server) struct Watched<I> {
    inner: I,
    frames: Arc<ControlFrames>,
    incoming: FrameScanner,
    outgoing: FrameScanner,
}

impl<I> Watched<I> {
    pub(in crate::server) fn new(inner: I, frames: Arc<ControlFrames>) -> Self {
        Self {
            inner,
            frames,
            // The client's connection preface comes before its first frame.
            incoming: FrameScanner::new(24),
            outgoing: FrameScanner::new(0),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let (control, calls) = self.incoming.feed(&buf.filled()[before..]);
            self.frames.record(control, calls);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            let (_, calls) = self.outgoing.feed(&buf[..written]);
            self.frames.record(0, calls);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            let mut left = written;
            let mut calls = 0;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let taken = left.min(buf.len());
                calls += self.outgoing.feed(&buf[..taken]).1;
                left -= taken;
            }
            self.frames.record(0, calls);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = (payload.len() as u32).to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 1];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn frames_are_told_apart_wherever_the_bytes_are_cut() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(SETTINGS, 0, &[0; 6]));
        stream.extend(frame(SETTINGS, ACK, &[]));
        stream.extend(frame(HEADERS, 4, &[1, 2, 3]));
        stream.extend(frame(DATA, 1, &[0; 20]));
        stream.extend(frame(PING, 0, &[0; 8]));
        stream.extend(frame(PING, ACK, &[0; 8]));
        stream.extend(frame(WINDOW_UPDATE, 0, &[0, 0, 1, 0]));
        for piece in 1..stream.len() {
            let mut scanner = FrameScanner::new(24);
            let (control, calls) = stream.chunks(piece).fold((0, 0), |(c, k), chunk| {
                let (control, calls) = scanner.feed(chunk);
                (c + control, k + calls)
            });
            assert_eq!((control, calls), (3, 2), "in pieces of {piece}");
        }
    }

    #[test]
    fn control_frames_beyond_the_calls_share_flood() {
        let frames = ControlFrames::default();
        frames.record(0, 100);
        frames.record(FREE_CONTROL_FRAMES + 100 * PER_CALL_FRAME, 0);
        assert!(!frames.flooded.load(Ordering::Relaxed));
        frames.record(1, 0);
        assert!(frames.flooded.load(Ordering::Relaxed));
    }
}
