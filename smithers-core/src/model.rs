//! The domain model: the plain values every layer speaks — statuses of runs, nodes, approvals,
//! phases and steps, node keys, loop state, token usage and timestamps.
//!
//! **Architecture Invariant:** this module is a leaf. It imports nothing from the crate (only
//! `std` and serde), so the planner, the decision core, the store and the events all depend on
//! it and it depends on none of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `(node id, iteration)`: what identifies one execution slot of a node.
pub type NodeKey = (String, u32);

/// The hasher of the in-memory maps keyed by node ids (FxHash): several times faster than the
/// default SipHash on short keys, which matters when a run of 100 000 nodes is loaded. Ids come
/// from the workflow's own code, not from an adversary, so no flood-resistant hash is needed.
pub type FastHash = rustc_hash::FxBuildHasher;

/// A map keyed by node ids (or other short keys), hashed with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;

/// Node states by node id, then iteration.
pub type NodeStates = FastMap<String, FastMap<u32, NodeState>>;

/// Declares an enum whose values are stored by name, from one table: each variant's stored name
/// is also its serde name (`#[serde(rename)]`), and `as_str`, `parse` and `ALL` are generated
/// from the same table, so the names a database holds and the names JSON carries cannot drift
/// apart.
macro_rules! stored_names {
    (
        $(#[$attr:meta])*
        pub enum $name:ident {
            $( $(#[$variant_attr:meta])* $variant:ident = $stored:literal, )+
        }
    ) => {
        $(#[$attr])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $( $(#[$variant_attr])* #[serde(rename = $stored)] $variant, )+
        }

        impl $crate::model::StoredName for $name {
            fn parse_stored(s: &str) -> Option<Self> {
                $name::parse(s)
            }

            fn stored_names() -> impl Iterator<Item = &'static str> {
                $name::ALL.iter().map(|v| v.as_str())
            }
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name (also the serde name).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $stored, )+
                }
            }

            #[doc = concat!("Parses [`", stringify!($name), "::as_str`]; `None` for any other text.")]
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $stored => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use stored_names;

/// A type kept in the store by name ([`stored_names!`] implements it), so a row mapping can
/// read the name back or say which names the column may hold.
pub(crate) trait StoredName: Sized {
    /// The value of a stored name; `None` for any other text.
    fn parse_stored(s: &str) -> Option<Self>;
    /// Every stored name, in declaration order.
    fn stored_names() -> impl Iterator<Item = &'static str>;
}

stored_names! {
    /// Status of a run.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum RunStatus {
        /// Being driven (or its driver died: see the lease).
        Running = "running",
        /// Every node is terminal.
        Finished = "finished",
        /// A node failed.
        Failed = "failed",
        /// Stopped by the user; `resume` continues.
        Cancelled = "cancelled",
        /// Parked on a node that needs approval.
        WaitingApproval = "waiting-approval",
        /// Parked on an exceeded budget (`<Workflow on_budget=Park>`): `smithers budget RUN --add ..`
        /// then `resume`.
        WaitingBudget = "waiting-budget",
        /// Waiting for a `worker` to drive it, with no lease: created by `run --detach`, or handed
        /// back by a worker that stopped (SIGTERM) in the middle of it.
        Queued = "queued",
    }
}

impl RunStatus {
    /// Whether the run stopped for good or until a `resume`: finished, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Finished | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

stored_names! {
    /// State of one node in one iteration.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum NodeStatus {
        /// Not started, or waiting for its next attempt.
        Pending = "pending",
        /// An attempt is in progress.
        Running = "running",
        /// Has its output.
        Finished = "finished",
        /// Skipped by `skip_if`.
        Skipped = "skipped",
        /// Failed for good.
        Failed = "failed",
    }
}

stored_names! {
    /// The state of an approval request.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ApprovalStatus {
        /// Waiting for a decision.
        Pending = "pending",
        /// The task may run.
        Approved = "approved",
        /// The task fails (or is passed over with `continue_on_fail`).
        Denied = "denied",
    }
}

stored_names! {
    /// Which kind of named group.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum GroupKind {
        /// `<Phase>`.
        Phase = "phase",
        /// `<Step>`.
        Step = "step",
    }
}

stored_names! {
    /// Where a phase or step stands, as of this render.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum GroupStatus {
        /// Mounted but not reached yet (a later step of the active phase).
        Pending = "pending",
        /// Mounted with work left.
        Running = "running",
        /// Every task in it is terminal.
        Completed = "completed",
        /// A task in it failed.
        Failed = "failed",
        /// `skip_if` was true.
        Skipped = "skipped",
    }
}

/// Persisted state of one Ralph loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopState {
    /// The current iteration (monotone over the run, also across passes of a nested loop).
    pub iteration: u32,
    /// The iteration at which the current pass started.
    pub pass_start: u32,
    /// The enclosing loop's iteration this pass belongs to.
    pub parent_iteration: u32,
    /// The current pass has completed.
    pub done: bool,
}

/// The state of a node in one iteration, as the planner and the decision core see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// Status.
    pub status: NodeStatus,
    /// Attempts started (including ones cancelled or abandoned by a dead process).
    pub attempts: u32,
    /// Attempts that failed: what `retries` is counted against.
    pub failures: u32,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
}

