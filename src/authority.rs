//! The Unix socket's `:authority` fix.
//!
//! gRPC clients that dial a Unix socket have no host name to put in the
//! HTTP/2 `:authority` pseudo-header, and several send what they have: the
//! socket path (`/run/authzd/authzd.sock`: grpcurl `-unix`, grpc-java's
//! domain sockets), or its percent-encoding (`%2Frun%2Fauthzd%2Fauthzd.sock`:
//! Python grpcio and the other gRPC core languages since 1.57). Neither is a
//! valid URI authority, and the HTTP/2 server under tonic answers every such
//! request with `RST_STREAM(PROTOCOL_ERROR)` before any service sees it; it
//! has no option to relax that.
//!
//! So each connection accepted on the Unix socket is wrapped in
//! [`AuthorityFix`], which reads the client's HTTP/2 frames before the server
//! does. Every frame but the request header blocks passes through untouched
//! (DATA is streamed, not buffered). A header block (HEADERS and its
//! CONTINUATION frames) is decoded with the connection's own HPACK decoder —
//! every block, so that the decoder's dynamic table follows the client's
//! encoder — and, when its `:authority` is not a valid URI authority, replaced
//! by the same header list with `:authority: localhost`. From that block on,
//! every header block of the connection is re-encoded (whether it needs the
//! rewrite or not), as literals that never touch the server's HPACK dynamic
//! table: the server's decoder then never needs entries the client added to
//! its own table after the switch.
//!
//! The choice is made once per connection, on its first header block: a
//! gRPC client sends one authority for every request of a channel. When the
//! first block's authority is valid (authzd's own CLI and `authzd bench`,
//! grpc-js and Go send `localhost`), the block and everything after it pass
//! through untouched, read straight into the server's buffer: such a client
//! pays nothing after its first request. (A connection that sent a valid
//! authority first and an invalid one later would get the server's
//! `PROTOCOL_ERROR` for the later one, as without the fix.)
//!
//! What the frame layer must keep: the client preface (anything that is not
//! HTTP/2 — gRPC-Web over HTTP/1.1 — passes through untouched), a HEADERS
//! frame's padding (dropped: re-encoded frames have none) and priority fields
//! (kept), END_STREAM, CONTINUATION frames, header blocks split across reads,
//! and frames no larger than the smallest maximum frame size (16,384 bytes)
//! when it emits its own. The client's dynamic table is at most the 4,096
//! bytes HTTP/2 starts with, as the server announces no other
//! `SETTINGS_HEADER_TABLE_SIZE`; the client's own `SETTINGS_HEADER_TABLE_SIZE`
//! bounds the server's encoder, whose blocks travel the other way and are not
//! touched. A header block larger than [`MAX_HEADER_BLOCK`] (compressed or
//! decoded), a block that does not decode, or a frame between a HEADERS frame
//! and its CONTINUATION frames ends the connection with an I/O error, as the
//! server itself would end it.
//!
//! `AUTHZD_UNIX_AUTHORITY_FIX=off` serves the Unix socket without the wrapper
//! (to measure what it costs).

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// Frame types.
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// Frame flags.
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer accepts (`SETTINGS_MAX_FRAME_SIZE` at its minimum).
const EMIT_FRAME: usize = 16_384;
/// The HPACK dynamic table of the client's encoder (HTTP/2's initial `SETTINGS_HEADER_TABLE_SIZE`).
const CLIENT_TABLE: usize = 4_096;
/// The largest header block accepted, compressed and decoded (names, values
/// and 32 bytes a field, as HTTP/2 counts a header list): far above what gRPC
/// clients send (their own limits of metadata are 8 to 16 KiB), and what one
/// connection may make the shim hold.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Buffers up to this size are kept from one header block to the next (a
/// rare huge block's are freed).
const KEEP_BUFFER: usize = 64 * 1024;
/// How much is read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// What replaces an invalid authority.
const LOCALHOST: &[u8] = b"localhost";

/// Whether the `:authority` fix is on for the Unix socket
/// (`AUTHZD_UNIX_AUTHORITY_FIX`, default on; `off`, `0` or `false`: off).
pub fn enabled_by_env() -> bool {
    !matches!(
        std::env::var("AUTHZD_UNIX_AUTHORITY_FIX").ok().as_deref().map(str::trim),
        Some("off" | "0" | "false" | "no")
    )
}

