//! What the kubelet's plugin manager sends `rekube-csi registrar`, byte for byte: grpc-go
//! dialling a unix socket path without `WithAuthority` puts the path in `:authority`,
//! which h2's server refuses (RST_STREAM, PROTOCOL_ERROR). A raw HTTP/2 client on a
//! `UnixStream` sends what grpc-go sends (the preface, an empty SETTINGS, HEADERS with
//! the socket path as `:authority`, a DATA frame with the gRPC-framed request) and
//! decodes the answer. The header blocks are encoded with h2's HPACK encoder, not
//! grpc-go's: what they reproduce of grpc-go's is what the rewriter depends on, Huffman
//! strings and fields added to the dynamic table, so that a second request names the
//! authority by its index; the exact bytes differ (h2 never indexes `:path`, grpc-go's
//! encoder indexes every field).
//!
//! Against the real driver and registrar processes: GetInfo answers with the plugin's
//! info, twice on one connection (the second request's authority a dynamic-table index),
//! then NotifyRegistrationStatus; the driver's own socket answers GetPluginInfo the same
//! way; a client that does not speak HTTP/2 loses its connection, logged, and the
//! registrar goes on. Against the same Registration service served by plain tonic (no
//! adapter): the request is refused with PROTOCOL_ERROR, the bug this guards against.
//! A malformed request (`te: gzip`) gets the same answer with and without the adapter:
//! RST_STREAM(PROTOCOL_ERROR) for its stream, the connection kept for the next call.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{HeaderValue, Method};
use prost::Message;
use rekube_csi::pluginregistration::registration_server::RegistrationServer;
use rekube_csi::pluginregistration::{InfoRequest, PluginInfo, RegistrationStatus};
use rekube_csi::registrar::RegistrationService;
use rekube_csi::uds_authority::{
    CONTINUATION, DEFAULT_MAX_FRAME_SIZE, END_HEADERS, END_STREAM, FRAME_HEADER_LEN, FrameHead,
    HEADERS, HeaderBlock, HpackDecoder, HpackEncoder, PREFACE, bytes_str,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const DRIVER: &str = "csi.rekube.io";
const ENDPOINT: &str = "/var/lib/kubelet/plugins/csi.rekube.io/csi.sock";
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;
const T: Duration = Duration::from_secs(10);

/// A `rekube-csi` process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(args: &[&str], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rekube-csi"))
            .args(args)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Process { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, socket: &Path) {
        let deadline = Instant::now() + T;
        while !socket.exists() {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "exited: {}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "no {}: {}",
                socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer to one call.
#[derive(Debug, Default)]
struct Response {
    headers: Option<HeaderBlock>,
    /// The gRPC-framed messages of the DATA frames.
    body: Vec<u8>,
    trailers: Option<HeaderBlock>,
    /// RST_STREAM's error code.
    reset: Option<u32>,
    /// GOAWAY's error code.
    goaway: Option<u32>,
    /// The connection ended before the stream did.
    closed: bool,
}

impl Response {
    fn status(&self) -> Option<&str> {
        self.headers
            .as_ref()?
            .pseudo
            .status
            .as_ref()
            .map(|s| s.as_str())
    }

    fn grpc_status(&self) -> Option<&str> {
        let trailers = self.trailers.as_ref().or(self.headers.as_ref())?;
        trailers.fields.get("grpc-status")?.to_str().ok()
    }

    /// The one message of a unary answer.
    fn message<M: Message + Default>(&self) -> M {
        assert!(self.body.len() >= 5, "{self:?}");
        assert_eq!(self.body[0], 0, "not compressed");
        let len = u32::from_be_bytes(self.body[1..5].try_into().unwrap()) as usize;
        assert_eq!(self.body.len(), 5 + len, "one message");
        M::decode(&self.body[5..]).unwrap()
    }
}

/// An HTTP/2 client on a unix socket sending what grpc-go sends for a unary call.
struct GrpcGoClient {
    conn: UnixStream,
    authority: String,
    /// The client's HPACK encoder (h2's), one per connection.
    encoder: HpackEncoder,
    /// The client's decoder of the server's header blocks.
    decoder: HpackDecoder,
    read: BytesMut,
    next_stream_id: u32,
    /// The length of the last request's header block.
    last_header_block: usize,
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8], out: &mut BytesMut) {
    FrameHead {
        len: payload.len(),
        kind,
        flags,
        stream_id,
    }
    .encode(out);
    out.extend_from_slice(payload);
}

impl GrpcGoClient {
    /// Dials `socket` with its path as the authority, as `grpc.DialContext(ctx, path,
    /// grpc.WithContextDialer(...))` does: the preface and grpc-go's empty SETTINGS.
    async fn connect(socket: &Path) -> GrpcGoClient {
        let mut conn = UnixStream::connect(socket).await.unwrap();
        let mut out = BytesMut::from(&PREFACE[..]);
        frame(SETTINGS, 0, 0, &[], &mut out);
        conn.write_all(&out).await.unwrap();
        GrpcGoClient {
            conn,
            authority: socket.to_str().unwrap().to_string(),
            encoder: HpackEncoder::new(),
            decoder: HpackDecoder::new(),
            read: BytesMut::new(),
            next_stream_id: 1,
            last_header_block: 0,
        }
    }

    /// A unary call of `method` (`/package.Service/Method`) with `request`.
    async fn call(&mut self, method: &str, request: impl Message) -> Response {
        self.call_with(method, request, |_| {}).await
    }

    /// [`Self::call`] with grpc-go's header list changed by `change` first.
    async fn call_with(
        &mut self,
        method: &str,
        request: impl Message,
        change: impl FnOnce(&mut HeaderBlock),
    ) -> Response {
        let stream_id = self.next_stream_id;
        self.next_stream_id += 2;
        let mut headers = HeaderBlock::default();
        headers.pseudo.method = Some(Method::POST);
        headers.pseudo.scheme = Some(bytes_str("http"));
        headers.pseudo.path = Some(bytes_str(method));
        headers.set_authority(&self.authority);
        for (name, value) in [
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.72.0"),
            ("te", "trailers"),
            ("grpc-timeout", "9999996u"),
        ] {
            headers.fields.append(name, HeaderValue::from_static(value));
        }
        change(&mut headers);
        let mut out = BytesMut::new();
        self.encoder
            .encode(stream_id, false, headers, DEFAULT_MAX_FRAME_SIZE, &mut out);
        self.last_header_block = out.len() - FRAME_HEADER_LEN;
        let message = request.encode_to_vec();
        let mut body = vec![0];
        body.extend((message.len() as u32).to_be_bytes());
        body.extend(message);
        frame(DATA, END_STREAM, stream_id, &body, &mut out);
        self.conn.write_all(&out).await.unwrap();
        tokio::time::timeout(T, self.response(stream_id))
            .await
            .expect("an answer in time")
    }

    /// Reads frames until `stream_id` ends (or the connection does), acknowledging the
    /// server's SETTINGS and PINGs.
    async fn response(&mut self, stream_id: u32) -> Response {
        let mut response = Response::default();
        let mut block: Option<(u8, BytesMut)> = None;
        loop {
            while self.read.len() >= FRAME_HEADER_LEN {
                let head = FrameHead::parse(&self.read);
                if self.read.len() < FRAME_HEADER_LEN + head.len {
                    break;
                }
                let payload = self
                    .read
                    .split_to(FRAME_HEADER_LEN + head.len)
                    .split_off(FRAME_HEADER_LEN);
                let mut reply = BytesMut::new();
                let mut ended = false;
                match head.kind {
                    SETTINGS if head.flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[], &mut reply),
                    PING if head.flags & ACK == 0 => frame(PING, ACK, 0, &payload, &mut reply),
                    GOAWAY => {
                        response.goaway =
                            Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                    }
                    HEADERS | CONTINUATION => {
                        let (_, fragments) =
                            block.get_or_insert_with(|| (head.flags, BytesMut::new()));
                        fragments.extend_from_slice(&payload);
                        if head.flags & END_HEADERS != 0 {
                            let (flags, fragments) = block.take().unwrap();
                            let decoded = self.decoder.decode(head.stream_id, fragments).unwrap();
                            assert_eq!(head.stream_id, stream_id);
                            if response.headers.is_none() {
                                response.headers = Some(decoded);
                            } else {
                                response.trailers = Some(decoded);
                            }
                            ended = flags & END_STREAM != 0;
                        }
                    }
                    DATA if head.stream_id == stream_id => {
                        response.body.extend_from_slice(&payload);
                        ended = head.flags & END_STREAM != 0;
                    }
                    RST_STREAM if head.stream_id == stream_id => {
                        response.reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                        ended = true;
                    }
                    _ => {}
                }
                if !reply.is_empty() {
                    let _ = self.conn.write_all(&reply).await;
                }
                if ended {
                    return response;
                }
            }
            self.read.reserve(16 * 1024);
            match self.conn.read_buf(&mut self.read).await {
                Ok(0) | Err(_) => {
                    response.closed = true;
                    return response;
                }
                Ok(_) => {}
            }
        }
    }
}

const GET_INFO: &str = "/pluginregistration.Registration/GetInfo";
const NOTIFY: &str = "/pluginregistration.Registration/NotifyRegistrationStatus";

fn plugin_info(endpoint: &str) -> PluginInfo {
    PluginInfo {
        r#type: "CSIPlugin".into(),
        name: DRIVER.into(),
        endpoint: endpoint.into(),
        supported_versions: vec!["1.0.0".into()],
    }
}

fn assert_ok(response: &Response) {
    assert_eq!(response.reset, None, "{response:?}");
    assert_eq!(response.status(), Some("200"), "{response:?}");
    let headers = response.headers.as_ref().unwrap();
    assert_eq!(
        headers.fields.get("content-type").unwrap(),
        "application/grpc"
    );
    assert_eq!(response.grpc_status(), Some("0"), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrar_and_the_driver_answer_grpc_go_with_a_socket_path_as_authority() {
    let dir = tempfile::tempdir().unwrap();
    let driver_socket = dir.path().join("csi.sock");
    let state = dir.path().join("state");
    let mut driver = Process::start(
        &[
            &format!("--endpoint=unix://{}", driver_socket.display()),
            "--node-id=n1",
            "--capacity=64Mi",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        dir.path().join("driver.log"),
    );
    driver.wait_for(&driver_socket);
    let registry = dir.path().join("plugins_registry");
    let mut registrar = Process::start(
        &[
            "registrar",
            "--csi-address",
            driver_socket.to_str().unwrap(),
            "--plugin-registration-path",
            registry.to_str().unwrap(),
            "--kubelet-registration-path",
            ENDPOINT,
        ],
        dir.path().join("registrar.log"),
    );
    let socket = registry.join(format!("{DRIVER}-reg.sock"));
    registrar.wait_for(&socket);

    // The plugin manager's calls: GetInfo, and NotifyRegistrationStatus on the same
    // connection; a second GetInfo between them finds the authority in the dynamic table.
    let mut kubelet = GrpcGoClient::connect(&socket).await;
    let info = kubelet.call(GET_INFO, InfoRequest {}).await;
    assert_ok(&info);
    assert_eq!(info.message::<PluginInfo>(), plugin_info(ENDPOINT));
    let first_block = kubelet.last_header_block;
    assert!(
        first_block > socket.as_os_str().len() / 2,
        "the path is in the first block"
    );

    let again = kubelet.call(GET_INFO, InfoRequest {}).await;
    assert_ok(&again);
    assert_eq!(again.message::<PluginInfo>(), plugin_info(ENDPOINT));
    // The authority, a path of ~60 characters, now a one-byte index (`:path` is never
    // indexed: it is there literally both times).
    let authority_len = socket.as_os_str().len();
    assert!(
        kubelet.last_header_block + authority_len / 2 < first_block,
        "the second block refers to the table: {} bytes after {first_block}",
        kubelet.last_header_block
    );

    let notified = kubelet
        .call(
            NOTIFY,
            RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            },
        )
        .await;
    assert_ok(&notified);

    // The driver's own socket, as another grpc-go client would dial it.
    let mut client = GrpcGoClient::connect(&driver_socket).await;
    let plugin = client
        .call(
            "/csi.v1.Identity/GetPluginInfo",
            rekube_csi::csi::GetPluginInfoRequest {},
        )
        .await;
    assert_ok(&plugin);
    assert_eq!(
        plugin
            .message::<rekube_csi::csi::GetPluginInfoResponse>()
            .name,
        DRIVER
    );

    // Not HTTP/2: that connection closed and logged, the registrar goes on.
    let mut http1 = UnixStream::connect(&socket).await.unwrap();
    http1
        .write_all(b"POST /pluginregistration.Registration/GetInfo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(T, http1.read_to_end(&mut rest))
        .await
        .expect("the connection closed")
        .unwrap();
    assert!(rest.len() < 100, "{rest:?}");
    let info = GrpcGoClient::connect(&socket)
        .await
        .call(GET_INFO, InfoRequest {})
        .await;
    assert_ok(&info);
    let log = registrar.log();
    assert!(
        log.contains("bad connection preface") && log.contains(socket.to_str().unwrap()),
        "{log}"
    );
    assert!(registrar.child.try_wait().unwrap().is_none(), "{log}");
}

/// The Registration service on `socket`, through the adapter or by plain tonic.
fn serve_registration(socket: &Path, adapter: bool) -> tokio::sync::oneshot::Sender<()> {
    let listener = rekube_csi::server::bind(socket).unwrap();
    let (service, _failures) = RegistrationService::new(DRIVER.into(), ENDPOINT.into());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder().add_service(RegistrationServer::new(service));
    let stopped = async {
        let _ = stopped.await;
    };
    if adapter {
        let incoming = rekube_csi::server::incoming(listener, socket);
        tokio::spawn(server.serve_with_incoming_shutdown(incoming, stopped));
    } else {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(server.serve_with_incoming_shutdown(incoming, stopped));
    }
    stop
}

#[tokio::test]
async fn without_the_adapter_h2_refuses_the_socket_path() {
    let dir = tempfile::tempdir().unwrap();

    let plain = dir.path().join("plain-reg.sock");
    let _stop = serve_registration(&plain, false);
    let refused = GrpcGoClient::connect(&plain)
        .await
        .call(GET_INFO, InfoRequest {})
        .await;
    assert_eq!(refused.reset, Some(PROTOCOL_ERROR), "{refused:?}");
    assert!(refused.headers.is_none(), "{refused:?}");

    let adapted = dir.path().join("adapted-reg.sock");
    let _stop = serve_registration(&adapted, true);
    let info = GrpcGoClient::connect(&adapted)
        .await
        .call(GET_INFO, InfoRequest {})
        .await;
    assert_ok(&info);
    assert_eq!(info.message::<PluginInfo>(), plugin_info(ENDPOINT));
}

/// h2 resets a stream whose header list is malformed (`te` other than `trailers`) and
/// keeps the connection: through the adapter as without it (the adapter forwards a
/// malformed stand-in the server refuses alike), the next call on the same connection
/// answered.
#[tokio::test]
async fn a_malformed_request_is_reset_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    for adapter in [false, true] {
        let socket = dir.path().join(format!("reg-{adapter}.sock"));
        let _stop = serve_registration(&socket, adapter);
        let mut client = GrpcGoClient::connect(&socket).await;
        // Plain h2 takes only an RFC authority.
        client.authority = "localhost".into();
        let refused = client
            .call_with(GET_INFO, InfoRequest {}, |headers| {
                headers
                    .fields
                    .insert("te", HeaderValue::from_static("gzip"));
            })
            .await;
        assert_eq!(
            (refused.reset, refused.goaway, refused.closed),
            (Some(PROTOCOL_ERROR), None, false),
            "adapter: {adapter}: {refused:?}"
        );
        assert!(refused.headers.is_none(), "{refused:?}");
        let info = client.call(GET_INFO, InfoRequest {}).await;
        assert_ok(&info);
        assert_eq!(info.message::<PluginInfo>(), plugin_info(ENDPOINT));
    }
}
