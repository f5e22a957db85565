//! Serving HTTP with graceful shutdown.
//!
//! On SIGTERM or SIGINT: readiness flips to 503 at once; the listener keeps
//! accepting for `SHUTDOWN_READINESS_DELAY` so load balancers notice and stop
//! sending work; then it stops accepting, in-flight requests get up to
//! `SHUTDOWN_DRAIN_TIMEOUT` to finish, and finally the pools are closed.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use axum::serve::Listener;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::app::App;

/// Serves `app` on `listener` until `shutdown` resolves, then drains and closes.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = app.state.clone();
    let http = &state.config.http;
    let health = state.health.clone();
    let readiness_delay = http.shutdown_readiness_delay;
    let drain_timeout = http.shutdown_drain_timeout;
    let (draining_tx, draining_rx) = oneshot::channel::<()>();

    let live = state.live.clone();
    let stop_accepting = async move {
        shutdown.await;
        health.begin_shutdown();
        // Live streams never end by themselves: close them now, so clients
        // reconnect to another instance while this one drains.
        live.close_all();
        tracing::info!(
            ?readiness_delay,
            "shutdown requested: /ready now answers 503"
        );
        tokio::time::sleep(readiness_delay).await;
        tracing::info!(
            ?drain_timeout,
            "no longer accepting connections; draining in-flight requests"
        );
        let _ = draining_tx.send(());
    };

    let listener = CountedListener {
        inner: listener,
        gauge: state.metrics.active_connections.clone(),
    };
    let service = axum::ServiceExt::into_make_service_with_connect_info::<PeerAddr>(app.service());
    let server = axum::serve(listener, service).with_graceful_shutdown(stop_accepting);
    let mut server = tokio::spawn(server.into_future());

    tokio::select! {
        result = &mut server => result.context("server task failed")?.context("server failed")?,
        _ = draining_rx => {
            match tokio::time::timeout(drain_timeout, &mut server).await {
                Ok(result) => result.context("server task failed")?.context("server failed")?,
                Err(_) => {
                    tracing::warn!(
                        open_connections = state.metrics.active_connections.get(),
                        "drain timeout reached; closing remaining connections"
                    );
                    server.abort();
                }
            }
        }
    }
    app.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Resolves on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// The TCP peer of a request (`ConnectInfo<PeerAddr>`), for client-IP decisions
/// such as rate limits (a trusted proxy's `X-Forwarded-For` is read on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CountedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CountedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// A TCP listener that counts open client connections in `api_active_connections`.
pub struct CountedListener {
    inner: TcpListener,
    gauge: IntGauge,
}

impl Listener for CountedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop backs off on transient errors (EMFILE...).
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        self.gauge.inc();
        (
            CountedStream {
                inner: stream,
                gauge: self.gauge.clone(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A client connection; the gauge goes down when it is dropped (closed).
pub struct CountedStream {
    inner: TcpStream,
    gauge: IntGauge,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