/// Whether `v` is an authority the HTTP/2 server accepts.
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// Where the reader is in the client's byte stream.
#[derive(Debug)]
enum State {
    /// Matching the client preface; this many bytes of it seen.
    Preface(usize),
    /// Not HTTP/2 (or given up): everything passes through.
    Passthrough,
    /// Waiting for (the rest of) a frame header.
    FrameHeader,
    /// Copying this many more payload bytes of a frame that passes through.
    Forward(usize),
    /// Collecting a HEADERS or CONTINUATION frame of this payload length.
    Block {
        /// The frame's payload length.
        len: usize,
        /// Its type.
        kind: u8,
        /// Its flags.
        flags: u8,
    },
}

/// The header block being collected (HEADERS, then CONTINUATION frames).
#[derive(Debug, Default)]
struct PendingBlock {
    /// Stream id.
    stream: u32,
    /// The HEADERS frame's flags (END_STREAM, PRIORITY).
    flags: u8,
    /// The HEADERS frame's priority fields, when its PRIORITY flag is set.
    priority: Option<[u8; 5]>,
    /// The HPACK fragments, concatenated.
    fragments: Vec<u8>,
    /// The frames as received, to pass through when nothing changes.
    raw: Vec<u8>,
}

/// The client→server half of the fix: bytes in, bytes for the server out.
pub struct Rewriter {
    state: State,
    /// Received bytes not yet consumed (at most a frame header or a header frame).
    input: Vec<u8>,
    /// Bytes ready for the server, from `out_pos` on.
    output: Vec<u8>,
    out_pos: usize,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<PendingBlock>,
    /// The last block finished, kept for its buffers.
    spare: PendingBlock,
    decoder: loona_hpack::Decoder<'static>,
    /// Whether header blocks are re-encoded (after the first rewrite).
    reencode: bool,
    /// The first header block had a valid authority: everything after it
    /// passes through.
    settled: bool,
    /// Header blocks whose authority was rewritten.
    rewritten: u64,
    /// Scratch space of [`Rewriter::finish_block`], kept between blocks.
    flat: Vec<u8>,
    spans: Vec<(usize, usize, usize)>,
    encoded: Vec<u8>,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("state", &self.state)
            .field("reencode", &self.reencode)
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter::new()
    }
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unix socket HTTP/2 client: {}", message.into()))
}

