//! A TCP chaos proxy for failure tests: the app connects to the proxy, the proxy
//! forwards to a real service (Postgres, Redis), and the test breaks the network
//! between them on demand, the way a real outage would:
//!
//! - [`ChaosProxy::cut`]: every open connection is reset at once and new ones are
//!   accepted and reset straight away (a crashed host, a firewall rejecting),
//!   until [`ChaosProxy::heal`];
//! - [`ChaosProxy::blackhole`]: connections stay open but no byte passes in either
//!   direction (a partition, a hung host): the client sees silence, not an error;
//! - [`ChaosProxy::delay`]: every forwarded chunk waits that long first;
//! - [`ChaosProxy::heal`]: forwarding again. Connections cut earlier stay dead;
//!   blackholed ones resume, with the bytes held back delivered, as TCP would
//!   after a partition heals.
//!
//! Why hand-written: it is ~200 lines of tokio, and a test that proves "0 failed
//! requests" must know exactly what the network did.
//!
//! The proxy runs on the runtime of the test that starts it (each `#[tokio::test]`
//! has its own), and stops with it or when dropped.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Blackhole,
    Cut,
}

/// Published to every connection task through a `watch` channel.
#[derive(Debug, Clone)]
struct State {
    mode: Mode,
    delay: Duration,
    /// Incremented by every cut: a connection opened in an earlier epoch is dead.
    epoch: u64,
    /// The proxy was dropped: everything closes.
    closed: bool,
}

impl State {
    fn kills(&self, epoch: u64) -> bool {
        self.closed || self.epoch != epoch
    }
}

/// Why a connection task stops forwarding.
#[derive(Debug)]
enum Stop {
    /// Cut (or the proxy closed): reset both sides.
    Killed,
    /// A side failed or hung up abruptly.
    Io,
}

pub struct ChaosProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<watch::Sender<State>>,
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl ChaosProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> ChaosProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the chaos proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's local address");
        let (state, _) = watch::channel(State {
            mode: Mode::Forward,
            delay: Duration::ZERO,
            epoch: 0,
            closed: false,
        });
        let state = Arc::new(state);
        let open = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone(), open.clone()));
        ChaosProxy {
            addr,
            upstream,
            state,
            open,
            accept,
        }
    }

    /// A proxy in front of a service on 127.0.0.1:`port`.
    pub async fn to_port(port: u16) -> ChaosProxy {
        Self::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Resets every open connection now and every new one until [`Self::heal`].
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.mode = Mode::Cut;
            s.epoch += 1;
        });
    }

    /// Lets no byte through, in either direction, on open and new connections,
    /// until [`Self::heal`]. Nothing is closed.
    pub fn blackhole(&self) {
        self.state.send_modify(|s| s.mode = Mode::Blackhole);
    }

    /// Delays every forwarded chunk by `delay` (zero: none).
    pub fn delay(&self, delay: Duration) {
        self.state.send_modify(|s| s.delay = delay);
    }

    /// Forwards again (without added delay). Cut connections stay dead.
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            s.mode = Mode::Forward;
            s.delay = Duration::ZERO;
        });
    }

    /// Client connections the proxy holds open now (forwarding or blackholed).
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.send_modify(|s| s.closed = true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<watch::Sender<State>>,
    open: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // EMFILE and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let now = state.borrow().clone();
        if now.closed || now.mode == Mode::Cut {
            reset(client);
            continue;
        }
        let _ = client.set_nodelay(true);
        let guard = OpenGuard::new(open.clone());
        tokio::spawn(connection(
            client,
            upstream,
            state.subscribe(),
            now.epoch,
            guard,
        ));
    }
}

/// Counts one open client connection for as long as it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes with RST rather than FIN, like a peer that vanished.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
    epoch: u64,
    _open: OpenGuard,
) {
    // Not even the upstream connection is made while blackholed: the service
    // sees nothing, the client sees a connection that never answers.
    if gate(&mut state, epoch).await.is_err() {
        reset(client);
        return;
    }
    let server = tokio::select! {
        server = TcpStream::connect(upstream) => server,
        () = killed(state.clone(), epoch) => {
            reset(client);
            return;
        }
    };
    let Ok(server) = server else {
        // The service itself is down: the client sees what it would see directly.
        reset(client);
        return;
    };
    let _ = server.set_nodelay(true);
    // Zero linger on both: when the proxy drops them (cut), both peers get RST.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, state.clone(), epoch);
    let down = pump(server_read, client_write, state.clone(), epoch);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    // An orderly EOF on one side is passed on and the other direction keeps
    // going; a cut or an error ends both.
    while !(up_done && down_done) {
        tokio::select! {
            result = &mut up, if !up_done => {
                if result.is_err() { break; }
                up_done = true;
            }
            result = &mut down, if !down_done => {
                if result.is_err() { break; }
                down_done = true;
            }
        }
    }
}

