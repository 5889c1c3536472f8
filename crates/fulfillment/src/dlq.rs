//! `fulfillment dlq`: what failed for good, why, and putting it back.
//!
//! Dead letters live in the `dead_letters` table (the workers move them
//! there from `stripe.fulfillment.dlq`, see `dead_letters`). `list` and
//! `show` are SELECTs: they change nothing, in the table or on the broker.
//! `replay` publishes a row's stored body and properties to the work queue
//! with a publisher confirm, then deletes the row; a crash in between
//! duplicates the event at worst, and dedup by event id absorbs that.
//! `purge` deletes rows, after a confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::broker::{self, BrokerUrls};
use crate::clock::now_rfc3339;
use crate::dead_letters::{self, Row};
use crate::failure::{DeadLetterKind, headers};
use crate::topology::{DEAD_LETTER_QUEUE, WORK_QUEUE};

fn age(letter_at: Option<OffsetDateTime>) -> String {
    letter_at
        .map(|t| human_age((OffsetDateTime::now_utc() - t).whole_seconds()))
        .unwrap_or_else(|| "-".into())
}

fn rfc3339(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn open(urls: &BrokerUrls) -> anyhow::Result<(Connection, Channel)> {
    broker::connect_once(urls, "fulfillment-dlq")
        .await
        .context("connecting to RabbitMQ (AMQP_URL)")
}

/// Messages in `stripe.fulfillment.dlq` not yet moved into the table (none
/// while a worker runs), by passive declare: reading the count touches no
/// message. None if the broker cannot be asked.
async fn still_queued(urls: &BrokerUrls) -> Option<u32> {
    let ask = async {
        let (conn, channel) = open(urls).await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = channel
            .queue_declare(DEAD_LETTER_QUEUE.into(), passive, FieldTable::default())
            .await
            .ok();
        let _ = conn.close(200, "counted".into()).await;
        q.map(|q| q.message_count())
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}

fn note_queued(queued: Option<u32>, out: &mut impl Write) -> std::io::Result<()> {
    match queued {
        Some(0) => Ok(()),
        Some(n) => writeln!(
            out,
            "{n} more in {DEAD_LETTER_QUEUE}, not yet moved into the table (a running worker moves them)"
        ),
        None => writeln!(
            out,
            "(could not ask RabbitMQ whether {DEAD_LETTER_QUEUE} holds more)"
        ),
    }
}

pub async fn list(
    pool: &PgPool,
    amqp_url: &BrokerUrls,
    limit: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let rows = dead_letters::list(pool, i64::try_from(limit).unwrap_or(i64::MAX))
        .await
        .context("reading dead letters (has `fulfillment migrate` run?)")?;
    writeln!(
        out,
        "{:<32} {:<42} {:>8} {:>6}  {:<10} ERROR",
        "EVENT ID", "TYPE", "ATTEMPTS", "AGE", "KIND"
    )?;
    for Row { letter: l, .. } in &rows {
        writeln!(
            out,
            "{:<32} {:<42} {:>8} {:>6}  {:<10} {}",
            one_line(&l.event_id, 64),
            one_line(&l.event_type, 64),
            l.attempts,
            age(l.last_failure_at),
            l.kind,
            one_line(&l.error, 120)
        )?;
    }
    writeln!(
        out,
        "{} dead letter(s){}",
        rows.len(),
        if rows.len() == limit {
            " (limit reached)"
        } else {
            ""
        }
    )?;
    note_queued(still_queued(amqp_url).await, out)?;
    Ok(())
}

/// Shows every dead letter of `event_id` (an event can fail for good more
/// than once, e.g. after a replay); false if there is none.
pub async fn show(pool: &PgPool, event_id: &str, out: &mut impl Write) -> anyhow::Result<bool> {
    let ids = [event_id.to_owned()];
    let rows = dead_letters::by_events(pool, Some(&ids))
        .await
        .context("reading dead letters (has `fulfillment migrate` run?)")?;
    if rows.is_empty() {
        writeln!(out, "no dead letter with event id {event_id}")?;
        return Ok(false);
    }
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        let l = &row.letter;
        writeln!(out, "event id:      {}", l.event_id)?;
        writeln!(out, "type:          {}", l.event_type)?;
        writeln!(out, "error kind:    {}", l.kind)?;
        writeln!(out, "error:         {}", l.error)?;
        writeln!(out, "attempts:      {}", l.attempts)?;
        writeln!(out, "first failure: {}", rfc3339(l.first_failure_at))?;
        writeln!(
            out,
            "last failure:  {} ({} ago)",
            rfc3339(l.last_failure_at),
            age(l.last_failure_at)
        )?;
        writeln!(
            out,
            "dead-lettered: {}",
            rfc3339(Some(row.dead_lettered_at))
        )?;
        writeln!(out, "body:")?;
        match serde_json::from_slice::<serde_json::Value>(&l.body) {
            Ok(v) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
            Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&l.body))?,
        }
    }
    Ok(true)
}

