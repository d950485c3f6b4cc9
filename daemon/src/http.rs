//! The metrics and health endpoint: `/metrics`, `/healthz` and `/readyz`
//! (what they judge is [`crate::health`]'s), on `prometheus_server`.
//!
//! It faces the node's network, so it must survive clients that are slow,
//! silent or many: a client gets [`HEADER_READ_TIMEOUT`] to send each
//! request's headers (which also bounds a kept-alive connection's idle
//! time), no connection lives longer than [`CONNECTION_LIFETIME`], and at
//! most [`MAX_CONNECTIONS`] are served at once. At the cap a new connection
//! takes the place of the oldest one that is not being answered — a silent
//! client's — so a crowd of silent or dribbling connections cannot lock a
//! scrape or a probe out; only when every slot is answering a request is
//! the newcomer closed at once. Accept errors (out of file descriptors)
//! back off instead of spinning.

use crate::metrics;
use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// How long a client may take to send a request's headers, counted from
/// when kvip starts waiting for them: from the accept, and after each
/// answer on a kept-alive connection (so it is the idle limit too). A
/// request to this endpoint is one short line; a client dribbling a byte a
/// second is closed when this runs out, however many it sent.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection lives, whatever it does: past it the answer in
/// progress is finished and the connection closed. A scraper reconnects.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// How long an answer in progress may take to finish after the lifetime.
const LIFETIME_GRACE: Duration = Duration::from_secs(1);

/// Connections served at once. A scraper and the kubelet's two probes need
/// a handful; each connection costs at most [`MAX_BUFFER`] of memory.
pub const MAX_CONNECTIONS: usize = 64;

/// The read and write buffer limit of one connection (hyper's smallest):
/// a longer request head is refused.
const MAX_BUFFER: usize = 8192;

/// The first wait after an accept error; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);

/// The longest wait between two accepts that keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections the listen socket queues before they are accepted.
const BACKLOG: i32 = 1024;

/// The bounds a connection lives within.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`HEADER_READ_TIMEOUT`].
    header_read_timeout: Duration,
    /// [`CONNECTION_LIFETIME`].
    lifetime: Duration,
    /// [`MAX_CONNECTIONS`].
    max_connections: usize,
}

/// The limits the endpoint runs with.
const LIMITS: Limits = Limits {
    header_read_timeout: HEADER_READ_TIMEOUT,
    lifetime: CONNECTION_LIFETIME,
    max_connections: MAX_CONNECTIONS,
};

/// Where to listen, from kube-vip's `prometheus_server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `:PORT`: every address of both families (IPv6's `[::]` with
    /// IPV6_V6ONLY off, IPv4 alone where the host has no IPv6), as Go's
    /// `:PORT` does for kube-vip.
    DualStack(u16),
    /// `HOST:PORT`: exactly that address.
    Exact(SocketAddr),
}

impl Listen {
    /// Parses `:2112`, `0.0.0.0:2112`, `[::]:2112`, `[fd00::1]:2112`.
    pub fn parse(text: &str) -> Result<Listen, String> {
        let bad = || format!("prometheus_server: {text:?} is not [HOST]:PORT");
        match text.strip_prefix(':') {
            Some(port) => port.parse().map(Listen::DualStack).map_err(|_| bad()),
            None => text.parse().map(Listen::Exact).map_err(|_| bad()),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::DualStack(port) => write!(f, ":{port}"),
            Listen::Exact(addr) => write!(f, "{addr}"),
        }
    }
}

/// Whether `e`, from creating or binding an IPv6 socket, means the host has
/// no IPv6 (disabled at boot, or the address family missing).
fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// A listening socket on `addr`; `only_v6` sets IPV6_V6ONLY when given.
fn listen_on(addr: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(only) = only_v6 {
        socket.set_only_v6(only)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Binds `listen`: `:PORT` on `[::]` for both families, falling back to
/// `0.0.0.0` (with one log line) where the host has no IPv6.
fn bind(listen: Listen) -> io::Result<TcpListener> {
    match listen {
        Listen::Exact(addr) => listen_on(addr, None),
        Listen::DualStack(port) => {
            match listen_on(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), Some(false)) {
                Err(e) if ipv6_unavailable(&e) => {
                    tracing::info!(error = %e, port, "no IPv6 on this host: metrics and health listen on IPv4 only");
                    listen_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), None)
                }
                bound => bound,
            }
        }
    }
}

/// Waits between accepts that keep failing: [`ACCEPT_BACKOFF_FIRST`],
/// doubling up to [`ACCEPT_BACKOFF_MAX`], back to the start after a success.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// The next wait, while accepts fail.
    next: Option<Duration>,
}

