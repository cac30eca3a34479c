//! A thin reader of HTTP/1 framing in front of hyper, for what hyper does not let us see.
//!
//! hyper parses requests itself and offers no hook into two of its answers, so without this
//! layer:
//! - a request head it cannot parse (or one past `edge.max_header_bytes`) is answered `400`
//!   (`431`) with an empty body, not the contract's JSON error;
//! - a chunked body that *declares* more than any cap (a chunk size of `7FFFFFFFFFFFFFFF`)
//!   is read until the body deadline, because the declared size is hyper's alone.
//!
//! [`Framed`] wraps a connection's byte stream (inside TLS) and follows its HTTP/1 framing as
//! the bytes go by: heads (parsed with httparse, hyper's own parser, and hyper's rules for
//! `Content-Length` and `Transfer-Encoding`), fixed-length bodies, chunk-size lines and
//! trailers. It changes nothing it reads, with two exceptions:
//! - the **first** head of a connection is held until it is complete; if it cannot be parsed
//!   (or is too large), the JSON error is written here and hyper sees the connection end
//!   before any request. Later heads on a keep-alive connection pass at once, and a malformed
//!   one gets hyper's empty answer: by then a response may be on the wire, and nothing may be
//!   written between its bytes;
//! - the running total of a chunked body's declared sizes is published in the connection's
//!   [`BodyWatch`]; each request body is wrapped in a [`WatchedBody`], whose size hint carries
//!   that total, so [`crate::http::body::read`] refuses the body (`413`) the moment a chunk-size line
//!   declares more than its cap.
//!
//! Anything it does not follow with certainty (an HTTP/2 preface, an upgrade or `CONNECT`, a
//! framing error hyper will refuse anyway) turns it off for the rest of the connection: it
//! then passes bytes through untouched, exactly as before it existed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most headers a head may have (hyper's `max_headers` on our listeners).
pub const MAX_HEADERS: usize = 128;
/// Longest request target hyper takes (`414` beyond).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// Why a head over the listener's limit is refused.
const TOO_LARGE: &str = "the request head is larger than this listener takes";

/// What the framing says of the bodies of a connection: the sizes the chunks of its latest
/// message declared so far, and which message that is. Shared by the connection's [`Framed`]
/// reader and its requests' bodies. hyper reads ahead, so the reader may be at message `n + 1`
/// while message `n`'s body is still being consumed: each body knows its own number and looks
/// only at its own message's total.
#[derive(Debug, Default)]
pub struct BodyWatch {
    /// (message number, declared total) of the message the reader is in; numbers start at 1.
    declared: std::sync::Mutex<(u64, u64)>,
    /// Requests handed to the service so far, in the order hyper parsed their heads.
    handed: AtomicU64,
    /// The body waiting for more: woken when a chunk declares more.
    waker: AtomicWaker,
}

impl BodyWatch {
    /// Bytes the chunks of message `message` have declared so far (0 once the reader is past it).
    pub fn declared(&self, message: u64) -> u64 {
        let (at, total) = match self.declared.lock() {
            Ok(d) => *d,
            Err(p) => *p.into_inner(),
        };
        if at == message { total } else { 0 }
    }

