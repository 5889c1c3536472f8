//! The failure router: where a message that could not be processed goes
//! next. Pure decisions, in one place: [`classify`] says whether retrying
//! can help (from the database's error), [`route`] turns the attempt count,
//! the retry policy and that kind into a delay tier or the DLQ, and
//! [`headers`] records the story on the message for operators.
//!
//! The workers act on the decision (publish, then ack); the dead-letter
//! mover and the `dlq` commands read the same headers.

pub mod headers;

use std::time::Duration;

use crate::retry::RetryPolicy;

/// Whether trying again can help: the one distinction routing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Something outside the event (a bug since fixed, a trigger, a
    /// constraint another event will satisfy): worth the delay tiers.
    Transient,
    /// The event itself cannot be processed as it is (unparseable, data
    /// PostgreSQL cannot store): every retry would fail the same way.
    Permanent,
}

/// Why a message went to the DLQ; the `x-error-kind` header and the
/// `kind` label of `fulfillment_dead_letters_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// Failed in a way no retry can fix; sent at once.
    Permanent,
    /// Failed transiently on every tier.
    Exhausted,
}

impl DeadLetterKind {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterKind::Permanent => "permanent",
            DeadLetterKind::Exhausted => "exhausted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait in this tier, then try again.
    Retry {
        tier: usize,
        delay: Duration,
    },
    DeadLetter(DeadLetterKind),
}

/// Where a message goes after its `failures`-th failure (1-based),
/// given what kind of failure it was. The only place that decides
/// between a delay tier and the DLQ.
pub fn route(policy: &RetryPolicy, failures: u32, failure: Failure) -> Next {
    if failure == Failure::Permanent {
        // Whatever the attempt count (a replayed permanent failure
        // included): the tiers would only delay the same answer.
        return Next::DeadLetter(DeadLetterKind::Permanent);
    }
    match policy.delays().get(failures.saturating_sub(1) as usize) {
        Some(&delay) => Next::Retry {
            tier: failures as usize - 1,
            delay,
        },
        None => Next::DeadLetter(DeadLetterKind::Exhausted),
    }
}

/// Whether an error that is neither an outage nor a conflict can be fixed by
/// retrying the event later. The one place that classifies database errors
/// for routing ([`route`] then decides tier or DLQ).
pub fn classify(e: &sqlx::Error) -> Failure {
    match e {
        // A value sqlx could not even encode: the event's data is at fault.
        sqlx::Error::Encode(_) => Failure::Permanent,
        sqlx::Error::Database(d) => d
            .code()
            .map_or(Failure::Transient, |c| failure_of_sqlstate(&c)),
        _ => Failure::Transient,
    }
}

/// SQLSTATE classes no retry can fix, because the data itself is refused:
/// 22 (data exception: a NUL byte in text is 22021, a number out of range
/// 22003) and 54 (program limit exceeded: an index row too large is 54000).
/// Everything else is worth the delay tiers: a constraint another event may
/// satisfy, a trigger, a lock timeout, a bug fixed by a deploy.
pub fn failure_of_sqlstate(code: &str) -> Failure {
    if code.starts_with("22") || code.starts_with("54") {
        Failure::Permanent
    } else {
        Failure::Transient
    }
}

/// An error for the `x-error` header: the database's own message (which
/// names the problem, e.g. `invalid byte sequence for encoding "UTF8":
/// 0x00`) and its SQLSTATE, so an operator can look it up.
pub fn describe(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_owned(),
        },
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_routes_failures_through_the_tiers() {
        let p = RetryPolicy::parse("1s, 10s,1m,5m").unwrap();
        assert_eq!(p.max_attempts(), 5);
        let t = Failure::Transient;
        assert_eq!(
            route(&p, 1, t),
            Next::Retry {
                tier: 0,
                delay: Duration::from_secs(1)
            }
        );
        assert_eq!(
            route(&p, 4, t),
            Next::Retry {
                tier: 3,
                delay: Duration::from_secs(300)
            }
        );
        let exhausted = Next::DeadLetter(DeadLetterKind::Exhausted);
        assert_eq!(route(&p, 5, t), exhausted);
        assert_eq!(route(&p, 500, t), exhausted);
    }

    #[test]
    fn permanent_failures_skip_the_tiers_on_every_attempt() {
        let p = RetryPolicy::parse("1s,10s,1m,5m").unwrap();
        // 1: first delivery; 2: a replayed permanent failure (its attempts
        // are kept); 0: a header-less message.
        for failures in [0, 1, 2, 5, 500] {
            assert_eq!(
                route(&p, failures, Failure::Permanent),
                Next::DeadLetter(DeadLetterKind::Permanent),
                "{failures}"
            );
        }
    }

    #[test]
    fn no_tiers_means_dead_letter_at_once() {
        let p = RetryPolicy::parse("").unwrap();
        assert_eq!(
            route(&p, 1, Failure::Transient),
            Next::DeadLetter(DeadLetterKind::Exhausted)
        );
    }

    #[test]
    fn data_the_database_refuses_is_permanent() {
        for code in ["22021", "22001", "22003", "22P02", "54000", "54001"] {
            assert_eq!(failure_of_sqlstate(code), Failure::Permanent, "{code}");
        }
    }

    #[test]
    fn everything_else_is_worth_retrying() {
        // P0001 raise_exception (a trigger), 23505 unique violation, 40001
        // serialization failure, 57014 query canceled, 55P03 lock not available.
        for code in [
            "P0001", "23505", "40001", "57014", "55P03", "08006", "42P01",
        ] {
            assert_eq!(failure_of_sqlstate(code), Failure::Transient, "{code}");
        }
    }

    #[test]
    fn an_unencodable_value_is_permanent_and_an_outage_is_not() {
        let encode = sqlx::Error::Encode("bad".into());
        assert_eq!(classify(&encode), Failure::Permanent);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Failure::Transient);
    }
}
