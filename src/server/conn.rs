//! The listener's socket: a `TcpStream` that gives up on a peer that stops reading, and gives
//! the HTTP layer's own refusals (408 for a head that did not arrive in time, 431 for one too
//! large) the JSON error body every other error has.
//!
//! actix-http's dispatcher waits for a socket that does not drain without any deadline, and
//! while it waits it does not poll the response body: a stalled Server-Sent Events stream (or
//! any response a client stops reading) would hold its connection for as long as the peer's
//! TCP stack keeps it open. Here a write that makes no progress for the stall grace (the
//! WebSocket writer's close deadline) fails, and the dispatcher drops the connection.
//!
//! A WebSocket upgrade takes the bare `TcpStream` back ([`Conn::into_inner`]): its loop has its
//! own deadlines (src/session/ws.rs).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::protocol::ErrorCode;

pub struct Conn {
    io: TcpStream,
    stall: Duration,
    /// When the write that waits for the peer gives up; set only while one waits.
    stalled: Option<Pin<Box<Sleep>>>,
    /// A refusal rewritten with its JSON body: what remains to write, and the length of the
    /// dispatcher's original that it stands for.
    replacing: Option<(Vec<u8>, usize)>,
    /// Whether a refusal was rewritten already (it is the last answer on a connection).
    replaced: bool,
}

impl Conn {
    pub fn new(io: TcpStream, stall: Duration) -> Self {
        Self {
            io,
            stall,
            stalled: None,
            replacing: None,
            replaced: false,
        }
    }

    pub fn into_inner(self) -> TcpStream {
        self.io
    }
}

/// Turns the outcome of a write into an error once the peer has not taken a byte for `stall`.
fn watch<T>(
    stalled: &mut Option<Pin<Box<Sleep>>>,
    stall: Duration,
    cx: &mut Context<'_>,
    polled: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if polled.is_ready() {
        *stalled = None;
        return polled;
    }
    let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
    if timer.as_mut().poll(cx).is_ready() {
        tracing::debug!("http: gave up on a peer that does not read");
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer stopped reading",
        )));
    }
    Poll::Pending
}

/// The JSON version of a bodiless 408 or 431 that actix-http writes by itself, `None` for any
/// other bytes.
fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let (code, message) = if head.starts_with(b"HTTP/1.1 408 ") {
        (
            ErrorCode::BadRequest,
            "the request head did not arrive in time",
        )
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (ErrorCode::TooLarge, "the request head is too large")
    } else {
        return None;
    };
    let text = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?;
    let mut rest = Vec::new();
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("content-length") {
            if line.split(':').nth(1).map(str::trim) != Some("0") {
                return None;
            }
        } else if !name.eq_ignore_ascii_case("content-type") {
            rest.push(line);
        }
    }
    let body =
        serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string();
    let mut out = format!(
        "{status}\r\n{}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        rest.iter().map(|l| format!("{l}\r\n")).collect::<String>(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.replaced
            && this.replacing.is_none()
            && let Some(json) = with_json_body(buf)
        {
            this.replacing = Some((json, buf.len()));
        }
        if let Some((pending, original)) = this.replacing.as_mut() {
            while !pending.is_empty() {
                let polled = Pin::new(&mut this.io).poll_write(cx, pending);
                let written = ready!(watch(&mut this.stalled, this.stall, cx, polled))?;
                pending.drain(..written);
            }
            let original = *original;
            this.replacing = None;
            this.replaced = true;
            return Poll::Ready(Ok(original));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        watch(&mut this.stalled, this.stall, cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        watch(&mut this.stalled, this.stall, cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        watch(&mut this.stalled, this.stall, cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::with_json_body;

    #[test]
    fn bodiless_refusals_get_the_json_error() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(with_json_body(head).expect("rewritten")).expect("utf8");
        let (head, body) = out.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("date: x") && head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("\"too_large\""));
        // Answers with a body, and other statuses, pass unchanged.
        assert!(
            with_json_body(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 80\r\n\r\n").is_none()
        );
        assert!(with_json_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
