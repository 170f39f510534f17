//! The wait between reconnection attempts: doubling from a minimum up to a maximum.

use std::time::Duration;

/// Exponential backoff: `min`, `2 × min`, `4 × min`, … capped at `max`; `reset` starts over.
#[derive(Debug, Clone)]
// The client starts a new backoff per outage; only the Redis layer resets one and logs its
// next wait.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// The wait the next call to [`next_wait`](Self::next_wait) returns.
    pub(crate) fn upcoming(&self) -> Duration {
        self.next
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// After a success: the next wait is the minimum again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_starts_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(50), ms(300));
        let waits: Vec<_> = (0..5).map(|_| backoff.next_wait()).collect();
        assert_eq!(waits, [ms(50), ms(100), ms(200), ms(300), ms(300)]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), ms(50));
    }
}
