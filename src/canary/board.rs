//! What the canaries found, kept where the admin listener reads it ([`CanaryBoard`], in
//! [`crate::health::Health`]), and when a finding is worth a log line ([`Reporter`]). No I/O.

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;

use crate::filelink::Handle;

/// How often a canary that keeps failing the same way logs it again: the first failure is
/// logged at once, then every so often, so a log-based alert sees it without one line per
/// interval.
pub const REPEAT_EVERY: Duration = Duration::from_secs(600);

/// How one check ended: the `outcome` label of `signgate_canary_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx or 3xx: the CDN takes the route's signature.
    Ok,
    /// 401 or 403: the CDN refuses the route's signature (a secret changed on one side only, a
    /// clock far off, a policy it reads otherwise).
    Refused,
    /// Any other status (404: the handle is not there; 5xx: the CDN fails).
    HttpError,
    /// No connection, a TLS failure, or one that broke before an answer.
    Unreachable,
    /// No answer's head within the route's `response_timeout`.
    Timeout,
}

impl Outcome {
    /// Every outcome, in label order; the index is the discriminant.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::HttpError,
        Outcome::Unreachable,
        Outcome::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::HttpError => "http_error",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
        }
    }

    /// The outcome of an answer with `status`.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200..=399 => Outcome::Ok,
            401 | 403 => Outcome::Refused,
            _ => Outcome::HttpError,
        }
    }
}

/// One check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// Unix seconds, from the clock the credentials were signed with.
    pub at: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The answer's status, when there was an answer.
    pub status: Option<StatusCode>,
}

/// One route's canary as the admin listener shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryState {
    /// The route's `name`.
    pub route: String,
    /// `canary_handle`.
    pub handle: Handle,
    /// `canary_gates_readiness`.
    pub gates_readiness: bool,
    /// The last check, once there was one.
    pub last: Option<Check>,
}

/// Every running canary's last check, in config order; what `/readyz` and the status page read.
#[derive(Debug, Default)]
pub struct CanaryBoard {
    states: Mutex<Vec<CanaryState>>,
}

impl CanaryBoard {
    fn locked(&self) -> std::sync::MutexGuard<'_, Vec<CanaryState>> {
        // Nothing panics while holding it; a poisoned list is still a valid list.
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The canaries running from now on. One that watches the same route and handle as before
    /// keeps its last check until its next one replaces it.
    pub fn replace(&self, mut states: Vec<CanaryState>) {
        let mut locked = self.locked();
        for state in &mut states {
            state.last = locked
                .iter()
                .find(|old| old.route == state.route && old.handle == state.handle)
                .and_then(|old| old.last);
        }
        *locked = states;
    }

    /// Notes route `route`'s latest check.
    pub fn record(&self, route: &str, check: Check) {
        if let Some(state) = self.locked().iter_mut().find(|s| s.route == route) {
            state.last = Some(check);
        }
    }

    /// The first route whose canary gates readiness and whose last check was refused.
    pub fn refused_gate(&self) -> Option<String> {
        self.locked()
            .iter()
            .find(|s| s.gates_readiness && s.last.is_some_and(|c| c.outcome == Outcome::Refused))
            .map(|s| s.route.clone())
    }

    /// Every canary's state now.
    pub fn states(&self) -> Vec<CanaryState> {
        self.locked().clone()
    }
}

/// What a check changed that is worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The check passed after none had, or after failing for `after` seconds.
    Passing {
        /// How long the canary had been failing; `None` for its first check.
        after: Option<u64>,
    },
    /// The check failed with `outcome`: the first such failure in a row (`for_seconds` 0), or
    /// a reminder every [`REPEAT_EVERY`] while it goes on.
    Failing {
        /// How it failed.
        outcome: Outcome,
        /// Since when it has failed this way, in seconds.
        for_seconds: u64,
    },
}

/// Turns a canary's checks into log lines: one at each change of outcome, a reminder every
/// [`REPEAT_EVERY`] while it keeps failing the same way, and nothing while it passes.
#[derive(Debug, Default)]
pub struct Reporter {
    /// The last outcome, and since when it holds.
    current: Option<(Outcome, u64)>,
    /// When the last line about a failure was logged.
    logged_at: u64,
}

