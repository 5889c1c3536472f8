//! A log line that cannot be flooded: whoever sends us many bad requests
//! gets one line per period, with the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Logs at most one line per `every`, carrying how many events it stands for.
pub struct ThrottledLog {
    every: Duration,
    started: Instant,
    /// Milliseconds since `started` when the last line was written, plus one
    /// (0 = never).
    last_ms: AtomicU64,
    pending: AtomicU64,
}

impl ThrottledLog {
    pub fn new(every: Duration) -> ThrottledLog {
        ThrottledLog {
            every,
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one event; calls `log` with the count since the last line when
    /// a line is due.
    pub fn note(&self, log: impl FnOnce(u64)) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64;
        // Only the caller that wins the swap writes the line.
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            log(self.pending.swap(0, Ordering::AcqRel));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_log_writes_one_line_per_period_with_the_count() {
        let log = ThrottledLog::new(Duration::from_secs(3600));
        let mut lines = Vec::new();
        for _ in 0..1000 {
            log.note(|n| lines.push(n));
        }
        assert_eq!(
            lines,
            vec![1],
            "the first event is logged at once, the rest wait"
        );

        let log = ThrottledLog::new(Duration::ZERO);
        let mut lines = Vec::new();
        log.note(|n| lines.push(n));
        std::thread::sleep(Duration::from_millis(2));
        log.note(|n| lines.push(n));
        assert_eq!(lines, vec![1, 1]);
    }
}
