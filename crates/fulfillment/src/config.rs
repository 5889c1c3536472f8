//! Validated settings: every setting is checked once, where clap reads it,
//! and reaches the rest of the program as a type that cannot hold a bad value
//! (a `RetryPolicy`, a `NonZeroUsize`, a `Duration`, a [`Secret`]). Checks
//! that relate two settings run once, in [`ReceiverArgs::validate`].
//!
//! Every error is one line naming the setting (operators grep for it); a
//! setting that may hold a password is never echoed back.
//!
//! [`ReceiverArgs::validate`]: crate::cli::ReceiverArgs::validate

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

use crate::retry::RetryPolicy;

/// A setting whose value must never be printed: a password in a URL, an
/// endpoint secret. `Debug` shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A value parser that never echoes the value in its error, unlike clap's
/// own ("invalid value '…' for …"): the error names the setting (its
/// environment variable) and says what is wrong, nothing more.
#[derive(Clone)]
pub struct Quiet<F>(pub F);

impl<T, F> TypedValueParser for Quiet<F>
where
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let setting = arg
            .and_then(clap::Arg::get_env)
            .and_then(OsStr::to_str)
            .unwrap_or("a setting");
        let quiet = |why: String| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("{setting}: {why}\n"))
        };
        let text = value
            .to_str()
            .ok_or_else(|| quiet("not valid UTF-8".into()))?;
        (self.0)(text).map_err(quiet)
    }
}

/// `AMQP_URL`: one or more comma-separated URLs (the nodes of one cluster),
/// each parsed as lapin will parse it when connecting.
pub fn amqp_url(s: &str) -> Result<crate::broker::BrokerUrls, String> {
    crate::broker::BrokerUrls::parse(s)
}

/// `DATABASE_URL`: parses as sqlx will parse it when connecting.
pub fn database_url(s: &str) -> Result<Secret, String> {
    sqlx::postgres::PgConnectOptions::from_str(s)
        .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
    Ok(Secret::new(s))
}

/// `STRIPE_WEBHOOK_SECRET`: one or more endpoint secrets, none empty.
pub fn webhook_secrets(s: &str) -> Result<stripe_webhook_signature::Secrets, String> {
    stripe_webhook_signature::Secrets::parse_list(s).map_err(|e| e.to_string())
}

/// `STRIPE_API_KEY`: a secret or restricted key; its `Debug` hides it.
pub fn stripe_api_key(s: &str) -> Result<stripe_api::ApiKey, String> {
    stripe_api::ApiKey::new(s)
}

/// `STRIPE_API_BASE`: https, or plain http to a loopback address (a
/// stand-in): the key is sent with every request.
pub fn stripe_api_base(s: &str) -> Result<stripe_api::ApiBase, String> {
    stripe_api::ApiBase::parse(s)
}

/// `STRIPE_API_VERSION`: what Stripe reads from `Stripe-Version`.
pub fn stripe_api_version(s: &str) -> Result<String, String> {
    let date = s.split('.').next().unwrap_or("");
    let shaped = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped || s.chars().any(char::is_whitespace) {
        return Err("must be a Stripe API version such as 2026-07-29.dahlia".into());
    }
    Ok(s.to_owned())
}

/// `STRIPE_API_RATE`: requests per second, positive (fractions allowed).
pub fn stripe_api_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000.0 => Ok(rate),
        _ => Err("must be a number of requests per second above 0 (at most 10000)".into()),
    }
}

/// `CUSTOM_PAYMENT_SECRET`: one or more secrets, none empty (the same rule
/// as the webhook's, in words about this setting).
pub fn custom_payment_secrets(s: &str) -> Result<stripe_webhook_signature::Secrets, String> {
    use stripe_webhook_signature::SecretsError;
    stripe_webhook_signature::Secrets::parse_list(s).map_err(|e| match e {
        SecretsError::Empty => "no secret given (unset it to turn the endpoint off)".to_owned(),
        SecretsError::EmptyEntry => "empty entry in the secret list".to_owned(),
    })
}

/// A secret given as is (e.g. the one `send-event` signs with).
pub fn secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// `RETRY_DELAYS`: growing, positive delay tiers.
pub fn retry_policy(s: &str) -> Result<RetryPolicy, String> {
    RetryPolicy::parse(s)
}

/// A size or count where 0 makes no sense (`T` is a `NonZero*` type).
pub fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match s.trim().parse::<i128>() {
        Ok(n) if n < 1 => Err("must be at least 1".into()),
        _ => s.trim().parse::<T>().map_err(|e| e.to_string()),
    }
}

/// `WORKER_PREFETCH`: AMQP reads 0 as "unlimited", never what is meant.
pub fn prefetch(s: &str) -> Result<std::num::NonZeroU16, String> {
    at_least_one(s).map_err(|e| format!("{e} (0 would mean unlimited)"))
}

