//! Retry policies for activities.

use std::time::Duration;

/// How [`call_activity_with_retry`](crate::OrchestrationContext::call_activity_with_retry)
/// retries a failed activity. Delays are durable timers.
///
/// The delay before retry `n` (counting from 1) is
/// `first_interval * backoff_coefficient^(n-1)`, capped at `max_interval`.
///
/// ```
/// use std::time::Duration;
/// use durable_core::RetryPolicy;
///
/// let policy = RetryPolicy::new(4, Duration::from_secs(1))
///     .backoff_coefficient(2.0)
///     .max_interval(Duration::from_secs(3));
/// assert_eq!(policy.delay_before_retry(1), Some(Duration::from_secs(1)));
/// assert_eq!(policy.delay_before_retry(2), Some(Duration::from_secs(2)));
/// assert_eq!(policy.delay_before_retry(3), Some(Duration::from_secs(3)));
/// assert_eq!(policy.delay_before_retry(4), None); // four attempts made
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The number of attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay before the first retry.
    pub first_interval: Duration,
    /// The factor applied to the delay after each retry (at least 1.0).
    pub backoff_coefficient: f64,
    /// The longest delay between attempts.
    pub max_interval: Duration,
    /// Give up once this much orchestration time has passed since the first
    /// attempt.
    pub total_timeout: Option<Duration>,
}

impl RetryPolicy {
    /// `max_attempts` attempts with a fixed `first_interval` between them.
    pub fn new(max_attempts: u32, first_interval: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            first_interval,
            backoff_coefficient: 1.0,
            max_interval: Duration::from_secs(3600),
            total_timeout: None,
        }
    }

    /// The backoff coefficient (values below 1.0 are taken as 1.0).
    pub fn backoff_coefficient(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = if coefficient.is_finite() {
            coefficient.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The longest delay between attempts.
    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.max_interval = interval;
        self
    }

    /// The total time budget for all attempts.
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = Some(timeout);
        self
    }

    /// The delay after failed attempt `attempt` (from 1), or `None` if no
    /// attempt is left.
    pub fn delay_before_retry(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = self
            .backoff_coefficient
            .powi(i32::try_from(attempt - 1).unwrap_or(i32::MAX));
        let secs = self.first_interval.as_secs_f64() * factor;
        let delay = if secs.is_finite() && secs < self.max_interval.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max_interval
        };
        Some(delay)
    }
}