/// Token usage and cost of one attempt, as reported by the tool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: Option<u64>,
    /// Tokens written to the prompt cache.
    pub cache_write_tokens: Option<u64>,
    /// Cost in US dollars, when the tool reports it.
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Adds `other` into `self`; a figure stays `None` until some attempt reports it.
    pub fn add(&mut self, other: &Usage) {
        fn sum(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        }
        sum(&mut self.input_tokens, other.input_tokens);
        sum(&mut self.output_tokens, other.output_tokens);
        sum(&mut self.cache_read_tokens, other.cache_read_tokens);
        sum(&mut self.cache_write_tokens, other.cache_write_tokens);
        if let Some(c) = other.cost_usd {
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + c);
        }
    }
}

/// An instant, in milliseconds since the Unix epoch (UTC). Shown, stored and serialised as
/// RFC 3339 (`2026-11-25T06:08:03.123Z`); where it comes from (the system clock or a test
/// clock) is the caller's business: this type never reads a clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self` moved on by `d` (saturating).
    #[must_use]
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Parses RFC 3339 UTC as written by [`Timestamp`]'s `Display` (`Z` suffix, optional
    /// fraction of a second); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = s.get(r)?;
            t.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| t.parse().ok())?
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let rest = s.get(19..)?.strip_suffix('Z')?;
        let millis = match rest.strip_prefix('.') {
            None if rest.is_empty() => 0,
            None => return None,
            Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
                let digits: String = f.chars().chain("000".chars()).take(3).collect();
                digits.parse().ok()?
            }
            Some(_) => return None,
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        // Days from civil (Howard Hinnant's algorithm).
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(Timestamp(
            ((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + millis,
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let mo = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = if mo <= 2 { y + 1 } else { y };
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{s}` is not an RFC 3339 UTC timestamp like 2026-11-25T06:08:03.123Z"
            ))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Each stored enum: its values and the names the databases hold for them. `parse` reads
    /// back every `as_str`, and serde writes and reads the same names, so a row written by the
    /// store and JSON written by `--json` or an event agree.
    pub(crate) fn check_stored_names<T>(
        all: &[T],
        names: &[&str],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) where
        T: Copy + PartialEq + fmt::Debug + Serialize + serde::de::DeserializeOwned,
    {
        let stored: Vec<&str> = all.iter().map(|&v| as_str(v)).collect();
        assert_eq!(
            stored, names,
            "the stored names changed: existing rows would no longer parse"
        );
        for &v in all {
            let name = as_str(v);
            assert_eq!(parse(name), Some(v), "`{name}` does not parse back");
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::Value::from(name),
                "serde name of {v:?}"
            );
            assert_eq!(
                serde_json::from_value::<T>(name.into()).unwrap(),
                v,
                "serde reads `{name}`"
            );
            assert_eq!(parse(&name.to_uppercase()), None, "names are exact");
        }
        assert_eq!(parse(""), None);
        assert_eq!(parse("no-such-status"), None);
    }

    #[test]
    fn every_stored_status_round_trips_and_its_serde_name_is_its_stored_name() {
        check_stored_names(
            RunStatus::ALL,
            &[
                "running",
                "finished",
                "failed",
                "cancelled",
                "waiting-approval",
                "waiting-budget",
                "queued",
            ],
            RunStatus::as_str,
            RunStatus::parse,
        );
        check_stored_names(
            NodeStatus::ALL,
            &["pending", "running", "finished", "skipped", "failed"],
            NodeStatus::as_str,
            NodeStatus::parse,
        );
        check_stored_names(
            ApprovalStatus::ALL,
            &["pending", "approved", "denied"],
            ApprovalStatus::as_str,
            ApprovalStatus::parse,
        );
        check_stored_names(
            GroupKind::ALL,
            &["phase", "step"],
            GroupKind::as_str,
            GroupKind::parse,
        );
        check_stored_names(
            GroupStatus::ALL,
            &["pending", "running", "completed", "failed", "skipped"],
            GroupStatus::as_str,
            GroupStatus::parse,
        );
        assert_eq!(RunStatus::WaitingApproval.to_string(), "waiting-approval");
    }

    #[test]
    fn timestamps_format_known_instants() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_586_883_123, "2026-11-25T06:08:03.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(Timestamp::from_millis(ms).to_string(), text);
            assert_eq!(Timestamp::parse(text), Some(Timestamp::from_millis(ms)));
        }
    }

    #[test]
    fn timestamps_parse_without_fraction_and_refuse_other_forms() {
        assert_eq!(
            Timestamp::parse("2026-11-25T06:08:03Z"),
            Some(Timestamp::from_millis(1_795_586_883_000))
        );
        assert_eq!(
            Timestamp::parse("2026-11-25T06:08:03.1Z"),
            Some(Timestamp::from_millis(1_795_586_883_100))
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T06:08:03",
            "2026-11-25T06:08:03+01:00",
            "2026-13-25T06:08:03Z",
            "2026-11-25T06:08:03.Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }
}
