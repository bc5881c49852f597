//! Restart policy as values: whether an ended container is restarted, after how long, and when
//! the restart count starts over. Pure functions of the spec's `[restart]` table; no clock, no
//! randomness (the caller passes the jitter), no I/O. The planner (`plan.rs`) decides with them;
//! the daemon calls [`consecutive_after_run`] when a container exits.

use std::time::Duration;

use crate::runtime::protocol::ExitStatus;
use crate::spec::{RestartPolicy, RestartSpec};

/// The random part of a backoff delay is at most this fraction of the exponential delay.
pub const JITTER_FRACTION: f64 = 0.1;

/// Whether `policy` restarts a container that ended with `status`; `None` means starting it
/// failed (missing image, bad command...), which counts as a failure.
///
/// `always` restarts on anything, `on-failure` on a non-zero exit code, a signal or a failed
/// start, `never` on nothing.
pub fn should_restart(policy: RestartPolicy, status: Option<ExitStatus>) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !matches!(status, Some(ExitStatus::Code(0))),
    }
}

/// The delay before restart number `restarts + 1` (`restarts` = consecutive restarts so far).
///
/// `initial * 2^restarts`, plus `jitter * 10%` of that, capped at `max`. `jitter` is expected in
/// [0, 1) and is clamped into it (NaN counts as 0). `initial = 0` gives a zero delay for every
/// restart.
pub fn backoff(restart: &RestartSpec, restarts: u32, jitter: f64) -> Duration {
    let max = restart.backoff_max;
    if restart.backoff_initial.is_zero() {
        return Duration::ZERO;
    }
    // Past 2^31, or past Duration's range, the product only saturates at max.
    let base = 1u32
        .checked_shl(restarts)
        .and_then(|factor| restart.backoff_initial.checked_mul(factor))
        .map_or(max, |d| d.min(max));
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let extra = base.mul_f64(JITTER_FRACTION * jitter);
    base.saturating_add(extra).min(max)
}

/// Whether the container has used up its retries: `max_retries > 0` (0 = unlimited) and
/// `restarts >= max_retries`.
pub fn gives_up(restart: &RestartSpec, restarts: u32) -> bool {
    restart.max_retries > 0 && restarts >= restart.max_retries
}

/// The consecutive restart count to keep after an instance ran for `ran_for`: 0 when it ran at
/// least `reset_after` (it was healthy; the backoff starts over), else `restarts` unchanged.
pub fn consecutive_after_run(restart: &RestartSpec, restarts: u32, ran_for: Duration) -> u32 {
    if ran_for >= restart.backoff_reset_after {
        0
    } else {
        restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(initial_ms: u64, max_ms: u64, max_retries: u32) -> RestartSpec {
        RestartSpec {
            policy: RestartPolicy::Always,
            max_retries,
            backoff_initial: Duration::from_millis(initial_ms),
            backoff_max: Duration::from_millis(max_ms),
            backoff_reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn should_restart_table() {
        use ExitStatus::{Code, Signal};
        use RestartPolicy::{Always, Never, OnFailure};
        let cases: &[(RestartPolicy, Option<ExitStatus>, bool)] = &[
            (Always, Some(Code(0)), true),
            (Always, Some(Code(1)), true),
            (Always, Some(Signal(9)), true),
            (Always, None, true),
            (OnFailure, Some(Code(0)), false),
            (OnFailure, Some(Code(1)), true),
            (OnFailure, Some(Code(255)), true),
            (OnFailure, Some(Signal(15)), true),
            (OnFailure, Some(Signal(9)), true),
            (OnFailure, None, true),
            (Never, Some(Code(0)), false),
            (Never, Some(Code(1)), false),
            (Never, Some(Signal(9)), false),
            (Never, None, false),
        ];
        for &(policy, status, want) in cases {
            assert_eq!(
                should_restart(policy, status),
                want,
                "{policy:?} {status:?}"
            );
        }
    }

    #[test]
    fn backoff_curve_without_jitter() {
        let r = spec(100, 30_000, 0);
        let want_ms = [
            100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000,
        ];
        for (n, &ms) in want_ms.iter().enumerate() {
            assert_eq!(
                backoff(&r, n as u32, 0.0),
                Duration::from_millis(ms),
                "restart {n}"
            );
        }
    }

    #[test]
    fn backoff_jitter_stays_within_ten_percent_and_max() {
        let r = spec(100, 30_000, 0);
        for n in 0..40u32 {
            let base = backoff(&r, n, 0.0);
            let jittered = backoff(&r, n, 0.99);
            assert!(jittered >= base, "restart {n}: {jittered:?} < {base:?}");
            assert!(
                jittered <= base.mul_f64(1.0 + JITTER_FRACTION),
                "restart {n}: {jittered:?} more than 10% over {base:?}"
            );
            assert!(jittered <= r.backoff_max, "restart {n}: {jittered:?}");
            if base < r.backoff_max {
                assert!(jittered > base, "restart {n}: jitter had no effect");
            }
        }
        assert_eq!(backoff(&r, 0, 0.99), Duration::from_micros(109_900));
        assert_eq!(backoff(&r, 9, 0.99), Duration::from_secs(30));
    }

    #[test]
    fn backoff_edge_cases() {
        // initial = 0: every restart is immediate, whatever the jitter.
        let zero = spec(0, 30_000, 0);
        for n in [0, 1, 5, 31, 32, 100, u32::MAX] {
            assert_eq!(backoff(&zero, n, 0.0), Duration::ZERO);
            assert_eq!(backoff(&zero, n, 0.99), Duration::ZERO);
        }
        // Huge restart counts saturate at max instead of overflowing.
        let r = spec(100, 30_000, 0);
        for n in [31, 32, 64, u32::MAX] {
            assert_eq!(backoff(&r, n, 0.5), Duration::from_secs(30));
        }
        // Out-of-range jitter is clamped.
        assert_eq!(backoff(&r, 0, -1.0), Duration::from_millis(100));
        assert_eq!(backoff(&r, 0, f64::NAN), Duration::from_millis(100));
        assert_eq!(backoff(&r, 0, 7.0), Duration::from_millis(110));
        // max below initial: max wins.
        let low = spec(500, 200, 0);
        assert_eq!(backoff(&low, 0, 0.0), Duration::from_millis(200));
    }

    #[test]
    fn gives_up_table() {
        let cases: &[(u32, u32, bool)] = &[
            (0, 0, false),
            (0, 1_000_000, false),
            (3, 0, false),
            (3, 2, false),
            (3, 3, true),
            (3, 4, true),
            (1, 0, false),
            (1, 1, true),
        ];
        for &(max_retries, restarts, want) in cases {
            let r = spec(100, 30_000, max_retries);
            assert_eq!(gives_up(&r, restarts), want, "{max_retries} {restarts}");
        }
    }

    #[test]
    fn consecutive_after_run_table() {
        let r = spec(100, 30_000, 0); // reset_after = 60s
        let cases: &[(u32, u64, u32)] =
            &[(0, 0, 0), (5, 0, 5), (5, 59, 5), (5, 60, 0), (5, 3_600, 0)];
        for &(restarts, secs, want) in cases {
            assert_eq!(
                consecutive_after_run(&r, restarts, Duration::from_secs(secs)),
                want,
                "{restarts} after {secs}s"
            );
        }
    }
}
