//! The client half of an HTTP/2 connection on a unix socket, with a socket path as
//! `:authority` rewritten to `localhost`, so that h2 (under tonic) accepts what gRPC
//! clients send there.
//!
//! grpc-go dials a unix socket path given without a `unix:` scheme (as the kubelet's plugin
//! manager does: `grpc.DialContext(ctx, socketPath, grpc.WithContextDialer(...))`, no
//! `WithAuthority`) with the path as `:authority`; so do grpc-java, Python and older
//! grpc-go clients. h2's server refuses such a request ("malformed authority", a
//! RST_STREAM with PROTOCOL_ERROR: hyperium/h2 PR #487, unmerged), so the kubelet could not
//! register a driver. [`ClientRewriter`] sits between the socket and the server: it passes
//! the connection preface and every frame through unchanged except header blocks (HEADERS
//! and its CONTINUATIONs), which it decodes with the client's HPACK context, rewrites (an
//! `:authority` that [`http::uri::Authority`] refuses becomes `localhost`, grpc-go's own
//! convention for unix sockets; everything else is kept, in the order of h2's `HeaderMap`,
//! the one the server sees anyway: values of a name together) and encodes again with the
//! server's context, as one HEADERS frame or split into CONTINUATIONs at the default
//! SETTINGS_MAX_FRAME_SIZE (the HEADERS frame's padding and priority fields dropped;
//! RFC 9113 deprecates priority and h2 ignores it). Bytes in, bytes out: the socket I/O is
//! in [`crate::server::incoming`].
//!
//! The server is assumed to keep h2's defaults for SETTINGS_HEADER_TABLE_SIZE (4096, the
//! size of both contexts here) and SETTINGS_MAX_FRAME_SIZE (16384), and hyper's for
//! SETTINGS_MAX_HEADER_LIST_SIZE (16 KiB); tonic's servers here set none of them.
//!
//! The server never sees the client's own header frames, so the rewriter applies h2's
//! limits on them itself, as h2 0.4.20's codec does (`codec/framed_read.rs`): a frame
//! longer than SETTINGS_MAX_FRAME_SIZE is a connection error (FRAME_SIZE_ERROR), checked
//! on the length before the type; a header block with more CONTINUATION frames without
//! END_HEADERS than h2's `calc_max_continuation_frames` allows for the server's settings
//! ([`MAX_CONTINUATION_FRAMES`]) is one too (ENHANCE_YOUR_CALM). Both close the
//! connection here (the socket closed, no GOAWAY). A malformed header list (h2's
//! `MalformedMessage`: a connection-specific field, `te` other than `trailers`, a
//! pseudo-header after a field or twice) is a stream error in h2, the HPACK context
//! intact: the rewriter forwards [`MALFORMED_HEADER_BLOCK`] in its place, which the
//! server refuses the same way, so the client gets h2's own RST_STREAM(PROTOCOL_ERROR)
//! for that stream, the stream's later frames are the server's to discard, and the
//! connection goes on. An HPACK error (an upper-case field name among them: h2's decoder
//! refuses it before the list is checked) leaves the contexts out of step: a connection
//! error, in h2 as here.
//!
//! HPACK is h2's own, the one its server decodes with. h2 exports it only through the
//! frame types its `unstable` feature makes public (`h2::frame::Headers::load_hpack` and
//! `encode`), not by name: [`HpackDecoder`] and [`HpackEncoder`] hold h2's decoder and
//! encoder in a closure, their types inferred there.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::frame::{self, BytesStr, Pseudo, StreamId};
use http::HeaderMap;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The length of a frame header: 24-bit length, type, flags, 31-bit stream id.
pub const FRAME_HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, the most a frame to the server carries.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
/// The `:authority` a unix socket path is replaced with (grpc-go's for `unix:` targets).
pub const UNIX_SOCKET_AUTHORITY: &str = "localhost";
/// The largest decoded header list the rewriter takes (the `max_header_list_size` of its
/// decoder); the server's own limit ([`SERVER_MAX_HEADER_LIST_SIZE`]) is far lower, so a
/// larger list is refused here only where the server would refuse it too. The encoded
/// block is bounded by the frame size and [`MAX_CONTINUATION_FRAMES`] (7 × 16 KiB).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The server's SETTINGS_MAX_HEADER_LIST_SIZE: hyper's default, which tonic keeps unless
/// `http2_max_header_list_size` is set (the servers here do not set it).
pub const SERVER_MAX_HEADER_LIST_SIZE: usize = 16 << 10;
/// How many CONTINUATION frames without END_HEADERS one header block may have: h2's rule
/// for the server's settings (5).
pub const MAX_CONTINUATION_FRAMES: usize =
    max_continuation_frames(SERVER_MAX_HEADER_LIST_SIZE, DEFAULT_MAX_FRAME_SIZE);
/// What the server receives in place of a malformed header list: `te: gzip`, a literal
/// without indexing (neither HPACK context changes), which h2's server refuses as it
/// would have refused the client's list: RST_STREAM(PROTOCOL_ERROR) for that stream.
pub const MALFORMED_HEADER_BLOCK: &[u8] = b"\x00\x02te\x04gzip";

/// h2 0.4.20's `calc_max_continuation_frames`: enough frames for a full header list at
/// the frame size, a quarter more for imperfect packing, at least 5.
pub const fn max_continuation_frames(header_max: usize, frame_max: usize) -> usize {
    let min_frames_for_list = if header_max / frame_max > 1 {
        header_max / frame_max
    } else {
        1
    };
    let frames = min_frames_for_list.saturating_add(min_frames_for_list >> 2);
    if frames > 5 { frames } else { 5 }
}

