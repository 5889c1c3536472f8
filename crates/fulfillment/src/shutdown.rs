//! One shutdown signal shared by every task of the process.

use tokio::sync::watch;

/// Cheap to clone; `wait` resolves once shutdown has begun.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone, which only happens on exit.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

/// SIGTERM and SIGINT, as a stream: the first starts the drain, a second
/// one (an impatient operator) ends it.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
        }
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    }
}

/// Returns (draining, stopping). On the first SIGTERM/SIGINT readiness
/// fails at once while both listeners keep serving for `drain`; then the
/// listeners stop accepting and in-flight work gets `SHUTDOWN_GRACE_SECS`.
pub fn on_signals(drain: std::time::Duration) -> (Shutdown, Shutdown) {
    let (drain_trigger, draining) = channel();
    let (stop_trigger, stopping) = channel();
    let mut signals = Signals::install();
    tokio::spawn(async move {
        signals.next().await;
        drain_trigger.trigger();
        if !drain.is_zero() {
            tracing::info!(
                drain_secs = drain.as_secs(),
                "draining: /readyz answers 503, still serving"
            );
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = signals.next() => tracing::info!("second signal: drain cut short"),
            }
        }
        stop_trigger.trigger();
        // Dropping a trigger also wakes its waiters; keep both until exit.
        std::future::pending::<()>().await;
        drop((drain_trigger, stop_trigger));
    });
    (draining, stopping)
}
