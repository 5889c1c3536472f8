//! A batch's writes as ONE statement: each table's set-based write is a
//! data-modifying CTE of it, and the notifications are its final `SELECT`.
//!
//! Why: every statement is a round trip, and on a busy machine each round
//! trip waits for both processes to be scheduled. Writing eight tables with
//! eight statements made a batch's transaction several times longer than
//! its work (docs/benchmarks.md). PostgreSQL runs every data-modifying CTE
//! to completion whether or not it is referenced, and checks foreign keys
//! at the end of the statement, so a row and the rows that refer to it may
//! be written by sibling CTEs.
//!
//! The one rule a caller must keep: no two parts may modify the same row
//! (PostgreSQL silently skips the second modification of a row within one
//! statement). Each table is written by one part, and `orders` by one
//! upsert that carries the lifecycle columns too.
//!
//! Each part is written with its own placeholders, `$1` to `$n`, followed
//! by exactly `n` binds; they are renumbered here.

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, Encode, PgConnection, Postgres, Type};

#[derive(Default)]
pub(super) struct Writes {
    ctes: Vec<String>,
    notify: Vec<&'static str>,
    args: PgArguments,
    bound: usize,
    /// Placeholders the parts written so far use: every one must be bound
    /// before the next part or the execution.
    expected: usize,
    error: Option<sqlx::error::BoxDynError>,
}

impl Writes {
    /// Adds a write (`INSERT …`, `UPDATE …`, without `RETURNING`) whose
    /// placeholders are `$1` to `$n`; the next `n` binds are its values.
    pub(super) fn part(&mut self, sql: &str) -> &mut Self {
        self.check_bound();
        let (sql, placeholders) = renumber(sql, self.bound);
        self.expected = self.bound + placeholders;
        self.ctes.push(sql);
        self
    }

    pub(super) fn bind<'q, T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Postgres> + Type<Postgres>,
    {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        self.bound += 1;
        self
    }

    /// `pg_notify(channel, '')` once the transaction commits; once per
    /// channel however often it is asked for.
    pub(super) fn notify(&mut self, channel: &'static str) {
        if !self.notify.contains(&channel) {
            self.notify.push(channel);
        }
    }

    /// Runs the statement; nothing to do if no part and no notification
    /// was added.
    pub(super) async fn execute(mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.check_bound();
        if let Some(e) = self.error {
            return Err(sqlx::Error::Encode(e));
        }
        if self.ctes.is_empty() && self.notify.is_empty() {
            return Ok(());
        }
        let sql = self.sql();
        sqlx::query_with(&sql, self.args).execute(tx).await?;
        Ok(())
    }

    fn sql(&self) -> String {
        let mut sql = String::new();
        for (i, cte) in self.ctes.iter().enumerate() {
            sql.push_str(if i == 0 { "WITH " } else { ", " });
            sql.push_str(&format!("w{i} AS ({cte})"));
        }
        if !sql.is_empty() {
            sql.push(' ');
        }
        // The channels are our constants, never input.
        let selects: Vec<String> = self
            .notify
            .iter()
            .map(|c| format!("pg_notify('{c}', '')"))
            .collect();
        if selects.is_empty() {
            sql.push_str("SELECT 1");
        } else {
            sql.push_str("SELECT ");
            sql.push_str(&selects.join(", "));
        }
        sql
    }

    /// A part with fewer binds than placeholders (or more) is a bug in this
    /// module's callers, found by any test that writes that table. It fails
    /// the statement (the batch is retried, then dead-lettered) rather than
    /// panicking in the worker's task with its deliveries unacked.
    fn check_bound(&mut self) {
        if self.bound != self.expected && self.error.is_none() {
            self.error = Some(
                format!(
                    "a part of the batch's statement was given the wrong number of binds \
                     ({} bound, {} placeholders)",
                    self.bound, self.expected
                )
                .into(),
            );
        }
    }
}

/// `sql` with `$k` turned into `$(k + offset)`, and how many placeholders
/// it has (the highest `k`).
fn renumber(sql: &str, offset: usize) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut highest = 0;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let digits_start = i + 1;
        let mut end = digits_start;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        if end == digits_start {
            out.push('$');
            continue;
        }
        let k: usize = sql[digits_start..end].parse().expect("digits");
        highest = highest.max(k);
        out.push_str(&format!("${}", k + offset));
    }
    (out, highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_shifted_and_counted() {
        let (sql, n) = renumber("SELECT * FROM unnest($1::text[], $2::int8[], $10)", 3);
        assert_eq!(sql, "SELECT * FROM unnest($4::text[], $5::int8[], $13)");
        assert_eq!(n, 10);
        assert_eq!(
            renumber("SELECT '$' || 'x'", 5),
            ("SELECT '$' || 'x'".into(), 0)
        );
    }

    #[test]
    fn parts_become_ctes_and_notifications_the_final_select() {
        let mut w = Writes::default();
        w.part("INSERT INTO a SELECT * FROM unnest($1::text[])")
            .bind(vec!["x"]);
        w.part("INSERT INTO b SELECT * FROM unnest($1::text[], $2::int8[])")
            .bind(vec!["y"])
            .bind(vec![1_i64]);
        w.notify("outbox");
        w.notify("outbox");
        assert_eq!(
            w.sql(),
            "WITH w0 AS (INSERT INTO a SELECT * FROM unnest($1::text[])), \
             w1 AS (INSERT INTO b SELECT * FROM unnest($2::text[], $3::int8[])) \
             SELECT pg_notify('outbox', '')"
        );
    }

    #[test]
    fn a_part_missing_a_bind_is_an_error() {
        let mut w = Writes::default();
        w.part("INSERT INTO a SELECT * FROM unnest($1::text[], $2::text[])")
            .bind(vec!["x"]);
        w.part("INSERT INTO b SELECT 1");
        let error = w.error.as_ref().expect("an error").to_string();
        assert!(
            error.contains("wrong number of binds (1 bound, 2 placeholders)"),
            "{error}"
        );
    }
}