    /// The number of the next request handed to the service: the order of HTTP/1 heads.
    pub fn next_message(&self) -> u64 {
        self.handed.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn set(&self, message: u64, total: u64) {
        match self.declared.lock() {
            Ok(mut d) => *d = (message, total),
            Err(p) => *p.into_inner() = (message, total),
        }
        self.waker.wake();
    }
}

/// A request body that reports the size its chunks declared ([`BodyWatch`]) as the lower
/// bound of its size hint, and yields an empty frame when that grows, so its reader can refuse
/// it at once instead of waiting for bytes that would be too many.
#[derive(Debug)]
pub struct WatchedBody<B> {
    inner: B,
    /// The connection's watch, and this body's message number on it.
    watch: Option<(Arc<BodyWatch>, u64)>,
    /// The declared total when the reader last heard of it.
    told: u64,
}

impl<B> WatchedBody<B> {
    /// `inner`, the body of the next request handed over on `watch`'s connection.
    pub fn new(inner: B, watch: Option<Arc<BodyWatch>>) -> WatchedBody<B> {
        WatchedBody {
            inner,
            watch: watch.map(|w| {
                let n = w.next_message();
                (w, n)
            }),
            told: 0,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for WatchedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let Some((watch, message)) = &this.watch else {
                    return Poll::Pending;
                };
                watch.waker.register(cx.waker());
                let declared = watch.declared(*message);
                if declared > this.told {
                    this.told = declared;
                    // Nothing arrived, but more was declared: let the reader look.
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let declared = self.watch.as_ref().map_or(0, |(w, n)| w.declared(*n));
        if declared > hint.lower() {
            match hint.upper() {
                Some(upper) if upper < declared => {}
                _ => hint.set_lower(declared),
            }
        }
        hint
    }
}

/// Where the reader stands in the connection's byte stream. The chunked states are hyper's
/// own (`proto::h1::decode`), so both end a message at the same byte; where hyper would fail,
/// the reader turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In a request head (`first`: the connection's first, held until complete).
    Head {
        first: bool,
    },
    /// In a body of this many bytes still to come.
    Length(u64),
    /// In a chunk-size line's digits: the size so far, whether a digit came.
    ChunkSize {
        size: u64,
        digits: bool,
    },
    /// After the digits: white space, an extension, then CR LF.
    ChunkLine {
        size: u64,
        ext: bool,
    },
    /// The LF ending a chunk-size line.
    ChunkLineLf {
        size: u64,
    },
    /// In a chunk's data, this many bytes still to come.
    ChunkData(u64),
    /// After a chunk's data: its CR, then its LF.
    ChunkDataCr,
    ChunkDataLf,
    /// After the last chunk, or a trailer line: CR (the end) or a trailer's first byte.
    EndCr,
    /// The LF ending the message.
    EndLf,
    /// In a trailer line, until its CR; then its LF.
    Trailer,
    TrailerLf,
    /// Not following (HTTP/2, `CONNECT`, a framing error hyper refuses): bytes pass as they are.
    Off,
}

/// The first head could not be taken: the answer written instead of hyper's.
#[derive(Debug)]
struct Refusal {
    answer: Vec<u8>,
    written: usize,
}

/// A connection's byte stream, its HTTP/1 framing followed (see the module's documentation).
#[derive(Debug)]
pub struct Framed<I> {
    io: I,
    at: At,
    /// What came until the first head was complete, held back from hyper.
    held: Vec<u8>,
    /// `held`, complete (or not HTTP/1), still to hand to hyper from this offset.
    release: Option<usize>,
    /// A later head's bytes so far, when it spans reads.
    head: Vec<u8>,
    refusal: Option<Refusal>,
    /// Heads read so far: the number of the message the reader is in.
    heads: u64,
    /// The current body's declared chunk sizes, summed.
    declared: u64,
    /// Largest head (`431` beyond).
    max_head: usize,
    watch: Arc<BodyWatch>,
}

/// Whether `bytes[from..]`, with the three bytes before it, ends a head: an empty line, as
/// httparse takes it (`\r\n\r\n` or bare LFs). Only new bytes are scanned, so a head trickled in
/// one byte at a time costs its length, not its square (hyper's `is_complete_fast` does this).
fn head_may_end(bytes: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    let window = &bytes[start..];
    window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n")
}

impl<I> Framed<I> {
    pub fn new(io: I, max_head: usize, watch: Arc<BodyWatch>) -> Framed<I> {
        Framed {
            io,
            at: At::Head { first: true },
            held: Vec::new(),
            release: None,
            head: Vec::new(),
            refusal: None,
            heads: 0,
            declared: 0,
            max_head,
            watch,
        }
    }

    /// Stops following: what is declared no longer counts against any body.
    fn off(&mut self) {
        self.at = At::Off;
        self.watch.set(0, 0);
    }

