//! A container's health as data: what one probe result does to it. Pure, table-tested; the
//! daemon runs the probes and the planner acts on the result (see `plan.rs`).

use std::time::Duration;

use crate::spec::HealthSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No probe has succeeded yet (and not enough have failed).
    Starting,
    Healthy,
    /// `retries` consecutive probes failed.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// The health of one running instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    pub status: Health,
    /// Consecutive failures that counted.
    pub failures: u32,
    /// What the last probe said (status line, error, or the exec probe's output).
    pub last_output: String,
}

impl HealthState {
    pub fn new() -> HealthState {
        HealthState {
            status: Health::Starting,
            failures: 0,
            last_output: String::new(),
        }
    }
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

/// The health after one probe that succeeded or not, `since_start` after the instance
/// started. A success makes it healthy and ends the start period; a failure within the start
/// period before any success does not count; otherwise `retries` consecutive failures make it
/// unhealthy.
pub fn after_probe(
    state: &HealthState,
    spec: &HealthSpec,
    ok: bool,
    output: String,
    since_start: Duration,
) -> HealthState {
    if ok {
        return HealthState {
            status: Health::Healthy,
            failures: 0,
            last_output: output,
        };
    }
    if state.status == Health::Starting && since_start < spec.start_period {
        return HealthState {
            last_output: output,
            ..state.clone()
        };
    }
    let failures = state.failures.saturating_add(1);
    HealthState {
        status: if failures >= spec.retries {
            Health::Unhealthy
        } else {
            state.status
        },
        failures,
        last_output: output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{OnUnhealthy, Probe};

    fn spec(retries: u32, start_period: u64) -> HealthSpec {
        HealthSpec {
            probe: Probe::Tcp { port: 1 },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(start_period),
            on_unhealthy: OnUnhealthy::Restart,
        }
    }

    /// Runs a sequence of (ok, seconds since start) and returns the statuses after each.
    fn run(spec: &HealthSpec, probes: &[(bool, u64)]) -> Vec<(Health, u32)> {
        let mut s = HealthState::new();
        probes
            .iter()
            .map(|(ok, at)| {
                s = after_probe(&s, spec, *ok, format!("{ok}"), Duration::from_secs(*at));
                (s.status, s.failures)
            })
            .collect()
    }

    /// What, the spec, the probes (ok, seconds since start), the (status, failures) after each.
    type Case = (
        &'static str,
        HealthSpec,
        Vec<(bool, u64)>,
        Vec<(Health, u32)>,
    );

    #[test]
    fn table() {
        use Health::*;
        let cases: Vec<Case> = vec![
            (
                "first success: healthy",
                spec(3, 0),
                vec![(true, 10)],
                vec![(Healthy, 0)],
            ),
            (
                "three failures from the start: unhealthy at the third",
                spec(3, 0),
                vec![(false, 10), (false, 20), (false, 30)],
                vec![(Starting, 1), (Starting, 2), (Unhealthy, 3)],
            ),
            (
                "a success resets the count",
                spec(3, 0),
                vec![
                    (false, 10),
                    (false, 20),
                    (true, 30),
                    (false, 40),
                    (false, 50),
                ],
                vec![
                    (Starting, 1),
                    (Starting, 2),
                    (Healthy, 0),
                    (Healthy, 1),
                    (Healthy, 2),
                ],
            ),
            (
                "healthy, then retries failures: unhealthy",
                spec(2, 0),
                vec![(true, 10), (false, 20), (false, 30)],
                vec![(Healthy, 0), (Healthy, 1), (Unhealthy, 2)],
            ),
            (
                "failures in the start period do not count",
                spec(1, 30),
                vec![(false, 10), (false, 20), (false, 30)],
                vec![(Starting, 0), (Starting, 0), (Unhealthy, 1)],
            ),
            (
                "the first success ends the start period",
                spec(1, 60),
                vec![(true, 10), (false, 20)],
                vec![(Healthy, 0), (Unhealthy, 1)],
            ),
            (
                "unhealthy recovers on a success",
                spec(1, 0),
                vec![(false, 10), (true, 20)],
                vec![(Unhealthy, 1), (Healthy, 0)],
            ),
        ];
        for (what, spec, probes, want) in cases {
            assert_eq!(run(&spec, &probes), want, "{what}");
        }
        let s = after_probe(
            &HealthState::new(),
            &spec(3, 0),
            false,
            "connection refused".into(),
            Duration::from_secs(1),
        );
        assert_eq!(s.last_output, "connection refused");
    }
}