impl AcceptBackoff {
    /// An accept failed: how long to wait, and whether this begins a run of
    /// failures (the one that is logged).
    fn failed(&mut self) -> (Duration, bool) {
        let first = self.next.is_none();
        let wait = self.next.unwrap_or(ACCEPT_BACKOFF_FIRST);
        self.next = Some((wait * 2).min(ACCEPT_BACKOFF_MAX));
        (wait, first)
    }

    /// An accept succeeded.
    fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Whether an accept error concerns only the connection being accepted
/// (its client gave up), not the listener: no reason to wait.
fn only_that_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    /// Serve it under this id.
    Admit(u64),
    /// Serve it under this id, after closing the oldest idle connection.
    Evict {
        /// The new connection's id.
        id: u64,
        /// The connection closed to make room.
        closed: u64,
    },
    /// Close it at once: every slot is answering a request.
    Refuse,
}

/// One connection being served.
#[derive(Debug, Default)]
struct Slot {
    /// A request is being answered on it now.
    answering: bool,
    /// Its task, once spawned.
    abort: Option<AbortHandle>,
}

/// The connections served now, oldest first (ids only grow).
#[derive(Debug)]
struct Connections {
    cap: usize,
    next_id: u64,
    open: BTreeMap<u64, Slot>,
}

impl Connections {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            next_id: 0,
            open: BTreeMap::new(),
        }
    }

    /// Decides about a new connection and, unless refused, records it;
    /// with the task of the connection closed to make room, to end it.
    fn admit(&mut self) -> (Admission, Option<AbortHandle>) {
        let evicted = if self.open.len() < self.cap {
            None
        } else {
            let oldest_idle = self
                .open
                .iter()
                .find(|(_, s)| !s.answering)
                .map(|(id, _)| *id);
            let Some(closed) = oldest_idle else {
                return (Admission::Refuse, None);
            };
            Some((closed, self.open.remove(&closed).and_then(|s| s.abort)))
        };
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, Slot::default());
        match evicted {
            None => (Admission::Admit(id), None),
            Some((closed, abort)) => (Admission::Evict { id, closed }, abort),
        }
    }

    /// Records connection `id`'s task; false when it was closed meanwhile.
    fn spawned(&mut self, id: u64, abort: AbortHandle) -> bool {
        match self.open.get_mut(&id) {
            Some(slot) => {
                slot.abort = Some(abort);
                true
            }
            None => false,
        }
    }

    /// Marks whether connection `id` is answering a request.
    fn answering(&mut self, id: u64, answering: bool) {
        if let Some(slot) = self.open.get_mut(&id) {
            slot.answering = answering;
        }
    }

    /// Forgets connection `id`.
    fn closed(&mut self, id: u64) {
        self.open.remove(&id);
    }

    fn len(&self) -> usize {
        self.open.len()
    }
}

type Shared = Arc<Mutex<Connections>>;

fn lock(table: &Shared) -> std::sync::MutexGuard<'_, Connections> {
    // Every change to the table is one step; a panic cannot leave it half done.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps connection `id` in the table while its task runs.
struct Served {
    table: Shared,
    id: u64,
}

impl Drop for Served {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        t.closed(self.id);
        metrics::get()
            .http_connections
            .set(i64::try_from(t.len()).unwrap_or(i64::MAX));
    }
}

/// Marks a connection as answering until the answer is sent or dropped.
struct Answering {
    table: Shared,
    id: u64,
}

impl Answering {
    fn start(table: &Shared, id: u64) -> Self {
        lock(table).answering(id, true);
        Self {
            table: table.clone(),
            id,
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        lock(&self.table).answering(self.id, false);
    }
}

/// A response body that keeps its connection marked as answering until
/// hyper has sent it (or given up on it).
struct Answer {
    body: Full<Bytes>,
    _answering: Answering,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The answer to `path`.
fn respond(
    path: &str,
    stuck_after: Duration,
    started: Instant,
) -> (StatusCode, String, &'static str) {
    let text = "text/plain; charset=utf-8";
    match path {
        "/metrics" => (
            StatusCode::OK,
            metrics::render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" | "/readyz" => {
            let netlink_age = crate::net::kernel::since_last_read(started);
            let health = metrics::health(stuck_after, netlink_age);
            let ok = if path == "/healthz" {
                health.alive
            } else {
                health.ready
            };
            if ok {
                (StatusCode::OK, "ok\n".to_string(), text)
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{}\n", health.problem),
                    text,
                )
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string(), text),
    }
}

/// Serves one connection until it ends, times out or outlives its lifetime.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    table: Shared,
    id: u64,
    limits: Limits,
    started: Instant,
    stuck_after: Duration,
) {
    let answers = table.clone();
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let answering = Answering::start(&answers, id);
        let (code, body, kind) = respond(req.uri().path(), stuck_after, started);
        let response = Response::builder()
            .status(code)
            .header("content-type", kind)
            .body(Answer {
                body: Full::new(Bytes::from(body)),
                _answering: answering,
            });
        async move { response }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUFFER);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => Some(ended),
        _ = tokio::time::sleep(limits.lifetime) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            metrics::http_closed("lifetime");
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(LIFETIME_GRACE, conn.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() {
            metrics::http_closed("header_timeout");
        } else {
            tracing::debug!(error = %e, "metrics connection ended with an error");
        }
    }
}

