//! `fulfillment dlq`: what failed for good, why, and putting it back.
//!
//! Listing reads messages without acking them and closes the channel, which
//! returns them all to the queue untouched. Replay publishes each chosen
//! message to the work queue with confirm before acking it in the DLQ, so a
//! crash mid-replay duplicates at worst (dedup by event id absorbs that).

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::Context;
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};

use crate::time_fmt::{age_secs, now_rfc3339};
use crate::topology::{DEAD_LETTER_QUEUE, WORK_QUEUE};
use crate::worker::{header_int, header_str, headers};

/// What an operator needs to know about one dead letter.
pub struct DeadLetter {
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub kind: String,
    pub attempts: u32,
    pub first_failure_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub body: Vec<u8>,
}

impl DeadLetter {
    fn from_message(m: &BasicGetMessage) -> DeadLetter {
        let p = &m.delivery.properties;
        DeadLetter {
            event_id: p
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            event_type: p
                .kind()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            error: header_str(p, headers::ERROR).unwrap_or_else(|| "-".into()),
            kind: header_str(p, headers::ERROR_KIND).unwrap_or_else(|| "-".into()),
            attempts: header_int(p, headers::ATTEMPTS),
            first_failure_at: header_str(p, headers::FIRST_FAILURE_AT),
            last_failure_at: header_str(p, headers::LAST_FAILURE_AT),
            body: m.delivery.data.clone(),
        }
    }

    fn age(&self) -> String {
        self.last_failure_at
            .as_deref()
            .and_then(age_secs)
            .map(human_age)
            .unwrap_or_else(|| "-".into())
    }
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn open(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name("fulfillment-dlq".into()),
    )
    .await
    .context("connecting to RabbitMQ (AMQP_URL)")?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

/// Takes up to `limit` messages without acking them.
async fn take(channel: &Channel, limit: usize) -> anyhow::Result<Vec<BasicGetMessage>> {
    let mut out = Vec::new();
    while out.len() < limit {
        match channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: false })
            .await?
        {
            Some(m) => out.push(m),
            None => break,
        }
    }
    Ok(out)
}

pub async fn list(url: &str, limit: usize, out: &mut impl Write) -> anyhow::Result<()> {
    let (conn, channel) = open(url).await?;
    let letters: Vec<DeadLetter> = take(&channel, limit)
        .await?
        .iter()
        .map(DeadLetter::from_message)
        .collect();
    // Closing without acking puts every message back.
    let _ = conn.close(200, "listed".into()).await;
    writeln!(
        out,
        "{:<32} {:<42} {:>8} {:>6}  {:<10} ERROR",
        "EVENT ID", "TYPE", "ATTEMPTS", "AGE", "KIND"
    )?;
    for l in &letters {
        writeln!(
            out,
            "{:<32} {:<42} {:>8} {:>6}  {:<10} {}",
            l.event_id,
            l.event_type,
            l.attempts,
            l.age(),
            l.kind,
            one_line(&l.error, 120)
        )?;
    }
    writeln!(
        out,
        "{} dead letter(s){}",
        letters.len(),
        if letters.len() == limit {
            " (limit reached)"
        } else {
            ""
        }
    )?;
    Ok(())
}

pub async fn show(url: &str, event_id: &str, out: &mut impl Write) -> anyhow::Result<bool> {
    let (conn, channel) = open(url).await?;
    let letters: Vec<DeadLetter> = take(&channel, usize::MAX)
        .await?
        .iter()
        .map(DeadLetter::from_message)
        .collect();
    let _ = conn.close(200, "shown".into()).await;
    let Some(l) = letters.iter().find(|l| l.event_id == event_id) else {
        writeln!(out, "no dead letter with event id {event_id}")?;
        return Ok(false);
    };
    writeln!(out, "event id:      {}", l.event_id)?;
    writeln!(out, "type:          {}", l.event_type)?;
    writeln!(out, "error kind:    {}", l.kind)?;
    writeln!(out, "error:         {}", l.error)?;
    writeln!(out, "attempts:      {}", l.attempts)?;
    writeln!(
        out,
        "first failure: {}",
        l.first_failure_at.as_deref().unwrap_or("-")
    )?;
    writeln!(
        out,
        "last failure:  {} ({} ago)",
        l.last_failure_at.as_deref().unwrap_or("-"),
        l.age()
    )?;
    writeln!(out, "body:")?;
    match serde_json::from_slice::<serde_json::Value>(&l.body) {
        Ok(v) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&l.body))?,
    }
    Ok(true)
}

/// Replays the chosen messages (all when `ids` is None); returns how many.
pub async fn replay(
    url: &str,
    ids: Option<&BTreeSet<String>>,
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let (conn, channel) = open(url).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut replayed = 0;
    for message in take(&channel, usize::MAX).await? {
        let letter = DeadLetter::from_message(&message);
        if ids.is_some_and(|ids| !ids.contains(&letter.event_id)) {
            continue; // left unacked: back in the DLQ when we close
        }
        let mut props = message.delivery.properties.clone();
        let mut table = props.headers().clone().unwrap_or_default();
        // A fresh retry budget; the history stays readable in the other headers.
        table.insert(
            ShortString::from(headers::ATTEMPTS),
            AMQPValue::LongLongInt(0),
        );
        table.insert(
            ShortString::from(headers::REPLAYED_AT),
            AMQPValue::LongString(now_rfc3339().into()),
        );
        props = props.with_headers(table);
        let confirm = channel
            .basic_publish(
                "".into(),
                WORK_QUEUE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.delivery.data,
                props,
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            anyhow::bail!(
                "broker did not accept the replay of {}; it stays in the DLQ",
                letter.event_id
            );
        }
        message.delivery.ack(BasicAckOptions::default()).await?;
        writeln!(out, "replayed {} ({})", letter.event_id, letter.event_type)?;
        replayed += 1;
    }
    let _ = conn.close(200, "replayed".into()).await;
    if let Some(ids) = ids
        && replayed < ids.len()
    {
        writeln!(
            out,
            "{} of the ids given were not in the DLQ",
            ids.len() - replayed
        )?;
    }
    writeln!(out, "{replayed} message(s) replayed to {WORK_QUEUE}")?;
    Ok(replayed)
}

pub async fn purge(url: &str, out: &mut impl Write) -> anyhow::Result<u32> {
    let (conn, channel) = open(url).await?;
    let purged = channel
        .queue_purge(DEAD_LETTER_QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    let _ = conn.close(200, "purged".into()).await;
    writeln!(out, "{purged} message(s) purged from {DEAD_LETTER_QUEUE}")?;
    Ok(purged)
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