    /// Follows `bytes`, which hyper reads now (for the first head: which arrived).
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.at {
                At::Off => return,
                At::Head { first: true } => {
                    // The first head is held, with whatever came after it, until complete.
                    let start = self.held.len();
                    self.held.extend_from_slice(bytes);
                    if H2_PREFACE.starts_with(&self.held) && self.held.len() < H2_PREFACE.len() {
                        return; // perhaps HTTP/2 with prior knowledge: wait and see
                    }
                    if self.held.starts_with(H2_PREFACE) {
                        self.release = Some(0);
                        self.off();
                        return;
                    }
                    let read = if head_may_end(&self.held, start) {
                        parse_head(&self.held, self.max_head)
                    } else if self.held.len() >= self.max_head {
                        HeadRead::Refused(431, TOO_LARGE)
                    } else {
                        HeadRead::Partial
                    };
                    match read {
                        HeadRead::Partial => return,
                        HeadRead::Complete { len, body } => {
                            // Everything held goes to hyper, the body's first bytes too.
                            self.release = Some(0);
                            bytes = &bytes[(len - start).min(bytes.len())..];
                            self.start_body(body);
                        }
                        HeadRead::Refused(status, message) => {
                            self.refusal = Some(Refusal {
                                answer: error_answer(status, message),
                                written: 0,
                            });
                            self.held.clear();
                            self.off();
                            return;
                        }
                    }
                }
                At::Head { first: false } => {
                    // A head wholly within this read is parsed where it lies; one that spans
                    // reads is gathered in `head`.
                    let start = self.head.len();
                    let read = if start > 0 {
                        self.head.extend_from_slice(bytes);
                        if head_may_end(&self.head, start) {
                            parse_head(&self.head, self.max_head)
                        } else if self.head.len() >= self.max_head {
                            HeadRead::Refused(431, TOO_LARGE)
                        } else {
                            HeadRead::Partial
                        }
                    } else {
                        parse_head(bytes, self.max_head)
                    };
                    match read {
                        HeadRead::Partial => {
                            if start == 0 {
                                self.head.extend_from_slice(bytes);
                            }
                            return;
                        }
                        HeadRead::Complete { len, body } => {
                            bytes = &bytes[(len - start).min(bytes.len())..];
                            self.head.clear();
                            self.start_body(body);
                        }
                        HeadRead::Refused(..) => {
                            // hyper answers it, with an empty body: see the module's doc.
                            self.head.clear();
                            self.off();
                            return;
                        }
                    }
                }
                At::Length(n) => {
                    let take = (bytes.len() as u64).min(n);
                    bytes = &bytes[take as usize..];
                    self.at = if n == take {
                        At::Head { first: false }
                    } else {
                        At::Length(n - take)
                    };
                }
                At::ChunkData(n) => {
                    let take = (bytes.len() as u64).min(n);
                    bytes = &bytes[take as usize..];
                    self.at = if n == take {
                        At::ChunkDataCr
                    } else {
                        At::ChunkData(n - take)
                    };
                }
                at => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match self.chunk_byte(at, b) {
                        Some(next) => self.at = next,
                        None => self.off(),
                    }
                }
            }
        }
    }

    /// The state after byte `b` of a chunked body's framing; `None` where hyper fails.
    fn chunk_byte(&mut self, at: At, b: u8) -> Option<At> {
        Some(match at {
            At::ChunkSize { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = u64::from((b as char).to_digit(16)?);
                    // hyper refuses the overflow too.
                    let size = size.checked_mul(16)?.checked_add(digit)?;
                    At::ChunkSize { size, digits: true }
                }
                _ if !digits => return None,
                b'\t' | b' ' => At::ChunkLine { size, ext: false },
                b';' => At::ChunkLine { size, ext: true },
                b'\r' => At::ChunkLineLf { size },
                _ => return None,
            },
            At::ChunkLine { size, ext } => match (b, ext) {
                (b'\r', _) => At::ChunkLineLf { size },
                (b'\n', _) => return None,
                (b';', _) => At::ChunkLine { size, ext: true },
                (b'\t' | b' ', false) => At::ChunkLine { size, ext: false },
                (_, true) => At::ChunkLine { size, ext: true },
                (_, false) => return None,
            },
            At::ChunkLineLf { size } => {
                if b != b'\n' {
                    return None;
                }
                self.declared = self.declared.saturating_add(size);
                self.watch.set(self.heads, self.declared);
                if size == 0 {
                    At::EndCr
                } else {
                    At::ChunkData(size)
                }
            }
            At::ChunkDataCr if b == b'\r' => At::ChunkDataLf,
            At::ChunkDataLf if b == b'\n' => At::ChunkSize {
                size: 0,
                digits: false,
            },
            At::EndCr if b == b'\r' => At::EndLf,
            At::EndCr => At::Trailer,
            At::EndLf if b == b'\n' => At::Head { first: false },
            At::Trailer if b == b'\r' => At::TrailerLf,
            At::Trailer => At::Trailer,
            At::TrailerLf if b == b'\n' => At::EndCr,
            _ => return None,
        })
    }

    fn start_body(&mut self, body: BodyKind) {
        self.heads += 1;
        self.declared = 0;
        self.watch.set(self.heads, 0);
        self.at = match body {
            BodyKind::Empty => At::Head { first: false },
            BodyKind::Length(n) => At::Length(n),
            BodyKind::Chunked => At::ChunkSize {
                size: 0,
                digits: false,
            },
            BodyKind::Unknown => {
                self.off();
                At::Off
            }
        };
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Framed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // The first head could not be taken: answer it, then end the connection.
            if let Some(refusal) = &mut this.refusal {
                while refusal.written < refusal.answer.len() {
                    match Pin::new(&mut this.io).poll_write(cx, &refusal.answer[refusal.written..])
                    {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                        Poll::Ready(Ok(n)) => refusal.written += n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                return match Pin::new(&mut this.io).poll_flush(cx) {
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                    Poll::Pending => Poll::Pending,
                };
            }
            // The first head, complete: handed over (with what came after it) before anything
            // new is read.
            if let Some(from) = this.release {
                let rest = &this.held[from..];
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                if from + n >= this.held.len() {
                    this.release = None;
                    this.held = Vec::new();
                } else {
                    this.release = Some(from + n);
                }
                return Poll::Ready(Ok(()));
            }
            let holding = matches!(this.at, At::Head { first: true });
            if !holding {
                let before = buf.filled().len();
                let polled = Pin::new(&mut this.io).poll_read(cx, buf);
                if let Poll::Ready(Ok(())) = polled {
                    this.follow(&buf.filled()[before..]);
                }
                return polled;
            }
            // Holding the first head: read into our own buffer until it is complete.
            let mut chunk = [0u8; 4096];
            let mut own = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut own) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if own.filled().is_empty() => {
                    // The client closed before a whole head: hyper sees what came, then the end.
                    this.at = At::Off;
                    if !this.held.is_empty() {
                        this.release = Some(0);
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                // Complete (`release` set), refused, not HTTP/1, or partial: the loop acts on it.
                Poll::Ready(Ok(())) => this.follow(own.filled()),
            }
        }
    }
}

