//! The AMQP edge: one supervised connection per role, re-established with
//! backoff whenever the broker goes away, and publishing with confirms.
//!
//! We supervise the connection ourselves rather than rely on lapin's
//! auto-recovery because the receiver must *know* when it is disconnected:
//! a request arriving then gets 503 at once (Stripe retries), and `/readyz`
//! says so. A publish is only reported as successful on the broker's ack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::metrics as m;
use crate::shutdown::Shutdown;

mod urls;

pub use urls::{BrokerUrl, BrokerUrls};

/// What to do on a fresh channel before it is handed out: enable confirms,
/// declare the topology, start consumers.
pub type Setup =
    Arc<dyn Fn(Channel) -> Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>> + Send + Sync>;

/// A broker connection that heals itself. Cheap to clone.
#[derive(Clone)]
pub struct BrokerLink {
    channel: watch::Receiver<Option<Channel>>,
    kick: Arc<Notify>,
    stop: Arc<crate::shutdown::ShutdownTrigger>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl BrokerLink {
    /// Starts the supervisor task. It connects in the background, so a
    /// broker that is down at start is retried and logged, never fatal.
    pub fn start(urls: BrokerUrls, role: &'static str, setup: Setup) -> BrokerLink {
        let (tx, rx) = watch::channel(None);
        let kick = Arc::new(Notify::new());
        // The link has a stop signal of its own: the process's shutdown must
        // not close the connection before in-flight work has acked.
        let (stop, stopped) = crate::shutdown::channel();
        let task = tokio::spawn(supervise(urls, role, setup, tx, kick.clone(), stopped));
        BrokerLink {
            channel: rx,
            kick,
            stop: Arc::new(stop),
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// Closes the connection (after the users of the link are done).
    pub async fn close(&self) {
        self.stop.trigger();
        let task = self.task.lock().expect("not poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Waits until a channel is open.
    pub async fn wait_up(&self) -> Channel {
        let mut rx = self.channel.clone();
        loop {
            if let Some(c) = self.channel() {
                return c;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(HEALTH_POLL) => {}
            }
        }
    }

    /// Resolves once the current channel is gone.
    pub async fn closed(&self) {
        while self.channel().is_some() {
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// The open channel, if the broker is reachable right now.
    pub fn channel(&self) -> Option<Channel> {
        self.channel
            .borrow()
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    pub fn is_up(&self) -> bool {
        self.channel().is_some()
    }

    /// Tells the supervisor that an operation failed, so it checks the
    /// connection now instead of at its next poll.
    pub fn report_failure(&self) {
        self.kick.notify_one();
    }

    /// Runs `consume` on the link's channel until shutdown, starting it again
    /// on each new channel after the broker went away (or the consumer ended
    /// or failed). One loop for every consumer, so they all heal alike.
    pub async fn consume_while_up<F, Fut>(
        &self,
        what: &'static str,
        shutdown: &Shutdown,
        consume: F,
    ) where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = lapin::Result<()>>,
    {
        loop {
            let channel = tokio::select! {
                c = self.wait_up() => c,
                _ = shutdown.wait() => return,
            };
            match consume(channel).await {
                Ok(()) if shutdown.is_triggered() => return,
                Ok(()) => info!(consumer = what, "consumer ended; waiting for the broker"),
                Err(e) => {
                    warn!(consumer = what, error = %e, "consumer failed; waiting for the broker")
                }
            }
            self.report_failure();
            tokio::select! {
                _ = self.closed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

const HEALTH_POLL: Duration = Duration::from_millis(250);

fn reconnect_backoff() -> ExponentialBuilder {
    crate::backoff::reconnect()
}

async fn supervise(
    urls: BrokerUrls,
    role: &'static str,
    setup: Setup,
    tx: watch::Sender<Option<Channel>>,
    kick: Arc<Notify>,
    shutdown: Shutdown,
) {
    // A fresh process starts with the first URL; after a loss, the next one.
    let mut from = 0;
    loop {
        let connect = || {
            first_that_opens(&urls, from, role, |url| {
                open(url.expose().to_owned(), role, setup.clone())
            })
        };
        let opened = connect.retry(reconnect_backoff()).notify(|err, delay| {
            warn!(role, error = %err, retry_in_ms = delay.as_millis() as u64, "broker unavailable");
        });
        let (index, (conn, channel)) = tokio::select! {
            r = opened => match r {
                Ok(opened) => opened,
                Err(_) => unreachable!("retries forever"),
            },
            _ = shutdown.wait() => return,
        };
        let broker = urls.get(index).label();
        info!(role, broker, "broker connected");
        metrics::gauge!(m::BROKER_UP, "role" => role).set(1.0);
        let _ = tx.send(Some(channel.clone()));

        loop {
            tokio::select! {
                _ = kick.notified() => {}
                _ = tokio::time::sleep(HEALTH_POLL) => {}
                _ = shutdown.wait() => {
                    let _ = tx.send(None);
                    let _ = conn.close(200, ShortString::from("shutting down")).await;
                    return;
                }
            }
            if !(conn.status().connected() && channel.status().connected()) {
                break;
            }
        }
        warn!(role, broker, "broker connection lost; reconnecting");
        metrics::gauge!(m::BROKER_UP, "role" => role).set(0.0);
        let _ = tx.send(None);
        let _ = conn.close(320, ShortString::from("reconnecting")).await;
        from = urls.after_loss(index);
    }
}

/// How long one node may take to accept a connection (and its set-up)
/// before the next one is tried: a node that is unreachable rather than
/// refusing would otherwise hold a process for the kernel's TCP timeout.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no node of the list could be reached: the last node's reason, named
/// by its label (never the URL itself, which may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("{broker}: {cause}")]
pub struct ConnectError {
    pub broker: String,
    pub cause: ConnectCause,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectCause {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One round over the nodes, starting at `from`: the first node `open`
/// succeeds on, with its index, or the last node's error. Each node gets at
/// most [`NODE_CONNECT_TIMEOUT`]; a failing node is logged when there are
/// others to try.
pub async fn first_that_opens<T, F, Fut>(
    urls: &BrokerUrls,
    from: usize,
    role: &'static str,
    open: F,
) -> Result<(usize, T), ConnectError>
where
    F: Fn(&BrokerUrl) -> Fut,
    Fut: Future<Output = lapin::Result<T>>,
{
    let mut last = None;
    for (index, url) in urls.rotation(from) {
        let cause = match tokio::time::timeout(NODE_CONNECT_TIMEOUT, open(url)).await {
            Ok(Ok(opened)) => return Ok((index, opened)),
            Ok(Err(e)) => ConnectCause::Broker(e),
            Err(_) => ConnectCause::Timeout(NODE_CONNECT_TIMEOUT),
        };
        if urls.len() > 1 {
            warn!(role, broker = url.label(), error = %cause, "broker node unavailable; trying the next");
        }
        last = Some(ConnectError {
            broker: url.label().to_owned(),
            cause,
        });
    }
    Err(last.expect("a list of URLs is never empty"))
}

/// Connects to the first node that answers and opens a channel: for the
/// one-shot commands (`migrate`, `dlq`), which need no supervision.
pub async fn connect_once(
    urls: &BrokerUrls,
    name: &'static str,
) -> Result<(Connection, Channel), ConnectError> {
    let open = |url: &BrokerUrl| {
        let url = url.expose().to_owned();
        async move {
            let props = ConnectionProperties::default().with_connection_name(name.into());
            let conn = Connection::connect(&url, props).await?;
            let channel = conn.create_channel().await?;
            Ok((conn, channel))
        }
    };
    first_that_opens(urls, 0, name, open)
        .await
        .map(|(_, opened)| opened)
}

async fn open(
    url: String,
    role: &'static str,
    setup: Setup,
) -> lapin::Result<(Connection, Channel)> {
    let props =
        ConnectionProperties::default().with_connection_name(format!("fulfillment-{role}").into());
    let conn = Connection::connect(&url, props).await?;
    let channel = conn.create_channel().await?;
    setup(channel.clone()).await?;
    Ok((conn, channel))
}

/// Why a publish was not confirmed. Every variant means "not durably
/// accepted": the caller must not claim success.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker not connected")]
    NotConnected,
    #[error("broker channel error: {0}")]
    Channel(#[from] lapin::Error),
    #[error("broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker nacked the message")]
    Nacked,
    #[error("broker returned the message as unroutable")]
    Returned,
    #[error("name longer than 255 bytes")]
    NameTooLong,
}

impl PublishError {
    pub fn label(&self) -> &'static str {
        match self {
            PublishError::NotConnected => "not_connected",
            PublishError::Channel(_) => "channel_error",
            PublishError::ConfirmTimeout(_) => "confirm_timeout",
            PublishError::Nacked => "nacked",
            PublishError::Returned => "returned",
            PublishError::NameTooLong => "name_too_long",
        }
    }
}

/// Publishes with confirms. Many publishes may be in flight at once on the
/// one channel: each caller awaits only its own confirm.
#[derive(Clone)]
pub struct Publisher {
    link: BrokerLink,
    confirm_timeout: Duration,
}

/// One message to publish.
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
    /// Ask the broker to return the message if no queue is bound for it.
    pub mandatory: bool,
}

impl Publisher {
    pub fn new(link: BrokerLink, confirm_timeout: Duration) -> Publisher {
        Publisher {
            link,
            confirm_timeout,
        }
    }

    pub fn link(&self) -> &BrokerLink {
        &self.link
    }

    pub async fn publish(&self, msg: Outgoing<'_>) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let result = self.publish_inner(msg).await;
        metrics::histogram!(m::PUBLISH_CONFIRM_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    async fn publish_inner(&self, msg: Outgoing<'_>) -> Result<(), PublishError> {
        let channel = self.link.channel().ok_or(PublishError::NotConnected)?;
        let exchange = ShortString::try_new(msg.exchange).map_err(|_| PublishError::NameTooLong)?;
        let key = ShortString::try_new(msg.routing_key).map_err(|_| PublishError::NameTooLong)?;
        let options = BasicPublishOptions {
            mandatory: msg.mandatory,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(exchange, key, options, msg.body, msg.properties)
            .await
            .inspect_err(|_| self.link.report_failure())?;
        match tokio::time::timeout(self.confirm_timeout, confirm).await {
            Err(_) => {
                self.link.report_failure();
                Err(PublishError::ConfirmTimeout(self.confirm_timeout))
            }
            Ok(Err(e)) => {
                self.link.report_failure();
                Err(PublishError::Channel(e))
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Returned),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            // Confirms are enabled in every Setup that publishes; reaching
            // this means they were not, and an unconfirmed publish is not a success.
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
        }
    }
}

/// Setup step shared by every publishing role.
pub async fn enable_confirms(channel: &Channel) -> lapin::Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
}
