//! The stand-in's HTTP server: its own thread and current-thread runtime,
//! an accept loop that stops listening during an [`Outage::Refused`] (and
//! cuts open connections, as a dead host would), and binds the same port
//! again when it is over.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{Outage, Shared};

/// Binds a free port (the caller waits for it), then serves on a thread.
/// Everything happens on that thread, so starting the stand-in from inside
/// a test's own runtime is fine.
pub(super) fn spawn(shared: Arc<Shared>, stop: watch::Receiver<bool>) -> (u16, JoinHandle<()>) {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("stripe-stand-in".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the Stripe stand-in");
            runtime.block_on(async move {
                let listener = bind(0).await.expect("a free port for the Stripe stand-in");
                let port = listener.local_addr().expect("bound").port();
                let _ = port_tx.send(port);
                serve(shared, listener, port, stop).await;
            });
        })
        .expect("a thread for the Stripe stand-in");
    let port = port_rx.recv().expect("the Stripe stand-in started");
    (port, thread)
}

async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    socket.listen(1024)
}

async fn serve(
    shared: Arc<Shared>,
    first: TcpListener,
    port: u16,
    mut stop: watch::Receiver<bool>,
) {
    let mut outage = shared.outage.subscribe();
    let mut listener = Some(first);
    let mut connections: Vec<AbortHandle> = Vec::new();
    loop {
        let refused = *outage.borrow_and_update() == Outage::Refused;
        if refused && listener.is_some() {
            listener = None;
            connections.drain(..).for_each(|c| c.abort());
        } else if !refused && listener.is_none() {
            listener = rebind(port).await;
        }
        connections.retain(|c| !c.is_finished());
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = outage.changed() => continue,
            accepted = accept => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let task = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(super::routes::handle(shared, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                connections.push(task.abort_handle());
            }
        }
    }
    connections.drain(..).for_each(|c| c.abort());
}

/// The port was ours a moment ago; a few tries cover a socket still closing.
async fn rebind(port: u16) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = bind(port).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