/// `SIGNATURE_TOLERANCE_SECS`: 0 would disable replay protection.
pub fn tolerance(s: &str) -> Result<std::num::NonZeroU64, String> {
    at_least_one(s).map_err(|e| format!("{e} (0 would disable replay protection)"))
}

/// A positive duration with a unit (`ms`, `s`, `m`, `h`, `d`): the one
/// duration syntax of every setting.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = fulfillment_core::upkeep::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

/// `RETENTION_INTERVAL`: the job's loop must not spin.
pub fn interval(s: &str) -> Result<Duration, String> {
    let d = fulfillment_core::upkeep::parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(d)
}

/// A job that runs every so often, or not at all (`0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Off,
    Every(Duration),
}

impl Schedule {
    pub fn interval(self) -> Option<Duration> {
        match self {
            Schedule::Off => None,
            Schedule::Every(d) => Some(d),
        }
    }
}

/// `RECONCILE_INTERVAL`: a duration, or `0` for off.
pub fn schedule(s: &str) -> Result<Schedule, String> {
    // The contract's spelling of "off" is a bare 0, which has no unit.
    if s.trim() == "0" {
        return Ok(Schedule::Off);
    }
    let d = fulfillment_core::upkeep::parse_duration(s)?;
    if d.is_zero() {
        return Ok(Schedule::Off);
    }
    interval(s).map(Schedule::Every)
}

/// A moment in RFC 3339 (`2026-11-20T00:00:00Z`), as Unix seconds.
pub fn moment(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| "must be an RFC 3339 time such as 2026-11-20T00:00:00Z".into())
}

/// The end of a window: an RFC 3339 moment, or a duration ago (`2h`).
pub fn bound(s: &str) -> Result<fulfillment_core::reconcile::Bound, String> {
    use fulfillment_core::reconcile::Bound;
    moment(s).map(Bound::At).or_else(|_| {
        fulfillment_core::upkeep::parse_duration(s)
            .map(Bound::Ago)
            .map_err(|_| "must be an RFC 3339 time or a duration ago (e.g. 2h)".into())
    })
}

/// `RETENTION_DAYS`, `OUTBOX_RETENTION_DAYS`: positive days, fractions allowed.
pub fn days(s: &str) -> Result<Duration, String> {
    fulfillment_core::upkeep::parse_days(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn secrets_never_show_in_debug() {
        let s = amqp_url("amqp://user:hunter2@localhost:5672/%2f").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn url_errors_do_not_echo_the_value() {
        let e = amqp_url("http://user:hunter2@nowhere").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn zero_and_negative_sizes_are_refused_as_such() {
        assert_eq!(
            at_least_one::<NonZeroUsize>("0"),
            Err("must be at least 1".into())
        );
        assert_eq!(
            at_least_one::<NonZeroUsize>("-3"),
            Err("must be at least 1".into())
        );
        assert_eq!(
            at_least_one::<NonZeroUsize>("7"),
            Ok(NonZeroUsize::new(7).unwrap())
        );
        assert!(at_least_one::<NonZeroUsize>("seven").is_err());
    }

    #[test]
    fn reconcile_settings() {
        use fulfillment_core::reconcile::Bound;
        assert_eq!(schedule("0"), Ok(Schedule::Off));
        assert_eq!(schedule("0s"), Ok(Schedule::Off));
        assert_eq!(
            schedule("10m"),
            Ok(Schedule::Every(Duration::from_secs(600)))
        );
        assert!(schedule("1ms").is_err());
        assert_eq!(moment("1970-01-01T00:01:00Z"), Ok(60));
        assert_eq!(
            moment("2026-11-20T01:00:00+01:00"),
            moment("2026-11-20T00:00:00Z")
        );
        assert!(moment("yesterday").is_err());
        assert_eq!(bound("1970-01-01T00:00:10Z"), Ok(Bound::At(10)));
        assert_eq!(bound("2h"), Ok(Bound::Ago(Duration::from_secs(7200))));
        assert!(bound("soon").is_err());
    }

    #[test]
    fn stripe_settings() {
        let key = stripe_api_key("sk_live_hunter2").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
        assert!(stripe_api_key("").is_err());
        assert!(stripe_api_base("http://api.stripe.com").is_err());
        assert!(stripe_api_base("http://127.0.0.1:1234").is_ok());
        assert!(stripe_api_version("2026-07-29.dahlia").is_ok());
        assert!(stripe_api_version("2020-08-27").is_ok());
        assert!(stripe_api_version("latest").is_err());
        assert_eq!(stripe_api_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            assert!(stripe_api_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_share_one_syntax() {
        assert_eq!(positive_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(positive_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(positive_duration("0s").is_err());
        assert!(interval("5ms").is_err());
    }
}