/// Appends HPACK integer `v` with an `n`-bit prefix whose high bits are `first`.
fn put_integer(out: &mut Vec<u8>, first: u8, n: u32, v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Appends a raw (not Huffman-coded) HPACK string.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A header field as "literal without indexing, new name" (RFC 7541 §6.2.2):
/// it neither reads nor changes the receiver's dynamic table.
fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    put_string(out, name);
    put_string(out, value);
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

impl Rewriter {
    /// A rewriter at the start of a connection.
    pub fn new() -> Rewriter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(CLIENT_TABLE);
        Rewriter {
            state: State::Preface(0),
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            block: None,
            spare: PendingBlock::default(),
            decoder,
            reencode: false,
            settled: false,
            rewritten: 0,
            flat: Vec::new(),
            spans: Vec::new(),
            encoded: Vec::new(),
        }
    }

    /// How many header blocks had their authority rewritten.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Whether everything passes through from now on (not HTTP/2).
    pub fn is_passthrough(&self) -> bool {
        matches!(self.state, State::Passthrough)
    }

    /// Bytes ready for the server (consume them with [`Rewriter::consume_output`]).
    pub fn output(&self) -> &[u8] {
        self.output.get(self.out_pos..).unwrap_or_default()
    }

    /// Removes the first `n` ready bytes.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.output.len());
        if self.out_pos == self.output.len() {
            self.output.clear();
            self.out_pos = 0;
        }
    }

    /// Every ready byte.
    pub fn take_output(&mut self) -> Vec<u8> {
        let rest = self.output.split_off(self.out_pos);
        self.output.clear();
        self.out_pos = 0;
        rest
    }

    /// Feeds bytes received from the client.
    pub fn feed(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            match self.state {
                State::Passthrough => {
                    self.output.extend_from_slice(data);
                    return Ok(());
                }
                State::Preface(seen) => {
                    let want = &PREFACE[seen..];
                    let n = want.len().min(data.len());
                    if data[..n] != want[..n] {
                        // Not HTTP/2 with prior knowledge (gRPC-Web over HTTP/1.1).
                        self.output.extend_from_slice(&PREFACE[..seen]);
                        self.state = State::Passthrough;
                        continue;
                    }
                    self.output.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.state = if seen + n == PREFACE.len() { State::FrameHeader } else { State::Preface(seen + n) };
                }
                State::Forward(left) => {
                    let n = left.min(data.len());
                    self.output.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.state = if n == left { State::FrameHeader } else { State::Forward(left - n) };
                }
                State::FrameHeader => {
                    let n = (FRAME_HEADER - self.input.len()).min(data.len());
                    self.input.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.input.len() < FRAME_HEADER {
                        continue;
                    }
                    let h = &self.input;
                    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let (kind, flags) = (h[3], h[4]);
                    if kind == HEADERS || kind == CONTINUATION {
                        let held = self.block.as_ref().map_or(0, |b| b.fragments.len());
                        if held + len > MAX_HEADER_BLOCK {
                            return Err(invalid(format!("a header block over {MAX_HEADER_BLOCK} bytes")));
                        }
                        self.state = State::Block { len, kind, flags };
                    } else {
                        if self.block.is_some() {
                            return Err(invalid("a frame other than CONTINUATION inside a header block"));
                        }
                        self.output.extend_from_slice(&self.input);
                        self.input.clear();
                        self.state = if len == 0 { State::FrameHeader } else { State::Forward(len) };
                    }
                }
                State::Block { len, kind, flags } => {
                    let n = (FRAME_HEADER + len - self.input.len()).min(data.len());
                    self.input.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.input.len() < FRAME_HEADER + len {
                        continue;
                    }
                    let mut frame = std::mem::take(&mut self.input);
                    self.state = State::FrameHeader;
                    self.header_frame(kind, flags, &frame)?;
                    if self.settled {
                        // A valid authority first: the rest of the connection passes through.
                        self.state = State::Passthrough;
                    }
                    if frame.capacity() <= KEEP_BUFFER {
                        frame.clear();
                        self.input = frame; // its capacity, for the next frame
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION frame (its header and payload).
    fn header_frame(&mut self, kind: u8, flags: u8, frame: &[u8]) -> std::io::Result<()> {
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        let mut block = match (kind, self.block.take()) {
            (HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let Some((&n, rest)) = p.split_first() else {
                        return Err(invalid("a padded HEADERS frame without its pad length"));
                    };
                    pad = usize::from(n);
                    p = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let Some(fields) = p.get(..5) else {
                        return Err(invalid("a HEADERS frame too short for its priority"));
                    };
                    let mut f = [0u8; 5];
                    f.copy_from_slice(fields);
                    priority = Some(f);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return Err(invalid("a HEADERS frame's padding is longer than the frame"));
                }
                let mut b = std::mem::take(&mut self.spare);
                b.stream = stream;
                b.flags = flags;
                b.priority = priority;
                b.fragments.clear();
                b.fragments.extend_from_slice(&p[..p.len() - pad]);
                b.raw.clear();
                b.raw.extend_from_slice(frame);
                b
            }
            (CONTINUATION, Some(mut b)) if b.stream == stream => {
                if b.fragments.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(invalid(format!("a header block over {MAX_HEADER_BLOCK} bytes")));
                }
                b.fragments.extend_from_slice(payload);
                b.raw.extend_from_slice(frame);
                b
            }
            (HEADERS, Some(_)) => return Err(invalid("a HEADERS frame inside another header block")),
            (_, _) => return Err(invalid("a CONTINUATION frame outside a header block")),
        };
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        let done = self.finish_block(&mut block);
        if block.raw.capacity() <= KEEP_BUFFER && block.fragments.capacity() <= KEEP_BUFFER {
            self.spare = block; // its buffers, for the next block
        }
        done
    }

    /// Decodes a whole header block and passes it on, rewritten if need be.
    fn finish_block(&mut self, block: &mut PendingBlock) -> std::io::Result<()> {
        // The decoded fields, flat: `flat` holds every name and value; `spans` each field's (name start, value start, value end).
        // Both are reused from block to block.
        let mut flat = std::mem::take(&mut self.flat);
        let mut spans = std::mem::take(&mut self.spans);
        flat.clear();
        spans.clear();
        let mut size = 0usize;
        let mut bad_authority = false;
        self.decoder
            .decode_with_cb(&block.fragments, |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_HEADER_BLOCK {
                    return;
                }
                if &*name == b":authority" && !valid_authority(&value) {
                    bad_authority = true;
                }
                let start = flat.len();
                flat.extend_from_slice(&name);
                let mid = flat.len();
                flat.extend_from_slice(&value);
                spans.push((start, mid, flat.len()));
            })
            .map_err(|e| invalid(format!("a header block that does not decode: {e}")))?;
        if size > MAX_HEADER_BLOCK {
            return Err(invalid(format!("a header list over {MAX_HEADER_BLOCK} bytes")));
        }
        if self.reencode || bad_authority {
            if bad_authority {
                self.rewritten += 1;
            }
            self.reencode = true;
            let mut encoded = std::mem::take(&mut self.encoded);
            encoded.clear();
            for &(start, mid, end) in &spans {
                let (name, value) = (&flat[start..mid], &flat[mid..end]);
                let value = if name == b":authority" && !valid_authority(value) { LOCALHOST } else { value };
                put_literal(&mut encoded, name, value);
            }
            self.emit_block(block, &encoded);
            self.encoded = encoded;
        } else {
            self.output.append(&mut block.raw);
            self.settled = true;
        }
        self.flat = flat;
        self.spans = spans;
        Ok(())
    }

    /// Writes `encoded` as a HEADERS frame and as many CONTINUATION frames as it needs.
    fn emit_block(&mut self, block: &PendingBlock, encoded: &[u8]) {
        let priority: &[u8] = block.priority.as_ref().map_or(&[], |p| p.as_slice());
        let first = encoded.len().min(EMIT_FRAME - priority.len());
        let (head, mut rest) = encoded.split_at(first);
        let mut flags = block.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame_header(&mut self.output, priority.len() + head.len(), HEADERS, flags, block.stream);
        self.output.extend_from_slice(priority);
        self.output.extend_from_slice(head);
        while !rest.is_empty() {
            let n = rest.len().min(EMIT_FRAME);
            let (part, tail) = rest.split_at(n);
            rest = tail;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            frame_header(&mut self.output, part.len(), CONTINUATION, flags, block.stream);
            self.output.extend_from_slice(part);
        }
    }
}