/// Frame types (RFC 9113 section 6).
pub const HEADERS: u8 = 0x1;
pub const PUSH_PROMISE: u8 = 0x5;
pub const CONTINUATION: u8 = 0x9;
/// Frame flags of HEADERS (END_HEADERS on CONTINUATION too).
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// Why the client's half of a connection cannot be passed on: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("bad connection preface: not an HTTP/2 client")]
    Preface,
    #[error("HEADERS frame on stream 0")]
    HeadersOnStreamZero,
    #[error(
        "frame of type {kind:#x} on stream {stream_id} inside the header block of stream {open}"
    )]
    ExpectedContinuation { kind: u8, stream_id: u32, open: u32 },
    #[error("CONTINUATION frame on stream {0} without a header block to continue")]
    UnexpectedContinuation(u32),
    #[error("PUSH_PROMISE frame on stream {0} from a client")]
    PushPromise(u32),
    #[error("HEADERS frame on stream {0}: padding or priority longer than the payload")]
    Padding(u32),
    #[error(
        "frame of type {kind:#x} on stream {stream_id}: {len} bytes, over the maximum frame size {DEFAULT_MAX_FRAME_SIZE} (FRAME_SIZE_ERROR)"
    )]
    FrameSize {
        kind: u8,
        stream_id: u32,
        len: usize,
    },
    #[error(
        "header block of stream {0}: over {MAX_CONTINUATION_FRAMES} CONTINUATION frames (ENHANCE_YOUR_CALM)"
    )]
    TooManyContinuations(u32),
    #[error("header block of stream {stream_id}: {message}")]
    HeaderBlock { stream_id: u32, message: String },
    /// A malformed header list: a stream error, which [`ClientRewriter::feed`] answers
    /// itself (the server resets the stream) and never returns.
    #[error("header block of stream {0}: malformed header list")]
    MalformedHeaderList(u32),
}

/// A decoded header block: the pseudo-headers and the fields, as h2 holds them.
#[derive(Debug, Default)]
pub struct HeaderBlock {
    pub pseudo: Pseudo,
    pub fields: HeaderMap,
}

impl HeaderBlock {
    /// The `:authority`, if any.
    pub fn authority(&self) -> Option<&str> {
        self.pseudo.authority.as_deref()
    }

    /// Sets the `:authority`.
    pub fn set_authority(&mut self, authority: &str) {
        self.pseudo.authority = Some(bytes_str(authority));
    }
}

/// `value` as the string type of h2's pseudo-headers.
pub fn bytes_str(value: &str) -> BytesStr {
    BytesStr::try_from(Bytes::copy_from_slice(value.as_bytes())).expect("a str is UTF-8")
}

type DecodeFn = dyn FnMut(&mut BytesMut) -> Result<frame::Headers, frame::Error> + Send;
type EncodeFn = dyn FnMut(frame::Headers, usize, &mut BytesMut) + Send;

/// h2's HPACK decoder (a 4096-byte dynamic table): one per direction of a connection,
/// every header block of that direction decoded in order.
pub struct HpackDecoder(Box<DecodeFn>);

impl HpackDecoder {
    pub fn new() -> Self {
        let mut decoder = Default::default();
        HpackDecoder(Box::new(move |block: &mut BytesMut| {
            let mut headers =
                frame::Headers::new(StreamId::zero(), Pseudo::default(), HeaderMap::new());
            headers.load_hpack(block, MAX_HEADER_BLOCK, &mut decoder)?;
            Ok(headers)
        }))
    }

    /// Decodes the complete header block of `stream_id` (its fragments concatenated). A
    /// malformed list ([`RewriteError::MalformedHeaderList`]) is decoded all the same: the
    /// context stays in step with the client's.
    pub fn decode(
        &mut self,
        stream_id: u32,
        mut block: BytesMut,
    ) -> Result<HeaderBlock, RewriteError> {
        let headers = (self.0)(&mut block).map_err(|e| match e {
            frame::Error::MalformedMessage => RewriteError::MalformedHeaderList(stream_id),
            frame::Error::HeaderListWayTooLarge => RewriteError::HeaderBlock {
                stream_id,
                message: format!("header list over {MAX_HEADER_BLOCK} bytes"),
            },
            e => RewriteError::HeaderBlock {
                stream_id,
                message: format!("{e:?}"),
            },
        })?;
        if headers.is_over_size() {
            return Err(RewriteError::HeaderBlock {
                stream_id,
                message: format!("header list over {MAX_HEADER_BLOCK} bytes"),
            });
        }
        let (pseudo, fields) = headers.into_parts();
        Ok(HeaderBlock { pseudo, fields })
    }
}

impl Default for HpackDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// h2's HPACK encoder (a 4096-byte dynamic table, Huffman-coded strings, pseudo-headers
/// first): one per direction of a connection.
pub struct HpackEncoder(Box<EncodeFn>);

impl HpackEncoder {
    pub fn new() -> Self {
        let mut encoder = Default::default();
        HpackEncoder(Box::new(
            move |headers: frame::Headers, max_frame_size: usize, out: &mut BytesMut| {
                let limit = FRAME_HEADER_LEN + max_frame_size;
                let mut next = headers.encode(&mut encoder, &mut (&mut *out).limit(limit));
                while let Some(continuation) = next {
                    next = continuation.encode(&mut (&mut *out).limit(limit));
                }
            },
        ))
    }

    /// Appends `block` to `out` as the HEADERS frame of `stream_id` (END_HEADERS set,
    /// END_STREAM as `end_stream`), followed by CONTINUATION frames when the encoded block
    /// is longer than `max_frame_size`.
    pub fn encode(
        &mut self,
        stream_id: u32,
        end_stream: bool,
        block: HeaderBlock,
        max_frame_size: usize,
        out: &mut BytesMut,
    ) {
        let mut headers =
            frame::Headers::new(StreamId::from(stream_id), block.pseudo, block.fields);
        if end_stream {
            headers.set_end_stream();
        }
        (self.0)(headers, max_frame_size, out)
    }
}

impl Default for HpackEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// A frame header (RFC 9113 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
}

