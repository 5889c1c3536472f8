//! A small hyper 1 server loop shared by the webhook and metrics listeners:
//! a connection limit, a header read timeout and graceful shutdown, so a slow
//! or hostile client cannot exhaust the process.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::shutdown::Shutdown;

pub type Body = Full<Bytes>;

/// Per-connection read buffer, at most. hyper's default (~400 KiB) lets each
/// connection streaming a body grow a buffer outside MAX_INFLIGHT_BODY_BYTES;
/// request heads (a few hundred bytes from Stripe) still fit many times over.
const READ_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Binds `addr`, naming `setting` in the error so a bad configuration is one clear line.
pub async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{setting}={addr}: cannot listen: {e}"))
}

/// Serves until shutdown, then stops accepting and lets in-flight requests
/// finish for at most `limits.shutdown_grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    name: &'static str,
    handler: H,
    limits: Limits,
    shutdown: Shutdown,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        info!(listener = name, %addr, "listening");
    }
    loop {
        // Waiting for a permit before accepting leaves excess clients in the
        // kernel's backlog instead of spending memory on them.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(READ_BUFFER_BYTES)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => info!(listener = name, "in-flight requests finished"),
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            warn!(listener = name, grace = ?limits.shutdown_grace, "shutdown grace elapsed; dropping remaining connections");
        }
    }
}

pub fn text(status: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response is valid")
}

pub fn json(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response is valid")
}
