//! Startup of the long-running roles (`serve`, `receiver`, `worker`): from
//! validated settings to running tasks, and a handle to wait on until a
//! signal stops them (the shape of zero-to-production's `Application` and
//! `crates_io_worker`'s runner).
//!
//! Order matters: every setting is checked, then both listeners are bound
//! (an address in use is a configuration error and fails at once), and only
//! then does anything connect: services that are down at start are retried
//! in the background, never a crash loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::broker::{self, BrokerLink, Publisher, Setup};
use crate::cli::{
    AmqpArgs, DatabaseArgs, MetricsArgs, ReceiverArgs, ReceiverCmd, ReconcileArgs, ServeArgs,
    ShutdownArgs, StripeArgs, WorkerArgs, WorkerCmd,
};
use crate::health::{self, DbHealth};
use crate::receiver::{self, Endpoints, Readiness, Receiver};
use crate::shutdown::{self, Shutdown};
use crate::{
    budget, db, dead_letters, http, line_items, metrics, reconcile, records, relay, store,
    topology, upkeep, worker,
};

/// Which parts of the pipeline this process runs, with their settings.
pub struct Roles {
    http_addr: SocketAddr,
    receiver: Option<ReceiverArgs>,
    worker: Option<WorkerRole>,
    amqp: AmqpArgs,
    metrics: MetricsArgs,
    shutdown: ShutdownArgs,
}

impl Roles {
    /// Receiver, workers and relay in one process.
    pub fn serve(a: ServeArgs) -> Roles {
        Roles {
            http_addr: a.receiver.http_addr,
            receiver: Some(a.receiver),
            worker: Some(WorkerRole {
                args: a.worker,
                database: a.database,
                stripe: a.stripe,
                reconcile: a.reconcile,
            }),
            amqp: a.amqp,
            metrics: a.metrics,
            shutdown: a.shutdown,
        }
    }

    /// Only the webhook endpoint.
    pub fn receiver(a: ReceiverCmd) -> Roles {
        Roles {
            http_addr: a.receiver.http_addr,
            receiver: Some(a.receiver),
            worker: None,
            amqp: a.amqp,
            metrics: a.metrics,
            shutdown: a.shutdown,
        }
    }

    /// Only the workers, the relay and their upkeep.
    pub fn worker(a: WorkerCmd) -> Roles {
        Roles {
            http_addr: a.http_addr,
            receiver: None,
            worker: Some(WorkerRole {
                args: a.worker,
                database: a.database,
                stripe: a.stripe,
                reconcile: a.reconcile,
            }),
            amqp: a.amqp,
            metrics: a.metrics,
            shutdown: a.shutdown,
        }
    }
}

/// The settings of the worker role.
struct WorkerRole {
    args: WorkerArgs,
    database: DatabaseArgs,
    stripe: StripeArgs,
    reconcile: ReconcileArgs,
}

/// A started process: its background tasks run; the HTTP listener starts
/// serving in [`Application::run_until_stopped`].
pub struct Application {
    http_listener: TcpListener,
    endpoints: Arc<Endpoints>,
    limits: http::Limits,
    stopping: Shutdown,
    tasks: Vec<JoinHandle<()>>,
    links: Vec<BrokerLink>,
    metrics_server: JoinHandle<()>,
}