/// The properties a replay publishes: the stored ones, stamped with the
/// replay time (`failure::headers::on_replay`).
fn replay_properties(row: &Row) -> lapin::BasicProperties {
    let permanent = row.letter.kind == DeadLetterKind::Permanent.label();
    headers::on_replay(&row.letter.properties, permanent, &now_rfc3339())
}

/// Replays the dead letters of `ids` (all when None); returns how many.
pub async fn replay(
    pool: &PgPool,
    amqp_url: &BrokerUrls,
    ids: Option<&[String]>,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let rows = dead_letters::by_events(pool, ids)
        .await
        .context("reading dead letters (has `fulfillment migrate` run?)")?;
    let (conn, channel) = open(amqp_url).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut replayed = 0;
    for row in &rows {
        let confirm = channel
            .basic_publish(
                "".into(),
                WORK_QUEUE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &row.letter.body,
                replay_properties(row),
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            anyhow::bail!(
                "broker did not accept the replay of {}; it stays a dead letter",
                row.letter.event_id
            );
        }
        // Published and confirmed: only now is the row expendable.
        dead_letters::delete(pool, row.id)
            .await
            .with_context(|| format!("{} was replayed but its row not deleted; a second replay would be absorbed by dedup", row.letter.event_id))?;
        writeln!(
            out,
            "replayed {} ({})",
            row.letter.event_id, row.letter.event_type
        )?;
        replayed += 1;
    }
    let _ = conn.close(200, "replayed".into()).await;
    if let Some(ids) = ids {
        let found: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.letter.event_id.as_str()).collect();
        let missing = ids.iter().filter(|id| !found.contains(id.as_str())).count();
        if missing > 0 {
            writeln!(out, "{missing} of the ids given were not dead letters")?;
        }
    }
    writeln!(out, "{replayed} message(s) replayed to {WORK_QUEUE}")?;
    Ok(replayed)
}

/// Deletes every dead letter, once the operator confirmed: on a terminal
/// by typing `yes`, in a script with `--yes`. Stripe will not resend them.
pub async fn purge(
    pool: &PgPool,
    yes: bool,
    input: &mut impl BufRead,
    stdin_is_terminal: bool,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    if !yes {
        if !stdin_is_terminal {
            anyhow::bail!(
                "dlq purge deletes dead letters for good: pass --yes to confirm (stdin is not a terminal, so there is no one to ask)"
            );
        }
        let n = dead_letters::count(pool)
            .await
            .context("counting dead letters")?;
        write!(
            out,
            "Delete {n} dead letter(s) for good? Stripe will not send them again. Type yes to confirm: "
        )?;
        out.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        if answer.trim() != "yes" {
            anyhow::bail!("not confirmed; nothing deleted");
        }
    }
    let purged = dead_letters::purge(pool)
        .await
        .context("deleting dead letters")?;
    writeln!(out, "{purged} dead letter(s) purged")?;
    Ok(purged)
}

/// Whether `purge` may ask: stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}
