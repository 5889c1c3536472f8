//! Recovering events webhooks missed (pure): which time window a reconcile
//! run lists from Stripe's Events API, and which of the listed events it
//! publishes, in which order.
//!
//! Stripe lists events newest first. A run walks every page that way (a
//! walk with `starting_after` is stable while new events arrive: they come
//! before the cursor), sets aside the events we never took in, and
//! publishes them oldest first, as Stripe's guide asks, so intermediate
//! messages come out in the order the events happened.

use std::collections::HashSet;
use std::time::Duration;

/// Stripe's Events API keeps events for 30 days.
pub const EVENTS_KEPT_SECS: i64 = 30 * 86_400;

/// Events one run holds for publishing, at most. Past it the run stops
/// listing and publishes what it holds (the newest part of the window);
/// those are known the next time, so the next run reaches further back.
pub const MAX_TO_RECOVER_PER_RUN: usize = 10_000;

/// One end of a window: some time ago, or a moment (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Ago(Duration),
    At(i64),
}

impl Bound {
    fn resolve(self, now: i64) -> i64 {
        match self {
            Bound::Ago(d) => now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Bound::At(t) => t,
        }
    }
}

/// Events created in `[from, until]` (Unix seconds; `until` open if `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub until: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the window is empty: its end ({until}) is not after its start ({from})")]
    Empty { from: i64, until: i64 },
}

impl Window {
    pub fn new(now: i64, from: Bound, until: Option<Bound>) -> Result<Window, WindowError> {
        let from = from.resolve(now);
        let until = until.map(|u| u.resolve(now));
        if let Some(until) = until
            && until <= from
        {
            return Err(WindowError::Empty { from, until });
        }
        Ok(Window { from, until })
    }

    /// True when part of the window is older than Stripe keeps events:
    /// that part can only come back empty.
    pub fn reaches_past_retention(&self, now: i64) -> bool {
        self.from < now.saturating_sub(EVENTS_KEPT_SECS)
    }
}

/// The events of one run, sorted into "to publish" and "already known" as
/// the pages come in.
#[derive(Debug)]
pub struct Recovery<T> {
    seen: HashSet<String>,
    /// Newest first, as listed.
    to_publish: Vec<T>,
    known: Vec<String>,
}

impl<T> Default for Recovery<T> {
    fn default() -> Self {
        Recovery {
            seen: HashSet::new(),
            to_publish: Vec::new(),
            known: Vec::new(),
        }
    }
}

impl<T> Recovery<T> {
    /// Takes one page (newest first); `is_known` says whether an event id
    /// was ever taken in. An id listed twice counts once.
    pub fn add_page(
        &mut self,
        page: Vec<T>,
        id: impl Fn(&T) -> &str,
        is_known: impl Fn(&str) -> bool,
    ) {
        for event in page {
            let event_id = id(&event);
            if !self.seen.insert(event_id.to_owned()) {
                continue;
            }
            if is_known(event_id) {
                self.known.push(event_id.to_owned());
            } else {
                self.to_publish.push(event);
            }
        }
    }

    /// True once the run holds as many events as it may.
    pub fn is_full(&self) -> bool {
        self.to_publish.len() >= MAX_TO_RECOVER_PER_RUN
    }

    /// The events to publish, oldest first, and the ids already known
    /// (oldest first too).
    pub fn finish(self) -> (Vec<T>, Vec<String>) {
        let mut to_publish = self.to_publish;
        let mut known = self.known;
        to_publish.reverse();
        known.reverse();
        (to_publish, known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn windows_from_durations_and_moments() {
        let hours = |h: u64| Bound::Ago(Duration::from_secs(h * 3600));
        let w = Window::new(NOW, hours(74), None).unwrap();
        assert_eq!(
            w,
            Window {
                from: NOW - 74 * 3600,
                until: None
            }
        );
        assert!(!w.reaches_past_retention(NOW));
        let w = Window::new(NOW, Bound::At(NOW - 100), Some(hours(0))).unwrap();
        assert_eq!(w.until, Some(NOW));
        assert!(Window::new(NOW, hours(1), Some(hours(2))).is_err());
        assert!(Window::new(NOW, Bound::At(5), Some(Bound::At(5))).is_err());
        assert!(
            Window::new(NOW, hours(31 * 24), None)
                .unwrap()
                .reaches_past_retention(NOW)
        );
        // Absurd durations saturate instead of overflowing.
        assert!(Window::new(NOW, Bound::Ago(Duration::MAX), None).is_ok());
    }

    #[test]
    fn unknown_events_come_out_oldest_first_and_once() {
        let mut r = Recovery::default();
        let page = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let known = |id: &str| id == "evt_4" || id == "evt_1";
        r.add_page(page(&["evt_6", "evt_5", "evt_4"]), String::as_str, known);
        r.add_page(
            page(&["evt_4", "evt_3", "evt_2", "evt_1"]),
            String::as_str,
            known,
        );
        let (to_publish, known) = r.finish();
        assert_eq!(to_publish, ["evt_2", "evt_3", "evt_5", "evt_6"]);
        assert_eq!(known, ["evt_1", "evt_4"]);
    }

    proptest::proptest! {
        /// Whatever the pages and the known set: every listed id lands on
        /// exactly one side, once, and what is published is in the reverse
        /// of the listing order (oldest first).
        #[test]
        fn every_listed_event_is_published_or_known_exactly_once(
            pages in proptest::collection::vec(proptest::collection::vec(0u8..40, 0..12), 0..6),
            known in proptest::collection::hash_set(0u8..40, 0..20),
        ) {
            let mut recovery = Recovery::default();
            let ids: Vec<Vec<String>> = pages
                .iter()
                .map(|p| p.iter().map(|n| format!("evt_{n}")).collect())
                .collect();
            for page in ids.clone() {
                recovery.add_page(page, String::as_str, |id| {
                    known.contains(&id[4..].parse::<u8>().unwrap())
                });
            }
            let (to_publish, known_ids) = recovery.finish();
            let mut listed_once: Vec<String> = Vec::new();
            for id in ids.into_iter().flatten() {
                if !listed_once.contains(&id) {
                    listed_once.push(id);
                }
            }
            let mut expected: Vec<String> = listed_once
                .iter()
                .filter(|id| !known.contains(&id[4..].parse::<u8>().unwrap()))
                .cloned()
                .collect();
            expected.reverse();
            proptest::prop_assert_eq!(&to_publish, &expected);
            proptest::prop_assert_eq!(to_publish.len() + known_ids.len(), listed_once.len());
        }
    }
}