impl Application {
    pub async fn build(roles: Roles) -> anyhow::Result<Application> {
        let verifier = roles
            .receiver
            .as_ref()
            .map(ReceiverArgs::validate)
            .transpose()?;
        let prometheus = metrics::install()?;
        let http_listener = http::bind(roles.http_addr, "HTTP_ADDR").await?;
        let metrics_listener = http::bind(roles.metrics.metrics_addr, "METRICS_ADDR").await?;
        let grace = Duration::from_secs(roles.shutdown.shutdown_grace_secs);
        let drain = Duration::from_secs(roles.shutdown.shutdown_drain_secs);
        let (draining, stopping) = shutdown::on_signals(drain);

        let mut started = Started::default();
        let receiver = match (verifier, &roles.receiver) {
            (Some(verifier), Some(args)) => Some(started.receiver(verifier, args, &roles.amqp)),
            _ => None,
        };
        let db_health = match roles.worker {
            Some(role) => {
                let ctx = (&roles.amqp, grace, &stopping);
                Some(started.workers(role, ctx)?)
            }
            None => None,
        };

        let ready_links = started.links.clone();
        // One readiness for both listeners; false from the first signal on,
        // so load balancers stop routing here while we still serve.
        let ready: Readiness = Arc::new(move || {
            !draining.is_triggered()
                && ready_links.iter().all(BrokerLink::is_up)
                && db_health.as_ref().is_none_or(DbHealth::is_up)
        });
        let metrics_server = tokio::spawn(metrics::serve(
            metrics_listener,
            prometheus,
            ready.clone(),
            stopping.clone(),
        ));
        let limits = http::Limits {
            max_connections: roles
                .receiver
                .as_ref()
                .map_or(64, |a| a.max_connections.get()),
            header_read_timeout: Duration::from_secs(
                roles
                    .receiver
                    .as_ref()
                    .map_or(5, |a| a.header_read_timeout_secs),
            ),
            shutdown_grace: grace,
        };
        Ok(Application {
            http_listener,
            endpoints: Arc::new(Endpoints { receiver, ready }),
            limits,
            stopping,
            tasks: started.tasks,
            links: started.links,
            metrics_server,
        })
    }

    /// Serves until the first signal's drain is over, then waits for every
    /// task to finish its in-flight work and closes the broker links.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let endpoints = self.endpoints;
        http::serve(
            self.http_listener,
            "http",
            move |req| endpoints.clone().handle(req),
            self.limits,
            self.stopping,
        )
        .await;
        for task in self.tasks {
            let _ = task.await;
        }
        for link in &self.links {
            link.close().await;
        }
        self.metrics_server.await.ok();
        info!("stopped");
        Ok(())
    }
}

/// What has been started so far: the tasks to wait for and the broker
/// links to close (and to ask for readiness).
#[derive(Default)]
struct Started {
    tasks: Vec<JoinHandle<()>>,
    links: Vec<BrokerLink>,
}

impl Started {
    fn link(&mut self, amqp: &AmqpArgs, name: &'static str, setup: Setup) -> BrokerLink {
        let link = BrokerLink::start(amqp.amqp_url.clone(), name, setup);
        self.links.push(link.clone());
        link
    }

    fn receiver(
        &mut self,
        verifier: stripe_webhook_signature::Verifier,
        args: &ReceiverArgs,
        amqp: &AmqpArgs,
    ) -> Receiver {
        let link = self.link(amqp, "receiver", publisher_setup(&[]));
        let custom_verifier = args.custom_payment_verifier();
        match &custom_verifier {
            Some(_) => info!(
                path = receiver::CUSTOM_PAYMENT_PATH,
                "custom-payment reports enabled"
            ),
            None => info!(
                path = receiver::CUSTOM_PAYMENT_PATH,
                "custom-payment reports off (CUSTOM_PAYMENT_SECRET not set): that path answers 404"
            ),
        }
        Receiver {
            verifier,
            custom_verifier,
            max_body_bytes: args.max_body_bytes.get(),
            body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
            publisher: Publisher::new(link, amqp.confirm_timeout()),
            body_budget: budget::BodyBudget::new(args.max_inflight_body_bytes),
            shed_log: receiver::ThrottledLog::new(Duration::from_secs(10)),
        }
    }

