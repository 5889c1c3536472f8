//! Waking a background job when the database says there is work for it
//! (`LISTEN`/`NOTIFY`, sent by the transaction that made the work, so it
//! arrives after the commit), with a poll as the floor: a notification lost
//! while the listener reconnects costs at most one poll interval.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::shutdown::Shutdown;

pub struct Wakeup {
    channel: &'static str,
    listener: Option<PgListener>,
}

impl Wakeup {
    pub fn new(channel: &'static str) -> Wakeup {
        Wakeup {
            channel,
            listener: None,
        }
    }

    /// Returns on a notification, after `at_most`, or at shutdown, whichever
    /// comes first. (Re)connects the listener first if it has none.
    pub async fn wait(&mut self, pool: &PgPool, at_most: Duration, shutdown: &Shutdown) {
        if self.listener.is_none() {
            self.listener = listen(pool, self.channel).await;
        }
        let listener = &mut self.listener;
        let notified = async {
            match listener.as_mut() {
                Some(l) => {
                    if l.try_recv().await.is_err() {
                        *listener = None;
                    } else {
                        // Every commit that made work sent one: the ones
                        // already here ask for the same pass, not one each.
                        while l.next_buffered().is_some() {}
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(at_most) => {}
            _ = shutdown.wait() => {}
        }
    }
}

async fn listen(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}