/// Copies one direction chunk by chunk, obeying the proxy's mode between chunks.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    epoch: u64,
) -> Result<(), Stop> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Not reading while blackholed keeps TCP back-pressure, like a partition.
        gate(&mut state, epoch).await?;
        let n = tokio::select! {
            read = from.read(&mut buf) => read.map_err(|_| Stop::Io)?,
            () = killed(state.clone(), epoch) => return Err(Stop::Killed),
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        // A chunk read just before a blackhole is held until the heal.
        let delay = gate(&mut state, epoch).await?;
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = killed(state.clone(), epoch) => return Err(Stop::Killed),
            }
        }
        tokio::select! {
            written = to.write_all(&buf[..n]) => written.map_err(|_| Stop::Io)?,
            () = killed(state.clone(), epoch) => return Err(Stop::Killed),
        }
    }
}

/// Waits until bytes may pass; returns the delay to apply, or `Killed`.
async fn gate(state: &mut watch::Receiver<State>, epoch: u64) -> Result<Duration, Stop> {
    let now = state
        .wait_for(|s| s.kills(epoch) || s.mode == Mode::Forward)
        .await
        .map_err(|_| Stop::Killed)?;
    if now.kills(epoch) {
        Err(Stop::Killed)
    } else {
        Ok(now.delay)
    }
}

/// Resolves when a connection of `epoch` must die.
async fn killed(mut state: watch::Receiver<State>, epoch: u64) {
    let _ = state.wait_for(|s| s.kills(epoch)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that echoes every connection back, counting accepted ones.
    async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, accepted)
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut answer = vec![0u8; message.len()];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    /// Polls `check` every 10 ms for up to 5 s.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn bytes_pass_through_both_ways_and_connections_are_counted() {
        let (echo, accepted) = echo_server().await;
        let proxy = ChaosProxy::start(echo).await;
        let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut a, b"hola").await.expect("echo"), b"hola");
        assert_eq!(round_trip(&mut b, b"adios").await.expect("echo"), b"adios");
        // A chunk bigger than the proxy's buffer arrives whole.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&mut a, &big).await.expect("echo big"), big);
        assert_eq!(proxy.connections(), 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(a);
        eventually("closed connection uncounted", || proxy.connections() == 1).await;
    }

    #[tokio::test]
    async fn cut_resets_open_connections_and_refuses_new_ones_until_healed() {
        let (echo, _) = echo_server().await;
        let proxy = ChaosProxy::start(echo).await;
        let mut before = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut before, b"x")
            .await
            .expect("echo before the cut");

        proxy.cut();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), before.read(&mut buf))
            .await
            .expect("a cut connection does not hang");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "cut connection still open: {read:?}"
        );
        eventually("no connection open after the cut", || {
            proxy.connections() == 0
        })
        .await;
        // New connections are accepted by the kernel, then reset at once.
        let mut during = TcpStream::connect(proxy.addr()).await.expect("connect");
        let answer =
            tokio::time::timeout(Duration::from_secs(5), round_trip(&mut during, b"y")).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "a connection during the cut must fail: {answer:?}"
        );

        proxy.heal();
        let mut after = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut after, b"z").await.expect("echo"), b"z");
        // The connection cut earlier stays dead.
        assert!(round_trip(&mut before, b"w").await.is_err());
    }

    #[tokio::test]
    async fn blackhole_stalls_open_and_new_connections_until_healed() {
        let (echo, accepted) = echo_server().await;
        let proxy = ChaosProxy::start(echo).await;
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut open, b"1").await.expect("echo");

        proxy.blackhole();
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), round_trip(&mut open, b"2")).await;
        assert!(stalled.is_err(), "no byte may pass: {stalled:?}");
        // A new connection is accepted but reaches nothing.
        let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
        fresh.write_all(b"3").await.expect("write into the void");
        let mut buf = [0u8; 1];
        let silent = tokio::time::timeout(Duration::from_millis(300), fresh.read(&mut buf)).await;
        assert!(silent.is_err(), "no answer while blackholed: {silent:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "upstream saw nothing");
        assert_eq!(proxy.connections(), 2, "both stay open");

        proxy.heal();
        // What was held back is delivered, and both connections work again.
        fresh
            .read_exact(&mut buf)
            .await
            .expect("held byte delivered");
        assert_eq!(&buf, b"3");
        let mut held = [0u8; 1];
        open.read_exact(&mut held)
            .await
            .expect("held byte delivered");
        assert_eq!(&held, b"2");
        assert_eq!(round_trip(&mut open, b"4").await.expect("echo"), b"4");
    }

    #[tokio::test]
    async fn delay_slows_every_chunk_and_heal_removes_it() {
        let (echo, _) = echo_server().await;
        let proxy = ChaosProxy::start(echo).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        proxy.delay(Duration::from_millis(150));
        let started = tokio::time::Instant::now();
        round_trip(&mut stream, b"slow").await.expect("echo");
        // One delay each way, at least.
        assert!(started.elapsed() >= Duration::from_millis(300));
        proxy.heal();
        round_trip(&mut stream, b"fast").await.expect("echo");
    }
}