/// A connection accepted on the Unix socket, its client's frames passing
/// through a [`Rewriter`] (see the module documentation).
#[derive(Debug)]
pub struct AuthorityFix<IO> {
    io: IO,
    rewriter: Rewriter,
    /// Bytes of `rewriter`'s output already handed to the reader.
    buf: Vec<u8>,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps an accepted connection.
    pub fn new(io: IO) -> Self {
        AuthorityFix { io, rewriter: Rewriter::new(), buf: vec![0; READ_CHUNK], eof: false }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            let ready = this.rewriter.output();
            if !ready.is_empty() {
                let n = ready.len().min(out.remaining());
                out.put_slice(&ready[..n]);
                this.rewriter.consume_output(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.is_passthrough() {
                // Not HTTP/2: straight into the caller's buffer.
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            let mut chunk = ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.io).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = chunk.filled().len();
                    if filled == 0 {
                        this.eof = true;
                        continue;
                    }
                    let AuthorityFix { rewriter, buf, .. } = this;
                    rewriter.feed(&buf[..filled])?;
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;
    /// A frame: type, flags, stream id, payload.
    type Frame = (u8, u8, u32, Vec<u8>);

    fn request(authority: &str, path: &str) -> Fields {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("authorization", "Bearer secret"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        frame_header(&mut f, payload.len(), kind, flags, stream);
        f.extend_from_slice(payload);
        f
    }

    /// A client's encoding (with its dynamic table: later requests index earlier fields).
    fn encode(encoder: &mut loona_hpack::Encoder<'_>, fields: &Fields) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    /// Splits `bytes` into frames: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[FRAME_HEADER..FRAME_HEADER + len].to_vec()));
            bytes = &bytes[FRAME_HEADER + len..];
        }
        out
    }

    /// What the server decodes from the shim's output: per header block, its
    /// HEADERS flags and fields; and the other frames as they came.
    fn server_view(output: &[u8]) -> (Vec<(u8, Fields)>, Vec<Frame>) {
        assert!(output.starts_with(PREFACE), "the preface passes through");
        let mut decoder = loona_hpack::Decoder::new();
        let (mut blocks, mut others) = (Vec::new(), Vec::new());
        let mut pending: Option<(u8, Vec<u8>)> = None;
        for (kind, flags, stream, payload) in frames(&output[PREFACE.len()..]) {
            // (`flags` of a block: its HEADERS frame's.)
            match kind {
                HEADERS => {
                    assert!(pending.is_none());
                    let mut p = payload.as_slice();
                    if flags & PADDED != 0 {
                        let pad = usize::from(p[0]);
                        p = &p[1..p.len() - pad];
                    }
                    if flags & PRIORITY != 0 {
                        p = &p[5..];
                    }
                    assert!(payload.len() <= EMIT_FRAME);
                    pending = Some((flags, p.to_vec()));
                }
                CONTINUATION => {
                    assert!(payload.len() <= EMIT_FRAME);
                    pending.as_mut().map(|(_, b)| b.extend_from_slice(&payload)).unwrap();
                }
                _ => others.push((kind, flags, stream, payload)),
            }
            if (kind == HEADERS || kind == CONTINUATION) && flags & END_HEADERS != 0 {
                let (f, block) = pending.take().unwrap();
                blocks.push((f, decoder.decode(&block).unwrap()));
            }
        }
        assert!(pending.is_none(), "every header block ends");
        (blocks, others)
    }

    fn settings() -> Vec<u8> {
        // SETTINGS_HEADER_TABLE_SIZE = 4096 (the client's decoder), SETTINGS_ENABLE_PUSH = 0.
        frame(0x4, 0, 0, &[0, 1, 0, 0, 0x10, 0, 0, 2, 0, 0, 0, 0])
    }

    fn run(input: &[u8], chunk: usize) -> (Vec<u8>, u64) {
        let mut r = Rewriter::new();
        for piece in input.chunks(chunk.max(1)) {
            r.feed(piece).unwrap();
        }
        (r.take_output(), r.rewritten())
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_passes_through() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        let first = request("/run/authzd/authzd.sock", "/authzd.v1.DecisionService/Check");
        input.extend(frame(HEADERS, END_HEADERS, 1, &encode(&mut enc, &first)));
        let data = frame(0x0, END_STREAM, 1, b"\0\0\0\0\x05hello");
        input.extend(&data);
        // The second request reuses the client's dynamic table (its
        // authority is now an index), grpcio's percent-encoded form third.
        let second = request("/run/authzd/authzd.sock", "/grpc.health.v1.Health/Check");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &encode(&mut enc, &second)));
        let third = request("%2Frun%2Fauthzd%2Fauthzd.sock", "/grpc.health.v1.Health/Check");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &encode(&mut enc, &third)));
        input.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0])); // WINDOW_UPDATE
        for chunk in [input.len(), 1, 7, 100] {
            let (out, rewritten) = run(&input, chunk);
            assert_eq!(rewritten, 3, "chunk {chunk}");
            let (blocks, others) = server_view(&out);
            let localhost = |mut f: Fields| {
                f[3].1 = b"localhost".to_vec();
                f
            };
            assert_eq!(blocks[0], (END_HEADERS, localhost(first.clone())));
            assert_eq!(blocks[1], (END_HEADERS | END_STREAM, localhost(second.clone())));
            assert_eq!(blocks[2], (END_HEADERS | END_STREAM, localhost(third.clone())));
            assert_eq!(others[0], frames(&settings())[0]);
            assert_eq!(others[1], frames(&data)[0]);
            assert_eq!(others[2].0, 0x8);
        }
    }

    #[test]
    fn the_first_block_decides_pass_through_or_reencode_for_the_whole_connection() {
        // A valid authority first: the whole connection passes byte for byte
        // (a later invalid one too: the rule is one authority per connection).
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        let ok = request("localhost", "/authzd.v1.DecisionService/Check");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut enc, &ok)));
        let ok2 = request("127.0.0.1:50051", "/authzd.v1.DecisionService/Check");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &encode(&mut enc, &ok2)));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &encode(&mut enc, &request("/tmp/a.sock", "/x/Y"))));
        let mut r = Rewriter::new();
        r.feed(&input).unwrap();
        assert!(r.is_passthrough(), "settled after the first block");
        let (out, rewritten) = run(&input, 3);
        assert_eq!((out.as_slice(), rewritten), (input.as_slice(), 0), "nothing to fix: untouched");

        // An invalid authority first: that block is rewritten, and every
        // block after it is re-encoded whole, valid ones too: they may index
        // entries of the client's table that the server's decoder never saw.
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        let bad = request("/tmp/a.sock", "/x/Y");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut enc, &bad)));
        let after = request("localhost", "/authzd.v1.DecisionService/Check");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &encode(&mut enc, &after)));
        let bad2 = request("%2Ftmp%2Fa.sock", "/x/Z");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &encode(&mut enc, &bad2)));
        let (out, rewritten) = run(&input, 5);
        assert_eq!(rewritten, 2);
        let (blocks, _) = server_view(&out);
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].1[3].1, b"localhost");
        assert_eq!(blocks[1].1, after);
        assert_eq!(blocks[2].1[3].1, b"localhost");
    }

    #[test]
    fn padding_priority_and_continuation_frames() {
        let mut enc = loona_hpack::Encoder::new();
        let fields = request("/run/authzd.sock", "/authzd.v1.DecisionService/Check");
        let block = encode(&mut enc, &fields);
        let (a, rest) = block.split_at(10);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut payload = vec![4u8]; // pad length
        payload.extend([0x80, 0, 0, 1, 15]); // exclusive dependency on stream 1, weight 16
        payload.extend(a);
        payload.extend([0; 4]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        input.extend(frame(CONTINUATION, 0, 3, b));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, c));
        input.extend(frame(0x6, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])); // PING
        for chunk in [1, 4, 9, input.len()] {
            let (out, rewritten) = run(&input, chunk);
            assert_eq!(rewritten, 1);
            let raw = frames(&out[PREFACE.len()..]);
            assert_eq!(raw[0].0, HEADERS);
            assert_eq!(raw[0].1, PRIORITY | END_STREAM | END_HEADERS, "padding dropped, the rest kept");
            assert_eq!(raw[0].2, 3);
            assert_eq!(&raw[0].3[..5], &[0x80, 0, 0, 1, 15], "priority fields kept");
            let (blocks, others) = server_view(&out);
            let mut want = fields.clone();
            want[3].1 = b"localhost".to_vec();
            assert_eq!(blocks, vec![(PRIORITY | END_STREAM | END_HEADERS, want)]);
            assert_eq!(others, vec![(0x6, 0, 0, vec![1, 2, 3, 4, 5, 6, 7, 8])]);
        }
    }

    #[test]
    fn a_huge_header_block_is_split_into_frames_the_server_accepts() {
        let mut enc = loona_hpack::Encoder::new();
        let mut fields = request("/run/authzd.sock", "/authzd.v1.DecisionService/Check");
        fields.push((b"x-big".to_vec(), vec![b'a'; 100_000]));
        let block = encode(&mut enc, &fields);
        let mut input = PREFACE.to_vec();
        // The client's frames may be up to the server's maximum; here 16 KiB ones.
        let mut parts = block.chunks(EMIT_FRAME).peekable();
        let mut first = true;
        while let Some(p) = parts.next() {
            let end = if parts.peek().is_none() { END_HEADERS } else { 0 };
            input.extend(frame(if first { HEADERS } else { CONTINUATION }, end, 1, p));
            first = false;
        }
        let (out, rewritten) = run(&input, 4096);
        assert_eq!(rewritten, 1);
        let raw = frames(&out[PREFACE.len()..]);
        assert!(raw.len() >= 7, "{} frames", raw.len());
        assert!(raw.iter().all(|f| f.3.len() <= EMIT_FRAME));
        let (blocks, _) = server_view(&out);
        fields[3].1 = b"localhost".to_vec();
        assert!(blocks == vec![(0, fields)], "the block decodes to the client's fields (with localhost)");
    }

    #[test]
    fn what_is_not_http2_passes_through_and_broken_blocks_end_the_connection() {
        let http1 = b"POST /authzd.v1.DecisionService/Check HTTP/1.1\r\nHost: /tmp/x.sock\r\n\r\n";
        assert_eq!(run(http1, 3).0, http1.to_vec());
        let mut r = Rewriter::new();
        r.feed(b"PRI * HTTP/1.1").unwrap();
        assert!(r.is_passthrough());

        let mut enc = loona_hpack::Encoder::new();
        let block = encode(&mut enc, &request("/a.sock", "/p"));
        let mut interleaved = PREFACE.to_vec();
        interleaved.extend(frame(HEADERS, 0, 1, &block[..5]));
        interleaved.extend(frame(0x6, 0, 0, &[0; 8]));
        assert!(Rewriter::new().feed(&interleaved).is_err(), "a PING inside a header block");

        let mut garbage = PREFACE.to_vec();
        garbage.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0x0f]));
        assert!(Rewriter::new().feed(&garbage).is_err(), "an index out of any table");

        let mut table = PREFACE.to_vec();
        let mut update = Vec::new();
        put_integer(&mut update, 0x20, 5, 65_536); // dynamic table size update above 4096
        update.extend(&block);
        table.extend(frame(HEADERS, END_HEADERS, 1, &update));
        assert!(Rewriter::new().feed(&table).is_err(), "a table larger than HTTP/2 allows");

        let mut big = PREFACE.to_vec();
        big.extend(frame(HEADERS, 0, 1, &vec![0x82; MAX_HEADER_BLOCK / 2 + 1]));
        frame_header(&mut big, MAX_HEADER_BLOCK / 2, CONTINUATION, 0, 1);
        let mut r = Rewriter::new();
        assert!(r.feed(&big).is_err(), "a header block over the limit");
        assert!(r.output().len() == PREFACE.len(), "nothing of it passed on");

        // A decoded list over the limit: a small block indexing a large entry
        // again and again (on a connection whose first block had a socket
        // path, so its blocks are decoded; one that settled on a valid
        // authority is the server's to guard, as on TCP).
        let mut enc = loona_hpack::Encoder::new();
        let first = encode(
            &mut enc,
            &vec![(b":authority".to_vec(), b"/a.sock".to_vec()), (b"x-big".to_vec(), vec![b'a'; 3000])],
        );
        let mut bomb = PREFACE.to_vec();
        bomb.extend(frame(HEADERS, END_HEADERS, 1, &first));
        let again = encode(&mut enc, &vec![(b"x-big".to_vec(), vec![b'a'; 3000])]);
        assert_eq!(again.len(), 1, "the entry is indexed");
        bomb.extend(frame(HEADERS, END_HEADERS, 3, &again.repeat(400)));
        assert!(Rewriter::new().feed(&bomb).is_err(), "a header list over the limit once decoded");
    }

    /// The adapter reads the socket in pieces and hands out what the
    /// rewriter made, in whatever amounts its reader asks for.
    #[tokio::test]
    async fn the_adapter_reads_through_the_rewriter_in_small_pieces() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        for (i, authority) in ["/run/a.sock", "localhost", "%2Frun%2Fa.sock"].iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let fields = request(authority, "/authzd.v1.DecisionService/Check");
            input.extend(frame(HEADERS, END_HEADERS, stream, &encode(&mut enc, &fields)));
            input.extend(frame(0x0, END_STREAM, stream, &vec![7; 40_000]));
        }
        let (want, _) = run(&input, input.len());
        let (mut client, server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            for piece in input.chunks(333) {
                client.write_all(piece).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        let mut small = [0u8; 5];
        loop {
            let n = fixed.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        drop(writer.await.unwrap());
        assert!(got == want, "the reader gets exactly the rewriter's output ({} of {} bytes)", got.len(), want.len());
        let (blocks, _) = server_view(&got);
        assert!(blocks.iter().all(|(_, f)| f[3].1 == b"localhost"), "every authority is localhost");
    }

    #[test]
    fn authorities() {
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:50051"));
        assert!(valid_authority(b"[::1]:50051"));
        assert!(!valid_authority(b"/run/authzd/authzd.sock"));
        assert!(!valid_authority(b"%2Frun%2Fauthzd%2Fauthzd.sock"));
        let mut v = Vec::new();
        put_integer(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10], "RFC 7541 C.1.2");
    }
}