    /// The worker pool, the outbox relay, the dead-letter mover, upkeep and
    /// the health watchers; hands back the database's health for readiness.
    fn workers(
        &mut self,
        role: WorkerRole,
        (amqp, grace, stopping): (&AmqpArgs, Duration, &Shutdown),
    ) -> anyhow::Result<DbHealth> {
        let WorkerRole {
            args,
            database,
            stripe,
            reconcile,
        } = role;
        args.warn_about_short_retention();
        // One client for the process: its calls share one rate budget.
        let stripe = crate::stripe::client(&stripe)?;
        let pool = db::pool(
            database.database_url.expose(),
            args.database_max_connections,
        )?;
        let line_items = self.line_items(stripe.clone(), &pool, stopping);
        let health = DbHealth::new();
        let watch = health::watch_database(pool.clone(), health.clone(), stopping.clone());
        self.tasks.push(tokio::spawn(watch));

        let policy = args.retry_delays;
        let worker_link = self.link(amqp, "worker", publisher_setup(policy.delays()));
        let relay_link = self.link(amqp, "relay", publisher_setup(&[]));
        // Its own connection: a consumer of the DLQ beside the work consumer
        // and the relay's publishes would share their flow control.
        let dead_letter_link = self.link(amqp, "dead-letters", publisher_setup(&[]));

        let mover = dead_letters::Mover {
            pool: pool.clone(),
            link: dead_letter_link,
        };
        self.tasks.push(tokio::spawn(mover.run(stopping.clone())));
        let worker = Arc::new(worker::Worker {
            pool: pool.clone(),
            link: worker_link.clone(),
            publisher: Publisher::new(worker_link, amqp.confirm_timeout()),
            policy,
            concurrency: args.worker_concurrency.get(),
            batch_size: args.worker_batch_size.get(),
            prefetch: args.worker_prefetch.get(),
            db: health.clone(),
            shutdown_grace: grace,
            line_items,
        });
        self.tasks.push(tokio::spawn(worker.run(stopping.clone())));
        let upkeep = upkeep::Upkeep {
            pool: pool.clone(),
            parked_ttl: args.parked_ttl,
            retention: args.retention_days,
            outbox_retention: args.outbox_retention_days,
            interval: args.retention_interval,
        };
        self.tasks.push(tokio::spawn(upkeep.run(stopping.clone())));
        if let Some(client) = stripe.clone() {
            // Custom payments become Payment Records, outside the worker's
            // transactions (records.rs).
            let reporter = records::Reporter {
                pool: pool.clone(),
                client,
            };
            self.tasks
                .push(tokio::spawn(reporter.run(stopping.clone())));
        }
        let relay = relay::Relay {
            pool: pool.clone(),
            publisher: Publisher::new(relay_link.clone(), amqp.confirm_timeout()),
            batch_size: i64::from(args.outbox_batch_size.get()),
        };
        self.tasks.push(tokio::spawn(relay.run(stopping.clone())));
        if stripe.is_some() && reconcile.reconcile_interval.interval().is_none() {
            info!("RECONCILE_INTERVAL is 0: missed events are not recovered periodically");
        }
        if let (Some(client), Some(interval)) = (stripe, reconcile.reconcile_interval.interval()) {
            let periodic = reconcile::Periodic {
                reconciler: reconcile::Reconciler {
                    client,
                    pool: pool.clone(),
                    publisher: Some(Publisher::new(relay_link.clone(), amqp.confirm_timeout())),
                },
                interval,
                lookback: reconcile.lookback.reconcile_lookback,
            };
            self.tasks
                .push(tokio::spawn(periodic.run(stopping.clone())));
        }
        let queues = health::watch_queues(relay_link, pool, stopping.clone());
        self.tasks.push(tokio::spawn(queues));
        Ok(health)
    }
}

impl Started {
    /// With a Stripe client, the enrichment job that gives `order.paid` its
    /// line items, and workers that hold those messages back for it;
    /// without one, neither (and a word if messages still wait from a time
    /// with a key).
    fn line_items(
        &mut self,
        stripe: Option<stripe_api::Client>,
        pool: &sqlx::PgPool,
        stopping: &Shutdown,
    ) -> store::LineItems {
        match stripe {
            Some(stripe) => {
                let enricher = line_items::Enricher {
                    pool: pool.clone(),
                    stripe,
                };
                self.tasks
                    .push(tokio::spawn(enricher.run(stopping.clone())));
                store::LineItems::Fetch
            }
            None => {
                let pool = pool.clone();
                self.tasks.push(tokio::spawn(async move {
                    line_items::warn_if_waiting(&pool).await;
                }));
                store::LineItems::Off
            }
        }
    }
}

/// Every link publishes with confirms and declares the topology it relies on
/// (with `retry_delays`, the retry tiers too).
pub(crate) fn publisher_setup(retry_delays: &[Duration]) -> Setup {
    let delays: Arc<[Duration]> = retry_delays.into();
    Arc::new(move |channel| {
        let delays = delays.clone();
        Box::pin(async move {
            broker::enable_confirms(&channel).await?;
            topology::declare(&channel, &delays).await
        })
    })
}