/// Serves until the process ends; `started` anchors the kernel-read clock,
/// `stuck_after` is how long a role's loop may go without a pass.
pub async fn serve(listen: Listen, started: Instant, stuck_after: Duration) -> anyhow::Result<()> {
    let listener = bind(listen)
        .map_err(|e| anyhow::anyhow!("prometheus_server: cannot listen on {listen}: {e}"))?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "metrics and health endpoint listening");
    }
    serve_on(listener, LIMITS, started, stuck_after).await
}

/// Accepts and serves connections on `listener` within `limits`, forever.
async fn serve_on(
    listener: TcpListener,
    limits: Limits,
    started: Instant,
    stuck_after: Duration,
) -> ! {
    let table: Shared = Arc::new(Mutex::new(Connections::new(limits.max_connections)));
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) if only_that_connection(&e) => continue,
            Err(e) => {
                metrics::get().http_accept_errors.inc();
                let (wait, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, "the metrics endpoint cannot accept connections; retrying, waiting up to 1 s between tries");
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let (admission, evicted) = lock(&table).admit();
        if let Some(evicted) = evicted {
            evicted.abort();
        }
        let id = match admission {
            Admission::Refuse => {
                metrics::http_closed("refused");
                drop(stream);
                continue;
            }
            Admission::Admit(id) => id,
            Admission::Evict { id, .. } => {
                metrics::http_closed("evicted");
                id
            }
        };
        let served = Served {
            table: table.clone(),
            id,
        };
        let task = tokio::spawn(async move {
            let served = served;
            let table = served.table.clone();
            serve_connection(stream, table, id, limits, started, stuck_after).await;
        });
        let known = lock(&table).spawned(id, task.abort_handle());
        if !known {
            // Evicted before its task was known: end it now.
            task.abort();
        }
        let open = lock(&table).len();
        metrics::get()
            .http_connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_vip_listen_addresses() {
        assert_eq!(Listen::parse(":2112"), Ok(Listen::DualStack(2112)));
        assert_eq!(
            Listen::parse("[::]:2112"),
            Ok(Listen::Exact("[::]:2112".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("0.0.0.0:2112"),
            Ok(Listen::Exact("0.0.0.0:2112".parse().unwrap()))
        );
        assert_eq!(
            Listen::parse("[fd00::1]:2113"),
            Ok(Listen::Exact("[fd00::1]:2113".parse().unwrap()))
        );
        for bad in ["2112", ":", ":http", ":65536", "localhost", "[::]"] {
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Listen::DualStack(2112).to_string(), ":2112");
    }

    #[test]
    fn only_a_missing_ipv6_falls_back_to_ipv4() {
        for errno in [
            libc::EAFNOSUPPORT,
            libc::EPROTONOSUPPORT,
            libc::EADDRNOTAVAIL,
        ] {
            assert!(ipv6_unavailable(&io::Error::from_raw_os_error(errno)));
        }
        // A port in use is a real problem on both families: no fallback.
        assert!(!ipv6_unavailable(&io::Error::from_raw_os_error(
            libc::EADDRINUSE
        )));
        assert!(!ipv6_unavailable(&io::Error::from_raw_os_error(
            libc::EACCES
        )));
    }

    #[tokio::test]
    async fn the_dual_stack_listener_takes_both_families() {
        let listener = bind(Listen::DualStack(0)).unwrap();
        let local = listener.local_addr().unwrap();
        let port = local.port();
        // IPv4 reaches it whether the host has IPv6 (V6ONLY off) or not.
        let v4 = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        let (accepted, connected) = tokio::join!(listener.accept(), v4);
        connected.unwrap();
        accepted.unwrap();
        if local.is_ipv6() {
            let v6 = tokio::net::TcpStream::connect((Ipv6Addr::LOCALHOST, port));
            let (accepted, connected) = tokio::join!(listener.accept(), v6);
            connected.unwrap();
            accepted.unwrap();
        }
    }

    #[test]
    fn accept_errors_back_off_from_10_ms_to_1_s_and_reset() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<(u128, bool)> = (0..9)
            .map(|_| {
                let (wait, first) = b.failed();
                (wait.as_millis(), first)
            })
            .collect();
        assert_eq!(
            waits,
            [
                (10, true),
                (20, false),
                (40, false),
                (80, false),
                (160, false),
                (320, false),
                (640, false),
                (1000, false),
                (1000, false)
            ]
        );
        b.succeeded();
        assert_eq!(b.failed(), (ACCEPT_BACKOFF_FIRST, true));
    }

    #[test]
    fn a_client_that_gave_up_is_no_reason_to_wait() {
        assert!(only_that_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!only_that_connection(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let mut c = Connections::new(3);
        assert_eq!(c.admit().0, Admission::Admit(0));
        assert_eq!(c.admit().0, Admission::Admit(1));
        assert_eq!(c.admit().0, Admission::Admit(2));
        // 0 answers a request: 1 is the oldest idle one.
        c.answering(0, true);
        assert_eq!(c.admit().0, Admission::Evict { id: 3, closed: 1 });
        assert_eq!(c.len(), 3);
        c.answering(0, false);
        assert_eq!(c.admit().0, Admission::Evict { id: 4, closed: 0 });
    }

    #[test]
    fn at_the_cap_with_every_slot_answering_the_newcomer_is_refused() {
        let mut c = Connections::new(2);
        for expected in 0..2 {
            assert_eq!(c.admit().0, Admission::Admit(expected));
            c.answering(expected, true);
        }
        assert_eq!(c.admit().0, Admission::Refuse);
        assert_eq!(c.len(), 2);
        // One closes: room again, without evicting anyone.
        c.closed(0);
        assert_eq!(c.admit().0, Admission::Admit(2));
    }

    #[test]
    fn a_connection_closed_before_its_task_is_known_is_ended() {
        let mut c = Connections::new(1);
        assert_eq!(c.admit().0, Admission::Admit(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let task = rt.spawn(async {});
        assert!(c.spawned(0, task.abort_handle()));
        // The evicted connection's task comes back to be ended.
        let (admission, evicted) = c.admit();
        assert_eq!(admission, Admission::Evict { id: 1, closed: 0 });
        assert!(evicted.is_some());
        assert!(!c.spawned(0, task.abort_handle()));
        assert!(c.spawned(1, task.abort_handle()));
    }

    /// Reads until the peer closes; how long that took, or None when it
    /// stayed open past `within`.
    async fn closed_within(
        stream: &mut tokio::net::TcpStream,
        within: Duration,
    ) -> Option<Duration> {
        use tokio::io::AsyncReadExt;
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn get(port: u16, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_and_dribbling_clients_cannot_lock_a_scrape_out() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits {
            header_read_timeout: Duration::from_millis(400),
            lifetime: Duration::from_secs(30),
            max_connections: 4,
        };
        let listener = bind(Listen::Exact("127.0.0.1:0".parse().unwrap())).unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve_on(
            listener,
            limits,
            Instant::now(),
            Duration::from_secs(10),
        ));
        let mut silent = Vec::new();
        for _ in 0..10 {
            silent.push(
                tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                    .await
                    .unwrap(),
            );
        }
        let mut dribbler = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let asked = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(1), get(port, "/metrics"))
            .await
            .expect("a scrape is answered while the slots are full of silent clients");
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        assert!(reply.contains("# EOF"), "{reply}");
        assert!(asked.elapsed() < Duration::from_millis(300));
        // A byte every 100 ms never finishes the header: closed at the timeout.
        let dribble = tokio::spawn(async move {
            let started = Instant::now();
            for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa" {
                if dribbler.write_all(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        });
        for s in &mut silent {
            let took = closed_within(s, Duration::from_secs(2)).await;
            assert!(took.is_some(), "a silent client stayed connected");
        }
        let dribbled = dribble.await.unwrap();
        assert!(
            dribbled.is_some_and(|d| d < Duration::from_secs(2)),
            "a dribbling client stayed connected: {dribbled:?}"
        );
        let closed = metrics::render();
        assert!(
            closed.contains("kvip_http_connections_closed_total{reason=\"evicted\"}"),
            "{closed}"
        );
        assert!(
            closed.contains("kvip_http_connections_closed_total{reason=\"header_timeout\"}"),
            "{closed}"
        );
    }
}