writes_through!(Framed);

/// A request's body, as its head frames it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
    /// An upgrade or `CONNECT`: what follows is not HTTP/1.
    Unknown,
}

/// What a head's bytes so far are.
#[derive(Debug, PartialEq, Eq)]
enum HeadRead {
    Partial,
    Complete {
        len: usize,
        body: BodyKind,
    },
    /// hyper refuses it with this status; the message says why.
    Refused(u16, &'static str),
}

/// Reads a request head by hyper's rules (RFC 9112 §6.3 for the body's length).
fn parse_head(bytes: &[u8], max_head: usize) -> HeadRead {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if bytes.len() >= max_head {
                HeadRead::Refused(431, TOO_LARGE)
            } else {
                HeadRead::Partial
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return HeadRead::Refused(431, "the request has more headers than this listener takes");
        }
        Err(_) => {
            return HeadRead::Refused(400, "the request line or a header is malformed (RFC 9112)");
        }
    };
    if len > max_head {
        return HeadRead::Refused(431, TOO_LARGE);
    }
    if req.path.is_some_and(|p| p.len() > MAX_URI_LEN) {
        return HeadRead::Refused(414, "the request target is too long");
    }
    if req.method == Some("CONNECT") {
        return HeadRead::Complete {
            len,
            body: BodyKind::Unknown,
        };
    }
    let http_11 = req.version == Some(1);
    let mut chunked: Option<bool> = None;
    let mut length: Option<u64> = None;
    // An `Upgrade` header changes nothing here: the gateway never answers 101, and hyper goes
    // on with HTTP/1 after any other answer.
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_11 {
                return HeadRead::Refused(
                    400,
                    "an HTTP/1.0 request cannot carry Transfer-Encoding",
                );
            }
            chunked = Some(last_coding_is_chunked(h.value));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match content_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => {
                    if chunked.is_none() {
                        return HeadRead::Refused(400, "the request's Content-Length is invalid");
                    }
                }
            }
        }
    }
    let body = match (chunked, length) {
        (Some(true), _) => BodyKind::Chunked,
        (Some(false), _) => {
            return HeadRead::Refused(400, "a request's Transfer-Encoding must end with chunked");
        }
        (None, Some(0)) | (None, None) => BodyKind::Empty,
        (None, Some(n)) => BodyKind::Length(n),
    };
    HeadRead::Complete { len, body }
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .map(|c| c.trim_ascii())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value: digits (leading zeros allowed), or equal comma-separated digits.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// The contract's JSON error as a whole HTTP/1.1 response that closes the connection.
fn error_answer(status: u16, message: &str) -> Vec<u8> {
    let (reason, code) = match status {
        431 => ("Request Header Fields Too Large", "headers_too_large"),
        414 => ("URI Too Long", "uri_too_long"),
        _ => ("Bad Request", "malformed_request"),
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed() -> Framed<tokio::io::Empty> {
        Framed::new(
            tokio::io::empty(),
            16 * 1024,
            Arc::new(BodyWatch::default()),
        )
    }

    /// Feeds `parts` as separate reads past the first head.
    fn follow_all(f: &mut Framed<tokio::io::Empty>, parts: &[&[u8]]) {
        for p in parts {
            f.follow(p);
        }
    }

    #[test]
    fn heads_are_read_by_hypers_rules() {
        let m = 16 * 1024;
        assert_eq!(
            parse_head(
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                m
            ),
            HeadRead::Complete {
                len: 48,
                body: BodyKind::Length(5)
            }
        );
        assert!(matches!(
            parse_head(b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n", m),
            HeadRead::Complete { body: BodyKind::Chunked, .. }
        ));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", m),
            HeadRead::Partial
        );
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", m),
            HeadRead::Refused(400, _)
        ));
        assert!(matches!(
            parse_head(b"G\x01T / HTTP/1.1\r\n\r\n", m),
            HeadRead::Refused(400, _)
        ));
        assert!(matches!(
            parse_head(
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                m
            ),
            HeadRead::Refused(400, _)
        ));
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", m),
            HeadRead::Refused(400, _)
        ));
        assert!(matches!(
            parse_head(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", m),
            HeadRead::Refused(400, _)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert!(matches!(
            parse_head(big.as_bytes(), 64),
            HeadRead::Refused(431, _)
        ));
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(many.as_bytes(), m),
            HeadRead::Refused(431, _)
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", m),
            HeadRead::Complete {
                body: BodyKind::Empty,
                ..
            }
        ));
    }

    #[test]
    fn chunk_sizes_are_summed_as_they_are_declared() {
        let mut f = framed();
        f.at = At::Head { first: false };
        follow_all(
            &mut f,
            &[
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n1",
                b"0;ext=1\r\n",
            ],
        );
        assert_eq!(f.watch.declared(f.heads), 5 + 16);
        follow_all(&mut f, &[&[b'x'; 16], b"\r\n0\r\nX-T: 1\r\n\r\n"]);
        assert_eq!(f.at, At::Head { first: false }, "the message ended");
        // The next message starts from nothing.
        follow_all(
            &mut f,
            &[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7FFFFFFFFFFFFFFF\r\nab"],
        );
        assert_eq!(f.watch.declared(f.heads), 0x7FFF_FFFF_FFFF_FFFF);
        assert_eq!(f.at, At::ChunkData(0x7FFF_FFFF_FFFF_FFFF - 2));
    }

    #[test]
    fn fixed_bodies_and_pipelined_heads_are_followed() {
        let mut f = framed();
        f.at = At::Head { first: false };
        follow_all(
            &mut f,
            &[b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n"],
        );
        assert_eq!(f.watch.declared(f.heads), 32);
    }

    /// A byte stream that hands out its bytes in the given read sizes.
    struct Reads {
        bytes: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
    }

    impl AsyncRead for Reads {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let size = if self.sizes.is_empty() {
                7
            } else {
                self.sizes.remove(0)
            };
            let n = size.min(self.bytes.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.bytes[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Reads {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A small deterministic generator, so a failure names its seed.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Random pipelined requests (no body, a fixed body, chunked bodies in random chunks with
    /// extensions and trailers), read in random sizes: hyper must read exactly the bytes sent,
    /// and the declared total of each chunked body must be what its chunks declared.
    #[tokio::test]
    async fn random_streams_pass_byte_for_byte() {
        use tokio::io::AsyncReadExt;
        for seed0 in 1..300u64 {
            let mut seed = seed0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut stream = Vec::new();
            let mut last_declared = 0;
            for _ in 0..(1 + next(&mut seed) % 5) {
                match next(&mut seed) % 3 {
                    0 => {
                        stream.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
                        last_declared = 0;
                    }
                    1 => {
                        last_declared = 0;
                        let n = (next(&mut seed) % 300) as usize;
                        stream.extend_from_slice(
                            format!("POST /v1/events/a HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                        );
                        stream.extend((0..n).map(|i| (i % 256) as u8));
                    }
                    _ => {
                        stream.extend_from_slice(b"POST /v1/events/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
                        let mut declared = 0;
                        for _ in 0..(next(&mut seed) % 4) {
                            let n = 1 + (next(&mut seed) % 200) as usize;
                            declared += n as u64;
                            let ext = if next(&mut seed) % 2 == 0 { ";a=1" } else { "" };
                            stream.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
                            stream.extend((0..n).map(|i| (i % 256) as u8));
                            stream.extend_from_slice(b"\r\n");
                        }
                        let trailer = if next(&mut seed) % 2 == 0 {
                            "X-T: 1\r\n"
                        } else {
                            ""
                        };
                        stream.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
                        last_declared = declared;
                    }
                }
            }
            let sizes: Vec<usize> = (0..200)
                .map(|_| 1 + (next(&mut seed) % 64) as usize)
                .collect();
            let watch = Arc::new(BodyWatch::default());
            let mut framed = Framed::new(
                Reads {
                    bytes: stream.clone(),
                    at: 0,
                    sizes,
                },
                16 * 1024,
                watch.clone(),
            );
            let mut out = Vec::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                framed.read_to_end(&mut out),
            )
            .await;
            assert!(matches!(read, Ok(Ok(_))), "seed {seed0}: {read:?}");
            assert_eq!(
                out, stream,
                "seed {seed0}: hyper reads exactly what was sent"
            );
            assert!(framed.refusal.is_none(), "seed {seed0}");
            assert_ne!(framed.at, At::Off, "seed {seed0}: followed to the end");
            assert_eq!(
                watch.declared(framed.heads),
                last_declared,
                "seed {seed0}: the last body's chunks"
            );
        }
    }

    #[test]
    fn a_body_sees_only_its_own_messages_declaration() {
        let mut f = framed();
        f.at = At::Head { first: false };
        f.follow(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        // hyper read ahead: the next message's head and a huge chunk are in before the
        // first body was consumed.
        f.follow(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n");
        assert_eq!(f.watch.declared(1), 0, "message 1 is not message 2");
        assert_eq!(f.watch.declared(2), 0xFFFF_FFFF);
        // Trailers end only at CR LF, as hyper reads them.
        let mut g = framed();
        g.at = At::Head { first: false };
        g.follow(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\nY: b\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((g.at, g.heads), (At::Head { first: false }, 2));
    }

    #[test]
    fn a_head_trickled_in_is_parsed_once_it_can_end() {
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 20));
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27));
        assert!(head_may_end(b"GET / HTTP/1.1\nHost: x\n\n", 24));
        let mut f = framed();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for b in head.iter() {
            f.follow(std::slice::from_ref(b));
        }
        assert_eq!(f.release, Some(0));
        // HTTP/2's preface, split anywhere, is still HTTP/2.
        for cut in 1..14 {
            let mut h = framed();
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            h.follow(&preface[..cut]);
            assert!(h.refusal.is_none() && h.release.is_none(), "cut {cut}");
            h.follow(&preface[cut..]);
            assert!(h.refusal.is_none() && h.release == Some(0), "cut {cut}");
        }
    }

    #[test]
    fn the_first_head_is_held_whole_with_what_follows_it() {
        let mut f = framed();
        let stream = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nFFFFFFFFFF\r\n";
        f.follow(&stream[..10]);
        assert_eq!(f.release, None, "a partial first head is held");
        f.follow(&stream[10..]);
        assert_eq!(f.release, Some(0));
        assert_eq!(f.held, stream.to_vec(), "every byte held, once, in order");
        assert_eq!(f.watch.declared(f.heads), 4 + 0xFF_FFFF_FFFF);
        let mut g = framed();
        g.follow(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n");
        assert!(
            g.refusal.is_some() && g.held.is_empty(),
            "answered here, nothing for hyper"
        );
        let mut h = framed();
        h.follow(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(
            h.refusal.is_none() && h.release == Some(0) && h.at == At::Off,
            "HTTP/2 passes"
        );
    }

    #[test]
    fn what_it_cannot_follow_turns_it_off() {
        for stream in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            // A bare LF where hyper wants CR LF: hyper fails, so does the reader.
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\r",
        ] {
            let mut f = framed();
            f.at = At::Head { first: false };
            f.follow(stream);
            assert_eq!(f.at, At::Off, "{}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn the_answer_is_the_contracts_json() {
        let a = String::from_utf8(error_answer(431, "too big")).unwrap_or_default();
        assert!(
            a.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{a}"
        );
        let body = a.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "headers_too_large");
        assert!(a.contains(&format!("content-length: {}", body.len())));
    }
}