impl Reporter {
    /// Notes a check ending in `outcome` at `at`; returns what to log, if anything.
    pub fn note(&mut self, outcome: Outcome, at: u64) -> Option<Note> {
        let previous = self.current;
        let since = match previous {
            Some((last, since)) if last == outcome => since,
            _ => at,
        };
        self.current = Some((outcome, since));
        match (outcome, previous) {
            (Outcome::Ok, Some((Outcome::Ok, _))) => None,
            (Outcome::Ok, None) => Some(Note::Passing { after: None }),
            (Outcome::Ok, Some((_, failing_since))) => Some(Note::Passing {
                after: Some(at.saturating_sub(failing_since)),
            }),
            (failure, _) => {
                let changed = previous.is_none_or(|(last, _)| last != failure);
                if changed || at.saturating_sub(self.logged_at) >= REPEAT_EVERY.as_secs() {
                    self.logged_at = at;
                    Some(Note::Failing {
                        outcome: failure,
                        for_seconds: at.saturating_sub(since),
                    })
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";

    #[test]
    fn statuses_map_to_outcomes_and_a_refusal_is_only_401_or_403() {
        for (status, outcome) in [
            (200, Outcome::Ok),
            (206, Outcome::Ok),
            (302, Outcome::Ok),
            (401, Outcome::Refused),
            (403, Outcome::Refused),
            (404, Outcome::HttpError),
            (405, Outcome::HttpError),
            (429, Outcome::HttpError),
            (500, Outcome::HttpError),
            (503, Outcome::HttpError),
        ] {
            let status = StatusCode::from_u16(status).expect("a status");
            assert_eq!(Outcome::of_status(status), outcome, "{status}");
        }
        for (index, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index);
        }
    }

    #[test]
    fn a_failure_is_logged_when_it_starts_then_every_ten_minutes_and_its_end_once() {
        let mut reporter = Reporter::default();
        let t = 1_800_000_000;
        assert_eq!(
            reporter.note(Outcome::Ok, t),
            Some(Note::Passing { after: None })
        );
        assert_eq!(reporter.note(Outcome::Ok, t + 1), None);
        let refused = |for_seconds| {
            Some(Note::Failing {
                outcome: Outcome::Refused,
                for_seconds,
            })
        };
        assert_eq!(reporter.note(Outcome::Refused, t + 2), refused(0));
        for second in 3..602 {
            assert_eq!(
                reporter.note(Outcome::Refused, t + second),
                None,
                "{second}"
            );
        }
        assert_eq!(reporter.note(Outcome::Refused, t + 602), refused(600));
        assert_eq!(reporter.note(Outcome::Refused, t + 603), None);
        // Another way of failing is a change: logged at once.
        assert_eq!(
            reporter.note(Outcome::Timeout, t + 604),
            Some(Note::Failing {
                outcome: Outcome::Timeout,
                for_seconds: 0
            })
        );
        assert_eq!(
            reporter.note(Outcome::Ok, t + 610),
            Some(Note::Passing { after: Some(6) })
        );
        assert_eq!(reporter.note(Outcome::Ok, t + 611), None);
    }

    fn state(route: &str, gates: bool) -> CanaryState {
        CanaryState {
            route: route.to_owned(),
            handle: Handle::parse(H).expect("a handle"),
            gates_readiness: gates,
            last: None,
        }
    }

    fn check(outcome: Outcome) -> Check {
        Check {
            at: 1,
            outcome,
            status: None,
        }
    }

    #[test]
    fn only_a_refusal_on_a_gating_canary_names_a_route_and_a_pass_clears_it() {
        let board = CanaryBoard::default();
        board.replace(vec![state("quiet", false), state("gate", true)]);
        assert_eq!(board.refused_gate(), None);
        board.record("quiet", check(Outcome::Refused));
        board.record("gate", check(Outcome::Unreachable));
        assert_eq!(board.refused_gate(), None);
        board.record("gate", check(Outcome::Refused));
        assert_eq!(board.refused_gate().as_deref(), Some("gate"));
        // A reload keeping the canary keeps its finding until the next check.
        board.replace(vec![state("gate", true)]);
        assert_eq!(board.refused_gate().as_deref(), Some("gate"));
        board.record("gate", check(Outcome::Ok));
        assert_eq!(board.refused_gate(), None);
        board.record("gate", check(Outcome::Refused));
        // One that stops gating, or goes, no longer holds readiness back.
        board.replace(vec![state("gate", false)]);
        assert_eq!(board.refused_gate(), None);
        board.replace(Vec::new());
        assert!(board.states().is_empty());
    }
}