impl FrameHead {
    /// Parses the first [`FRAME_HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> FrameHead {
        FrameHead {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    /// Appends the frame header to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_uint(self.len as u64, 3);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream_id);
    }
}

/// An `:authority` h2's server refuses (as it parses it, with [`http::uri::Authority`]),
/// replaced with [`UNIX_SOCKET_AUTHORITY`]; any other header list is left alone. Returns
/// whether it replaced one.
pub fn rewrite_authority(block: &mut HeaderBlock) -> bool {
    match block.authority() {
        Some(authority) if authority.parse::<http::uri::Authority>().is_err() => {
            block.set_authority(UNIX_SOCKET_AUTHORITY);
            true
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface seen.
    Preface(usize),
    /// Waiting for a frame header.
    FrameHead,
    /// Passing this many more payload bytes of a frame through.
    Passthrough(usize),
    /// Waiting for the whole payload of a HEADERS or CONTINUATION frame.
    HeaderFragment(FrameHead),
}

/// A header block whose END_HEADERS has not come yet.
#[derive(Debug)]
struct OpenBlock {
    stream_id: u32,
    end_stream: bool,
    fragments: BytesMut,
    /// The CONTINUATION frames without END_HEADERS so far (h2's
    /// `continuation_frames_count`).
    continuations: usize,
}

/// The client-to-server half of one connection, rewritten (see the module's doc).
pub struct ClientRewriter {
    state: State,
    /// Bytes read but not yet passed on: an incomplete frame header or header fragment.
    pending: BytesMut,
    open: Option<OpenBlock>,
    /// The client's HPACK encoder context, mirrored.
    decoder: HpackDecoder,
    /// The server's HPACK decoder context, mirrored.
    encoder: HpackEncoder,
    /// The `:authority` values replaced so far.
    replaced: u64,
    /// The malformed header lists replaced with [`MALFORMED_HEADER_BLOCK`] so far.
    malformed: u64,
}

impl ClientRewriter {
    pub fn new() -> Self {
        ClientRewriter {
            state: State::Preface(0),
            pending: BytesMut::new(),
            open: None,
            decoder: HpackDecoder::new(),
            encoder: HpackEncoder::new(),
            replaced: 0,
            malformed: 0,
        }
    }

    /// How many `:authority` values have been replaced on this connection.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// How many malformed header lists were passed on as [`MALFORMED_HEADER_BLOCK`] (each
    /// a stream the server resets) on this connection.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Takes the next bytes the client sent and appends to `out` what the server is to
    /// receive for them; an incomplete frame header or header block is kept for the next
    /// call. After an error the connection is to be closed (a malformed header list is
    /// not one: see the module's doc).
    pub fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), RewriteError> {
        self.pending.extend_from_slice(input);
        loop {
            match self.state {
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(self.pending.len());
                    if self.pending[..n] != PREFACE[seen..seen + n] {
                        return Err(RewriteError::Preface);
                    }
                    out.extend_from_slice(&self.pending.split_to(n));
                    if seen + n < PREFACE.len() {
                        self.state = State::Preface(seen + n);
                        return Ok(());
                    }
                    self.state = State::FrameHead;
                }
                State::FrameHead => {
                    if self.pending.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let head = FrameHead::parse(&self.pending);
                    self.state = self.next_frame(&head)?;
                    if let State::Passthrough(_) = self.state {
                        out.extend_from_slice(&self.pending[..FRAME_HEADER_LEN]);
                    }
                    self.pending.advance(FRAME_HEADER_LEN);
                }
                State::Passthrough(remaining) => {
                    let n = remaining.min(self.pending.len());
                    out.extend_from_slice(&self.pending.split_to(n));
                    if n < remaining {
                        self.state = State::Passthrough(remaining - n);
                        return Ok(());
                    }
                    self.state = State::FrameHead;
                }
                State::HeaderFragment(head) => {
                    if self.pending.len() < head.len {
                        return Ok(());
                    }
                    let payload = self.pending.split_to(head.len);
                    self.header_fragment(&head, payload, out)?;
                    self.state = State::FrameHead;
                }
            }
        }
    }

    /// What to do with the frame `head` starts.
    fn next_frame(&self, head: &FrameHead) -> Result<State, RewriteError> {
        // h2's codec refuses a frame by its length before it looks at the type.
        if head.len > DEFAULT_MAX_FRAME_SIZE {
            return Err(RewriteError::FrameSize {
                kind: head.kind,
                stream_id: head.stream_id,
                len: head.len,
            });
        }
        if let Some(open) = &self.open {
            if head.kind != CONTINUATION || head.stream_id != open.stream_id {
                return Err(RewriteError::ExpectedContinuation {
                    kind: head.kind,
                    stream_id: head.stream_id,
                    open: open.stream_id,
                });
            }
            if head.flags & END_HEADERS == 0 && open.continuations >= MAX_CONTINUATION_FRAMES {
                return Err(RewriteError::TooManyContinuations(head.stream_id));
            }
            return Ok(State::HeaderFragment(*head));
        }
        match head.kind {
            HEADERS if head.stream_id == 0 => Err(RewriteError::HeadersOnStreamZero),
            HEADERS => Ok(State::HeaderFragment(*head)),
            CONTINUATION => Err(RewriteError::UnexpectedContinuation(head.stream_id)),
            PUSH_PROMISE => Err(RewriteError::PushPromise(head.stream_id)),
            _ => Ok(State::Passthrough(head.len)),
        }
    }

    /// A whole HEADERS or CONTINUATION payload; at END_HEADERS the block is rewritten, or
    /// when malformed replaced with [`MALFORMED_HEADER_BLOCK`].
    fn header_fragment(
        &mut self,
        head: &FrameHead,
        mut payload: BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), RewriteError> {
        match self.open.as_mut() {
            Some(open) => {
                open.fragments.extend_from_slice(&payload);
                if head.flags & END_HEADERS == 0 {
                    open.continuations += 1;
                }
            }
            None => {
                strip_padding_and_priority(head, &mut payload)?;
                self.open = Some(OpenBlock {
                    stream_id: head.stream_id,
                    end_stream: head.flags & END_STREAM != 0,
                    fragments: payload,
                    continuations: 0,
                });
            }
        }
        if head.flags & END_HEADERS == 0 {
            return Ok(());
        }
        let OpenBlock {
            stream_id,
            end_stream,
            fragments,
            ..
        } = self.open.take().expect("a header block is open");
        let mut block = match self.decoder.decode(stream_id, fragments) {
            Ok(block) => block,
            Err(RewriteError::MalformedHeaderList(stream_id)) => {
                tracing::debug!(
                    stream_id,
                    "malformed header list: the server resets the stream"
                );
                let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
                FrameHead {
                    len: MALFORMED_HEADER_BLOCK.len(),
                    kind: HEADERS,
                    flags,
                    stream_id,
                }
                .encode(out);
                out.extend_from_slice(MALFORMED_HEADER_BLOCK);
                self.malformed += 1;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if rewrite_authority(&mut block) {
            self.replaced += 1;
        }
        self.encoder
            .encode(stream_id, end_stream, block, DEFAULT_MAX_FRAME_SIZE, out);
        Ok(())
    }
}

impl Default for ClientRewriter {
    fn default() -> Self {
        Self::new()
    }
}

/// The header block fragment of a HEADERS payload: the pad length and padding (PADDED) and
/// the stream dependency and weight (PRIORITY) removed.
fn strip_padding_and_priority(
    head: &FrameHead,
    payload: &mut BytesMut,
) -> Result<(), RewriteError> {
    let err = || RewriteError::Padding(head.stream_id);
    let mut pad = 0;
    if head.flags & PADDED != 0 {
        pad = usize::from(*payload.first().ok_or_else(err)?);
        payload.advance(1);
    }
    if head.flags & PRIORITY != 0 {
        if payload.len() < 5 {
            return Err(err());
        }
        payload.advance(5);
    }
    if pad > payload.len() {
        return Err(err());
    }
    payload.truncate(payload.len() - pad);
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method};

    use super::*;

    const SOCKET: &str = "/var/lib/kubelet/plugins_registry/csi.rekube.io-reg.sock";
    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHead {
            len: payload.len(),
            kind,
            flags,
            stream_id,
        }
        .encode(&mut out);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    /// A request's header list as grpc-go sends it.
    fn request(authority: &str, path: &str) -> HeaderBlock {
        let mut block = HeaderBlock {
            pseudo: Pseudo {
                method: Some(Method::POST),
                scheme: Some(bytes_str("http")),
                path: Some(bytes_str(path)),
                ..Pseudo::default()
            },
            fields: HeaderMap::new(),
        };
        block.set_authority(authority);
        for (name, value) in [
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.72.0"),
            ("te", "trailers"),
        ] {
            block.fields.append(name, HeaderValue::from_static(value));
        }
        block
    }

    /// `block` as a client's encoder makes it (h2's: Huffman-coded, indexed): the bare
    /// header block, no frame.
    fn client_block(encoder: &mut HpackEncoder, block: HeaderBlock) -> Vec<u8> {
        let mut out = BytesMut::new();
        encoder.encode(1, false, block, (1 << 24) - 1, &mut out);
        out[FRAME_HEADER_LEN..].to_vec()
    }

    /// What the server receives, frame by frame, header blocks decoded (the server's
    /// decoder context kept across calls).
    #[derive(Debug)]
    enum Received {
        Headers {
            /// The HEADERS and CONTINUATION heads.
            heads: Vec<FrameHead>,
            block: Box<HeaderBlock>,
        },
        /// A header block h2 finds malformed: the server resets the stream.
        Malformed(Vec<FrameHead>),
        Other(Vec<u8>),
    }

    struct Server {
        decoder: HpackDecoder,
    }

    impl Server {
        fn new() -> Self {
            Server {
                decoder: HpackDecoder::new(),
            }
        }

        fn receive(&mut self, mut bytes: &[u8]) -> Vec<Received> {
            let mut received = Vec::new();
            let mut open: Option<(Vec<FrameHead>, BytesMut)> = None;
            while !bytes.is_empty() {
                let head = FrameHead::parse(bytes);
                let whole = &bytes[..FRAME_HEADER_LEN + head.len];
                let payload = &whole[FRAME_HEADER_LEN..];
                bytes = &bytes[whole.len()..];
                assert!(head.len <= DEFAULT_MAX_FRAME_SIZE, "{head:?}");
                match head.kind {
                    HEADERS | CONTINUATION => {
                        let (heads, block) = open.get_or_insert_with(Default::default);
                        heads.push(head);
                        block.extend_from_slice(payload);
                        if head.flags & END_HEADERS != 0 {
                            let (heads, block) = open.take().unwrap();
                            match self.decoder.decode(head.stream_id, block) {
                                Ok(block) => received.push(Received::Headers {
                                    heads,
                                    block: Box::new(block),
                                }),
                                Err(RewriteError::MalformedHeaderList(id)) => {
                                    assert_eq!(id, head.stream_id);
                                    received.push(Received::Malformed(heads));
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    _ => received.push(Received::Other(whole.to_vec())),
                }
            }
            assert!(open.is_none(), "a header block left open");
            received
        }
    }

    fn headers(received: &Received) -> (&[FrameHead], &HeaderBlock) {
        match received {
            Received::Headers { heads, block } => (heads, block),
            other => panic!("want HEADERS, got {other:?}"),
        }
    }

    fn feed(rewriter: &mut ClientRewriter, input: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        rewriter.feed(input, &mut out).unwrap();
        out.to_vec()
    }

    /// A rewriter past the preface, the server's decoder beside it.
    fn connection() -> (ClientRewriter, Server) {
        let mut rewriter = ClientRewriter::new();
        assert_eq!(feed(&mut rewriter, PREFACE), PREFACE);
        (rewriter, Server::new())
    }

    fn field<'a>(block: &'a HeaderBlock, name: &str) -> Vec<&'a str> {
        block
            .fields
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn grpc_go_requests_get_localhost_as_authority() {
        let (mut rewriter, mut server) = connection();
        let mut client = HpackEncoder::new();
        let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let mut input = settings.clone();
        let get_info = client_block(
            &mut client,
            request(SOCKET, "/pluginregistration.Registration/GetInfo"),
        );
        input.extend(frame(HEADERS, END_HEADERS, 1, &get_info));
        let data = frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]);
        input.extend(&data);
        let received = server.receive(&feed(&mut rewriter, &input));
        assert_eq!(received.len(), 3);
        assert!(matches!(&received[0], Received::Other(b) if *b == settings));
        let (heads, block) = headers(&received[1]);
        assert_eq!(heads.len(), 1);
        assert_eq!(
            (heads[0].kind, heads[0].flags, heads[0].stream_id),
            (HEADERS, END_HEADERS, 1)
        );
        assert_eq!(block.authority(), Some("localhost"));
        assert_eq!(block.pseudo.method, Some(Method::POST));
        assert_eq!(block.pseudo.scheme.as_deref(), Some("http"));
        assert_eq!(
            block.pseudo.path.as_deref(),
            Some("/pluginregistration.Registration/GetInfo")
        );
        assert_eq!(field(block, "content-type"), ["application/grpc"]);
        assert_eq!(field(block, "user-agent"), ["grpc-go/1.72.0"]);
        assert_eq!(field(block, "te"), ["trailers"]);
        assert_eq!(block.fields.len(), 3);
        assert!(matches!(&received[2], Received::Other(b) if *b == data));

        // The next request refers to the authority by its index in the client's dynamic
        // table: a one-byte field, decoded from the client's context.
        let notify = client_block(
            &mut client,
            request(
                SOCKET,
                "/pluginregistration.Registration/NotifyRegistrationStatus",
            ),
        );
        assert!(notify.len() < get_info.len() / 2, "{notify:?} not indexed");
        let received = server.receive(&feed(
            &mut rewriter,
            &frame(HEADERS, END_HEADERS | END_STREAM, 3, &notify),
        ));
        let (heads, block) = headers(&received[0]);
        assert_eq!(heads[0].flags, END_HEADERS | END_STREAM);
        assert_eq!(heads[0].stream_id, 3);
        assert_eq!(block.authority(), Some("localhost"));
        assert_eq!(
            block.pseudo.path.as_deref(),
            Some("/pluginregistration.Registration/NotifyRegistrationStatus")
        );
        assert_eq!(rewriter.replaced(), 2);
    }

    #[test]
    fn literal_values_and_valid_authorities() {
        // RFC 7541 C.3: three requests without Huffman coding, the second and third
        // referring to the first's entries; www.example.com is a valid authority.
        let (mut rewriter, mut server) = connection();
        let c3 = [
            &b"\x82\x86\x84\x41\x0fwww.example.com"[..],
            b"\x82\x86\x84\xbe\x58\x08no-cache",
            b"\x82\x87\x85\xbf\x40\x0acustom-key\x0ccustom-value",
        ];
        for (i, block) in c3.iter().enumerate() {
            let stream_id = 2 * i as u32 + 1;
            let received = server.receive(&feed(
                &mut rewriter,
                &frame(HEADERS, END_HEADERS, stream_id, block),
            ));
            let (_, block) = headers(&received[0]);
            assert_eq!(block.authority(), Some("www.example.com"), "request {i}");
        }
        assert_eq!(rewriter.replaced(), 0);

        // A literal (not Huffman) socket path, without indexing.
        let mut block = b"\x83\x86\x84\x01".to_vec();
        block.push(SOCKET.len() as u8);
        block.extend(SOCKET.as_bytes());
        let received = server.receive(&feed(
            &mut rewriter,
            &frame(HEADERS, END_HEADERS, 7, &block),
        ));
        assert_eq!(headers(&received[0]).1.authority(), Some("localhost"));

        // Valid authorities kept, Huffman-coded, on a connection of their own.
        let (mut rewriter, mut server) = connection();
        let mut client = HpackEncoder::new();
        let valid = [
            "localhost:1234",
            "csi.invalid",
            "127.0.0.1",
            "[::1]:8080",
            "user@host",
        ];
        for (i, authority) in valid.into_iter().enumerate() {
            let block = client_block(&mut client, request(authority, "/x"));
            let stream_id = 2 * i as u32 + 1;
            let received = server.receive(&feed(
                &mut rewriter,
                &frame(HEADERS, END_HEADERS, stream_id, &block),
            ));
            assert_eq!(headers(&received[0]).1.authority(), Some(authority));
        }
        assert_eq!(rewriter.replaced(), 0);
    }

    #[test]
    fn continuation_padding_and_priority_are_folded_into_one_headers_frame() {
        let (mut rewriter, mut server) = connection();
        let mut client = HpackEncoder::new();
        let block = client_block(&mut client, request(SOCKET, "/a"));
        // The block in three pieces: HEADERS (END_STREAM, no END_HEADERS), CONTINUATION,
        // CONTINUATION (END_HEADERS).
        let (a, rest) = block.split_at(5);
        let (b, c) = rest.split_at(7);
        let mut input = frame(HEADERS, END_STREAM, 1, a);
        input.extend(frame(CONTINUATION, 0, 1, b));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
        let received = server.receive(&feed(&mut rewriter, &input));
        let (heads, got) = headers(&received[0]);
        assert_eq!(heads.len(), 1);
        assert_eq!(heads[0].flags, END_HEADERS | END_STREAM);
        assert_eq!(got.authority(), Some("localhost"));
        assert_eq!(got.pseudo.path.as_deref(), Some("/a"));

        // PADDED and PRIORITY: pad length, dependency and weight, block, 3 bytes of padding.
        let block = client_block(&mut client, request(SOCKET, "/b"));
        let mut payload = vec![3, 0x80, 0, 0, 0, 16];
        payload.extend(&block);
        payload.extend([0, 0, 0]);
        let input = frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 3, &payload);
        let received = server.receive(&feed(&mut rewriter, &input));
        let (heads, got) = headers(&received[0]);
        assert_eq!(heads[0].flags, END_HEADERS, "padding and priority gone");
        assert_eq!(got.authority(), Some("localhost"));
        assert_eq!(got.pseudo.path.as_deref(), Some("/b"));

        // Padded only, the padding the whole rest of the payload: an empty fragment that a
        // CONTINUATION completes.
        let block = client_block(&mut client, request(SOCKET, "/c"));
        let mut input = frame(HEADERS, PADDED, 5, &[2, 0, 0]);
        input.extend(frame(CONTINUATION, END_HEADERS, 5, &block));
        let received = server.receive(&feed(&mut rewriter, &input));
        assert_eq!(headers(&received[0]).1.pseudo.path.as_deref(), Some("/c"));
        assert_eq!(rewriter.replaced(), 3);
    }

    #[test]
    fn a_large_header_block_is_split_into_continuations() {
        let (mut rewriter, mut server) = connection();
        let mut client = HpackEncoder::new();
        let mut big = request(SOCKET, "/big");
        let value = "x".repeat(40_000);
        big.fields
            .append("x-big", HeaderValue::from_str(&value).unwrap());
        let block = client_block(&mut client, big);
        // The client's own frames at SETTINGS_MAX_FRAME_SIZE.
        let mut input = Vec::new();
        let chunks: Vec<_> = block.chunks(DEFAULT_MAX_FRAME_SIZE).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            input.extend(frame(kind, flags, 1, chunk));
        }
        let received = server.receive(&feed(&mut rewriter, &input));
        assert_eq!(received.len(), 1);
        let (heads, got) = headers(&received[0]);
        let kinds: Vec<_> = heads.iter().map(|h| (h.kind, h.flags)).collect();
        assert_eq!(
            kinds,
            [(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)],
            "{heads:?}"
        );
        assert_eq!(heads[0].len, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(heads[1].len, DEFAULT_MAX_FRAME_SIZE);
        assert!(heads.iter().all(|h| h.stream_id == 1));
        assert_eq!(got.authority(), Some("localhost"));
        assert_eq!(field(got, "x-big"), [value.as_str()]);
    }

    #[test]
    fn other_frames_pass_through_unchanged() {
        let (mut rewriter, _) = connection();
        let frames = [
            frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]),
            frame(SETTINGS, 0x1, 0, &[]),
            frame(0x8, 0, 0, &[0, 1, 0, 0]), // WINDOW_UPDATE
            frame(0x6, 0, 0, b"12345678"),   // PING
            frame(DATA, END_STREAM | PADDED, 1, &[2, 0, 0, 0, 0, 0, 9, 9]), // padded DATA
            frame(0x3, 0, 1, &[0, 0, 0, 8]), // RST_STREAM
            frame(0x2, 0, 3, &[0, 0, 0, 1, 16]), // PRIORITY
            frame(0xfa, 0xff, 7, b"an extension frame"), // unknown type
            frame(0x7, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]), // GOAWAY
        ];
        let input = frames.concat();
        assert_eq!(feed(&mut rewriter, &input), input);
        assert_eq!(rewriter.replaced(), 0);
    }

    #[test]
    fn truncated_input_waits_for_the_rest() {
        let mut client = HpackEncoder::new();
        let block = client_block(
            &mut client,
            request(SOCKET, "/pluginregistration.Registration/GetInfo"),
        );
        let data = frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(&data);

        // All at once.
        let mut whole = ClientRewriter::new();
        let expected = feed(&mut whole, &input);

        // Byte by byte: the preface as it comes, nothing of the header block until its
        // last byte, the DATA frame's payload as it comes.
        let mut rewriter = ClientRewriter::new();
        let mut out = Vec::new();
        let headers_end = PREFACE.len() + FRAME_HEADER_LEN + block.len();
        for (i, byte) in input.iter().enumerate() {
            let got = feed(&mut rewriter, std::slice::from_ref(byte));
            if i < PREFACE.len() {
                assert_eq!(got, [*byte]);
            } else if i + 1 < headers_end {
                assert!(got.is_empty(), "byte {i}: {got:?}");
            } else if i + 1 == headers_end {
                assert!(!got.is_empty());
            } else if i < headers_end + FRAME_HEADER_LEN - 1 {
                assert!(got.is_empty(), "byte {i}: a partial frame header");
            }
            out.extend(got);
        }
        assert_eq!(out, expected);
        assert!(expected.ends_with(&data));
        let mut server = Server::new();
        let received = server.receive(&expected[PREFACE.len()..]);
        assert_eq!(headers(&received[0]).1.authority(), Some("localhost"));
    }

    #[test]
    fn garbage_is_refused() {
        let mut client = HpackEncoder::new();
        let block = client_block(&mut client, request(SOCKET, "/x"));
        let after_preface = |frames: &[Vec<u8>]| {
            let mut input = PREFACE.to_vec();
            input.extend(frames.concat());
            input
        };
        let header_block = |stream_id, message: &str| RewriteError::HeaderBlock {
            stream_id,
            message: message.to_string(),
        };
        let cases: Vec<(&str, Vec<u8>, RewriteError)> = vec![
            (
                "HTTP/1.1",
                b"POST /pluginregistration.Registration/GetInfo HTTP/1.1\r\n".to_vec(),
                RewriteError::Preface,
            ),
            (
                "a bad preface's tail",
                b"PRI * HTTP/2.0\r\n\r\nXX".to_vec(),
                RewriteError::Preface,
            ),
            (
                "HEADERS on stream 0",
                after_preface(&[frame(HEADERS, END_HEADERS, 0, &block)]),
                RewriteError::HeadersOnStreamZero,
            ),
            (
                "a CONTINUATION alone",
                after_preface(&[frame(CONTINUATION, END_HEADERS, 1, &block)]),
                RewriteError::UnexpectedContinuation(1),
            ),
            (
                "DATA inside a header block",
                after_preface(&[
                    frame(HEADERS, 0, 1, &block[..3]),
                    frame(DATA, 0, 1, &[0, 0, 0, 0, 0]),
                ]),
                RewriteError::ExpectedContinuation {
                    kind: DATA,
                    stream_id: 1,
                    open: 1,
                },
            ),
            (
                "a CONTINUATION of another stream",
                after_preface(&[
                    frame(HEADERS, 0, 1, &block[..3]),
                    frame(CONTINUATION, END_HEADERS, 3, &block[3..]),
                ]),
                RewriteError::ExpectedContinuation {
                    kind: CONTINUATION,
                    stream_id: 3,
                    open: 1,
                },
            ),
            (
                "PUSH_PROMISE",
                after_preface(&[frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])]),
                RewriteError::PushPromise(1),
            ),
            (
                "padding longer than the payload",
                after_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 0x82])]),
                RewriteError::Padding(1),
            ),
            (
                "PRIORITY without its five bytes",
                after_preface(&[frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0])]),
                RewriteError::Padding(1),
            ),
            (
                "PADDED without a pad length",
                after_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[])]),
                RewriteError::Padding(1),
            ),
            (
                "an index past the tables",
                after_preface(&[frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f])]),
                header_block(1, "Hpack(InvalidTableIndex)"),
            ),
            (
                "a truncated literal",
                after_preface(&[frame(HEADERS, END_HEADERS, 1, b"\x41\x0fwww")]),
                header_block(1, "Hpack(NeedMore(StringUnderflow))"),
            ),
            (
                // h2's decoder refuses the name (HTTP/2 names are lower-case) before the
                // list is checked: an HPACK error, a connection error in h2 too.
                "an upper-case field name",
                after_preface(&[frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    b"\x82\x86\x84\x00\x07X-Upper\x01v",
                )]),
                header_block(1, "Hpack(InvalidUtf8)"),
            ),
            (
                "a HEADERS frame over the maximum frame size",
                after_preface(&[frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &vec![0x82; DEFAULT_MAX_FRAME_SIZE + 1],
                )]),
                RewriteError::FrameSize {
                    kind: HEADERS,
                    stream_id: 1,
                    len: DEFAULT_MAX_FRAME_SIZE + 1,
                },
            ),
            (
                "a CONTINUATION over the maximum frame size",
                after_preface(&[
                    frame(HEADERS, 0, 1, &vec![0x82; DEFAULT_MAX_FRAME_SIZE]),
                    frame(CONTINUATION, 0, 1, &vec![0x82; MAX_HEADER_BLOCK]),
                ]),
                RewriteError::FrameSize {
                    kind: CONTINUATION,
                    stream_id: 1,
                    len: MAX_HEADER_BLOCK,
                },
            ),
            (
                "a frame of another type over the maximum frame size, by its length alone",
                after_preface(&[frame(DATA, 0, 1, &vec![0; DEFAULT_MAX_FRAME_SIZE + 1])])
                    [..PREFACE.len() + FRAME_HEADER_LEN]
                    .to_vec(),
                RewriteError::FrameSize {
                    kind: DATA,
                    stream_id: 1,
                    len: DEFAULT_MAX_FRAME_SIZE + 1,
                },
            ),
            (
                "one CONTINUATION without END_HEADERS too many",
                after_preface(
                    &std::iter::once(frame(HEADERS, 0, 1, &block[..1]))
                        .chain(
                            (0..=MAX_CONTINUATION_FRAMES).map(|_| frame(CONTINUATION, 0, 1, &[])),
                        )
                        .collect::<Vec<_>>(),
                ),
                RewriteError::TooManyContinuations(1),
            ),
        ];
        for (name, input, want) in cases {
            let mut rewriter = ClientRewriter::new();
            let mut out = BytesMut::new();
            assert_eq!(rewriter.feed(&input, &mut out), Err(want), "{name}");
        }
    }

    /// h2 0.4.20's `calc_max_continuation_frames`, on h2's own default settings, hyper's
    /// (the servers here) and a larger frame size.
    #[test]
    fn the_continuation_limit_is_h2s() {
        assert_eq!(MAX_CONTINUATION_FRAMES, 5);
        assert_eq!(max_continuation_frames(16 << 10, 16 << 10), 5);
        assert_eq!(max_continuation_frames(16 << 20, 16 << 10), 1280);
        assert_eq!(max_continuation_frames(1 << 20, 16 << 10), 80);
        assert_eq!(max_continuation_frames(100 << 10, 16 << 10), 7);
        assert_eq!(max_continuation_frames(16 << 10, 1 << 20), 5);
        assert_eq!(max_continuation_frames(usize::MAX, 1), usize::MAX);
    }

    /// What h2 takes is passed on: a frame of exactly the maximum size, and a block of
    /// [`MAX_CONTINUATION_FRAMES`] CONTINUATIONs without END_HEADERS and a last one with
    /// it (which h2 does not count), each limit checked per block.
    #[test]
    fn frames_and_continuations_at_h2s_limits_pass() {
        let (mut rewriter, mut server) = connection();
        let mut client = HpackEncoder::new();
        let mut big = request(SOCKET, "/big");
        // Huffman-coded: 6 bits a byte.
        let value = "x".repeat(2 * DEFAULT_MAX_FRAME_SIZE);
        big.fields
            .append("x-big", HeaderValue::from_str(&value).unwrap());
        let block = client_block(&mut client, big);
        assert!(block.len() > DEFAULT_MAX_FRAME_SIZE);
        let mut input = frame(HEADERS, 0, 1, &block[..DEFAULT_MAX_FRAME_SIZE]);
        input.extend(frame(
            CONTINUATION,
            END_HEADERS,
            1,
            &block[DEFAULT_MAX_FRAME_SIZE..],
        ));
        let received = server.receive(&feed(&mut rewriter, &input));
        assert_eq!(field(headers(&received[0]).1, "x-big"), [value.as_str()]);

        for stream_id in [3, 5] {
            let block = client_block(&mut client, request(SOCKET, "/many"));
            let mut pieces: Vec<&[u8]> = block[..MAX_CONTINUATION_FRAMES].chunks(1).collect();
            pieces.push(&block[MAX_CONTINUATION_FRAMES..]);
            let mut input = frame(HEADERS, 0, stream_id, &[]);
            for (i, piece) in pieces.iter().enumerate() {
                let last = i + 1 == pieces.len();
                let flags = if last { END_HEADERS } else { 0 };
                input.extend(frame(CONTINUATION, flags, stream_id, piece));
            }
            let received = server.receive(&feed(&mut rewriter, &input));
            let (heads, got) = headers(&received[0]);
            assert_eq!(heads.len(), 1, "folded into one HEADERS frame");
            assert_eq!(got.pseudo.path.as_deref(), Some("/many"));
        }
        assert_eq!(rewriter.replaced(), 3);
    }

    /// h2's `MalformedMessage` class is a stream error: the block is decoded (the client's
    /// context kept), [`MALFORMED_HEADER_BLOCK`] goes to the server in its place with the
    /// frame's END_STREAM, h2's decoder on the server side refuses it as malformed without
    /// touching its context, the stream's later frames pass on for the server to discard,
    /// and the next request, which refers to the client's table, is rewritten as usual.
    #[test]
    fn a_malformed_header_list_is_a_stream_error() {
        // Each field set in (or replacing) grpc-go's list.
        let cases = [
            ("te other than trailers", "te", "gzip"),
            ("a connection-specific field", "connection", "close"),
            ("transfer-encoding", "transfer-encoding", "chunked"),
            ("keep-alive", "keep-alive", "5"),
        ];
        for (name, field_name, value) in cases {
            let (mut rewriter, mut server) = connection();
            let mut client = HpackEncoder::new();
            let mut bad = request(SOCKET, "/bad");
            bad.fields
                .append("x-indexed", HeaderValue::from_static("in the table"));
            bad.fields
                .insert(field_name, HeaderValue::from_static(value));
            let bad = client_block(&mut client, bad);
            let data = frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]);
            let mut input = frame(HEADERS, END_HEADERS, 1, &bad);
            input.extend(&data);
            let mut good = request(SOCKET, "/good");
            good.fields
                .append("x-indexed", HeaderValue::from_static("in the table"));
            let good = client_block(&mut client, good);
            input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &good));
            let out = feed(&mut rewriter, &input);
            assert_eq!(
                &out[..FRAME_HEADER_LEN + MALFORMED_HEADER_BLOCK.len()],
                frame(HEADERS, END_HEADERS, 1, MALFORMED_HEADER_BLOCK),
                "{name}"
            );
            let received = server.receive(&out);
            assert_eq!(received.len(), 3, "{name}: {received:?}");
            assert!(
                matches!(&received[0], Received::Malformed(heads) if heads.len() == 1),
                "{name}"
            );
            assert!(
                matches!(&received[1], Received::Other(b) if *b == data),
                "{name}"
            );
            let (heads, got) = headers(&received[2]);
            assert_eq!(heads[0].stream_id, 3);
            assert_eq!(got.authority(), Some("localhost"), "{name}");
            assert_eq!(got.pseudo.path.as_deref(), Some("/good"));
            assert_eq!(field(got, "x-indexed"), ["in the table"], "{name}");
            assert_eq!(
                (rewriter.replaced(), rewriter.malformed()),
                (1, 1),
                "{name}"
            );
        }

        // A pseudo-header after a field, and twice; END_STREAM kept.
        let (mut rewriter, mut server) = connection();
        for (stream_id, block) in [
            (1, &b"\x82\x86\x84\x40\x01a\x01b\x41\x09localhost"[..]),
            (3, b"\x82\x82\x86\x84"),
        ] {
            let out = feed(
                &mut rewriter,
                &frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block),
            );
            assert_eq!(
                out,
                frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    stream_id,
                    MALFORMED_HEADER_BLOCK
                )
            );
            assert!(matches!(&server.receive(&out)[0], Received::Malformed(_)));
        }
        assert_eq!(rewriter.malformed(), 2);
    }

    #[test]
    fn trailers_and_authorities() {
        let (mut rewriter, mut server) = connection();
        let mut client = HpackEncoder::new();
        let mut trailers = HeaderBlock::default();
        trailers
            .fields
            .append("grpc-status", HeaderValue::from_static("0"));
        let block = client_block(&mut client, trailers);
        let received = server.receive(&feed(
            &mut rewriter,
            &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block),
        ));
        let (heads, got) = headers(&received[0]);
        assert_eq!(heads[0].flags, END_HEADERS | END_STREAM);
        assert_eq!(got.authority(), None);
        assert_eq!(field(got, "grpc-status"), ["0"]);

        let rewritten = |authority: &str| {
            let mut block = request(authority, "/");
            rewrite_authority(&mut block).then(|| block.authority().unwrap().to_string())
        };
        assert_eq!(rewritten(SOCKET).as_deref(), Some("localhost"));
        assert_eq!(rewritten("csi.sock").as_deref(), None);
        assert_eq!(rewritten("").as_deref(), Some("localhost"));
        assert_eq!(
            rewritten("unix:///run/csi/socket").as_deref(),
            Some("localhost")
        );
        assert_eq!(rewritten("@abstract socket").as_deref(), Some("localhost"));
        assert_eq!(rewritten("localhost").as_deref(), None);
    }
}
