//! An AgentDeployment's budget, as pure arithmetic: the window it counts over, what its
//! routers' readings add to the window's usage, how the free budget is leased to them, and
//! whether the window is spent. The calls to the routers are in `lease`.
//!
//! The one invariant: the window's usage plus every pod's room (its allowance less its
//! usage) never exceeds the limit. Readings only move room into usage; a lowering only
//! shrinks room; an addition is taken from what the invariant leaves free. So the pods can
//! never together spend more than the limit, however their load is spread, while the
//! operator is down, or between two leases; the only excess is what a provider reports
//! beyond a request's reservation, and what a pod that vanished spent after its last reading.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

use crate::api::budget::{
    AgentBudget, AgentBudgetStatus, BudgetPeriod, BudgetWindow, LeasedLimits, PodLease,
    RouterCounters, format_amount, parse_amount,
};
use crate::resources::budget_lease::{Grant, GrantMode, LeaseReading};
use crate::resources::usage_report::Tally;

/// The span of time a budget counts over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The window `now` falls in: from the midnight that starts its day, week (Monday) or month
/// in the budget's time zone, to the one that starts the next. Daylight saving time makes
/// some days 23 or 25 hours long, as the people who set the budget live them.
pub fn window(spec: &BudgetWindow, now: Timestamp) -> Result<Window, String> {
    let zone = TimeZone::get(&spec.time_zone).map_err(|_| {
        format!(
            "spec.budget.window.timeZone {:?} is not a time zone the operator knows: use an IANA name such as UTC, Europe/Paris or America/New_York",
            spec.time_zone
        )
    })?;
    let calendar = |error: jiff::Error| format!("cannot compute the budget window: {error}");
    let local: Zoned = now.to_zoned(zone);
    let day = local.start_of_day().map_err(calendar)?;
    let start = match spec.period {
        BudgetPeriod::Day => day,
        BudgetPeriod::Week => {
            let back = i64::from(local.weekday().to_monday_zero_offset());
            day.checked_sub(back.days())
                .and_then(|z| z.start_of_day())
                .map_err(calendar)?
        }
        BudgetPeriod::Month => local
            .first_of_month()
            .and_then(|z| z.start_of_day())
            .map_err(calendar)?,
    };
    let length = match spec.period {
        BudgetPeriod::Day => 1.day(),
        BudgetPeriod::Week => 1.week(),
        BudgetPeriod::Month => 1.month(),
    };
    let end = start
        .checked_add(length)
        .and_then(|z| z.start_of_day())
        .map_err(calendar)?;
    Ok(Window {
        start: start.timestamp(),
        end: end.timestamp(),
    })
}

/// Tokens and cost together: what the limits, usage and room are counted in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    pub tokens: u64,
    pub cost_nanos: u64,
}

impl Amount {
    fn saturating_sub(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_sub(other.tokens),
            cost_nanos: self.cost_nanos.saturating_sub(other.cost_nanos),
        }
    }

    fn saturating_add(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_add(other.tokens),
            cost_nanos: self.cost_nanos.saturating_add(other.cost_nanos),
        }
    }

    fn min(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.min(other.tokens),
            cost_nanos: self.cost_nanos.min(other.cost_nanos),
        }
    }
}

/// The limits of a budget; an unset limit does not constrain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub tokens: Option<u64>,
    pub cost_nanos: Option<u64>,
    pub currency: String,
}

impl Limits {
    pub fn of(budget: &AgentBudget) -> Self {
        Self {
            tokens: budget.max_tokens.and_then(|n| u64::try_from(n).ok()),
            cost_nanos: budget.max_cost.as_deref().and_then(parse_amount),
            currency: budget.currency.clone(),
        }
    }

    /// Each limit, `u64::MAX` where there is none, so that it never binds.
    fn amount(&self) -> Amount {
        Amount {
            tokens: self.tokens.unwrap_or(u64::MAX),
            cost_nanos: self.cost_nanos.unwrap_or(u64::MAX),
        }
    }

    /// A grant of `room` in the dimensions this budget limits.
    pub fn grant(&self, mode: GrantMode, room: Amount) -> Grant {
        Grant {
            mode,
            tokens: self.tokens.map(|_| room.tokens),
            cost_nanos: self.cost_nanos.map(|_| room.cost_nanos),
            currency: self.currency.clone(),
        }
    }
}

/// One running pod's router, as this round knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodAccount {
    pod: String,
    /// Its counters, as far as they are in the window's usage.
    counted: Tally,
    /// Its allowance, in counter values.
    granted: Amount,
    /// What it may still spend: `granted` less its counters.
    room: Amount,
    /// What the last readings added, to share the free budget by load.
    recent_tokens: u64,
    reached: bool,
    /// Being deleted: it is read to the end, and gets no more room.
    stopping: bool,
    largest_refused: Amount,
}

/// The budget's books for one round.
#[derive(Clone, Debug)]
pub struct Accounts {
    limits: Limits,
    window: Window,
    usage: Tally,
    pods: Vec<PodAccount>,
    /// The last status found the window spent, and nothing has changed since.
    spent_before: bool,
}

fn tally_of(counters: &RouterCounters) -> Tally {
    let unsigned = |n: i64| u64::try_from(n).unwrap_or_default();
    Tally {
        requests: unsigned(counters.requests),
        input_tokens: unsigned(counters.input_tokens),
        cached_input_tokens: unsigned(counters.cached_input_tokens),
        output_tokens: unsigned(counters.output_tokens),
        cost_nanos: unsigned(counters.cost_nanos),
    }
}

fn counters_of(tally: &Tally) -> RouterCounters {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    RouterCounters {
        requests: signed(tally.requests),
        input_tokens: signed(tally.input_tokens),
        cached_input_tokens: signed(tally.cached_input_tokens),
        output_tokens: signed(tally.output_tokens),
        cost_nanos: signed(tally.cost_nanos),
    }
}

fn difference(later: &Tally, earlier: &Tally) -> Tally {
    Tally {
        requests: later.requests.saturating_sub(earlier.requests),
        input_tokens: later.input_tokens.saturating_sub(earlier.input_tokens),
        cached_input_tokens: later
            .cached_input_tokens
            .saturating_sub(earlier.cached_input_tokens),
        output_tokens: later.output_tokens.saturating_sub(earlier.output_tokens),
        cost_nanos: later.cost_nanos.saturating_sub(earlier.cost_nanos),
    }
}

impl Accounts {
    /// The books as the last status left them, for the pods running now: a new window starts
    /// from no usage, and a pod that is gone takes its room with it.
    pub fn open(
        limits: Limits,
        window: Window,
        previous: Option<&AgentBudgetStatus>,
        pods: &[String],
    ) -> Self {
        let same_window = previous.is_some_and(|p| p.window_start == window.start.to_string());
        let usage = match previous {
            Some(previous) if same_window => Tally {
                requests: u64::try_from(previous.usage.requests).unwrap_or_default(),
                input_tokens: u64::try_from(previous.usage.input_tokens).unwrap_or_default(),
                cached_input_tokens: u64::try_from(previous.usage.cached_input_tokens)
                    .unwrap_or_default(),
                output_tokens: u64::try_from(previous.usage.output_tokens).unwrap_or_default(),
                cost_nanos: u64::try_from(previous.cost_nanos).unwrap_or_default(),
            },
            _ => Tally::default(),
        };
        let pods = pods
            .iter()
            .map(|pod| {
                let lease = previous.and_then(|p| p.leases.iter().find(|l| &l.pod == pod));
                let counted = lease.map(|l| tally_of(&l.counted)).unwrap_or_default();
                let used = Amount {
                    tokens: counted.tokens(),
                    cost_nanos: counted.cost_nanos,
                };
                let limit = |value: Option<i64>| {
                    value.map_or(u64::MAX, |n| u64::try_from(n).unwrap_or_default())
                };
                let granted = lease.map_or(used, |l| Amount {
                    tokens: limit(l.granted.tokens),
                    cost_nanos: limit(l.granted.cost_nanos),
                });
                PodAccount {
                    pod: pod.clone(),
                    counted,
                    granted,
                    room: granted.saturating_sub(used),
                    ..PodAccount::default()
                }
            })
            .collect();
        Self {
            limits,
            window,
            usage,
            pods,
            spent_before: false,
        }
    }

    /// Keeps a window found spent spent: its routers refused what would not fit, told the
    /// agent not to retry, and see no more refusals because it obeys.
    pub fn stay_spent(&mut self, spent_before: bool) {
        self.spent_before = spent_before;
    }

    /// Marks a pod being deleted: its room is taken back, and its last readings still count.
    pub fn stopping(&mut self, pod: &str) {
        if let Some(account) = self.pods.iter_mut().find(|p| p.pod == pod) {
            account.stopping = true;
        }
    }

    /// The pods whose routers answered this round.
    pub fn reached(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|p| p.reached)
            .map(|p| p.pod.clone())
            .collect()
    }

    /// What is used of each limit, for the condition's message.
    pub fn summary(&self) -> String {
        let used = self.used();
        let mut parts = Vec::new();
        if let Some(limit) = self.limits.tokens {
            parts.push(format!("{} of {limit} tokens", used.tokens));
        }
        if let Some(limit) = self.limits.cost_nanos {
            parts.push(format!(
                "{} of {} {}",
                format_amount(used.cost_nanos),
                format_amount(limit),
                self.limits.currency
            ));
        }
        format!(
            "{} used in the window that ends at {}",
            parts.join(" and "),
            self.window.end
        )
    }

    /// Counts a router's reading: what its counters gained since they were last counted
    /// enters the window's usage, and its room is what its allowance leaves.
    pub fn read(&mut self, pod: &str, reading: &LeaseReading) {
        let priced = reading.currency.as_deref() == Some(self.limits.currency.as_str());
        let mut counters = reading.usage;
        if !priced {
            counters.cost_nanos = 0;
        }
        let Some(account) = self.pods.iter_mut().find(|p| p.pod == pod) else {
            return;
        };
        // Counters that went back belong to a router that lost its report: all of it is new.
        let baseline = if counters.requests < account.counted.requests
            || counters.tokens() < account.counted.tokens()
        {
            Tally::default()
        } else {
            account.counted
        };
        let gained = difference(&counters, &baseline);
        self.usage.add(&gained);
        account.recent_tokens = account.recent_tokens.saturating_add(gained.tokens());
        account.counted = counters;
        let used = Amount {
            tokens: counters.tokens(),
            cost_nanos: counters.cost_nanos,
        };
        let held = Amount {
            tokens: reading.reserved.tokens,
            cost_nanos: reading.reserved.cost_nanos,
        };
        account.granted = match &reading.allowance {
            Some(allowance) => Amount {
                tokens: allowance.max_tokens.unwrap_or(u64::MAX),
                cost_nanos: allowance.max_cost_nanos.unwrap_or(u64::MAX),
            },
            // Not leased yet: it may spend nothing, beyond what it holds.
            None => used.saturating_add(held),
        };
        account.room = account.granted.saturating_sub(used);
        account.reached = true;
        account.largest_refused = Amount {
            tokens: reading.largest_refused.tokens,
            cost_nanos: reading.largest_refused.cost_nanos,
        };
    }

    fn used(&self) -> Amount {
        Amount {
            tokens: self.usage.tokens(),
            cost_nanos: self.usage.cost_nanos,
        }
    }

    /// What no pod holds: the limit less the usage and every pod's room.
    fn free(&self) -> Amount {
        self.pods.iter().fold(
            self.limits.amount().saturating_sub(self.used()),
            |free, p| free.saturating_sub(p.room),
        )
    }

    /// Each reached pod's fair room: the unspent budget shared half evenly and half by the
    /// load the readings saw, so a busy pod is not starved by idle ones. Near the end of a
    /// window a pod's share can be smaller than the request its router refused: then no pod
    /// might fit a request while the budget still could. So when a refused pod's share does
    /// not fit what it was refused, the busiest refused pod gets all that is left instead, and
    /// the window is spent only once that does not fit either.
    fn targets(&self) -> Vec<(usize, Amount)> {
        let unspent = self.limits.amount().saturating_sub(self.used());
        let shares = self.shares(unspent);
        let limited = |amount: Amount, needed: Amount| {
            (self.limits.tokens.is_some() && amount.tokens < needed.tokens)
                || (self.limits.cost_nanos.is_some() && amount.cost_nanos < needed.cost_nanos)
        };
        let refused = |i: usize| {
            let refused = self.pods[i].largest_refused;
            refused.tokens > 0 || refused.cost_nanos > 0
        };
        let fragmented = shares
            .iter()
            .any(|&(i, share)| refused(i) && limited(share, self.pods[i].largest_refused));
        if !fragmented {
            return shares;
        }
        let chosen = shares
            .iter()
            .map(|&(i, _)| i)
            .filter(|&i| refused(i))
            .max_by_key(|&i| (self.pods[i].recent_tokens, std::cmp::Reverse(i)));
        shares
            .into_iter()
            .map(|(i, _)| {
                let target = if Some(i) == chosen {
                    unspent
                } else {
                    Amount::default()
                };
                (i, target)
            })
            .collect()
    }

    /// `unspent` shared among the reached pods, half evenly and half by recent load.
    fn shares(&self, unspent: Amount) -> Vec<(usize, Amount)> {
        let reached: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].reached && !self.pods[i].stopping)
            .collect();
        let count = reached.len() as u128;
        let load: u128 = reached
            .iter()
            .map(|&i| u128::from(self.pods[i].recent_tokens))
            .sum();
        reached
            .into_iter()
            .map(|i| {
                let share = |total: u64| -> u64 {
                    if count == 0 {
                        return 0;
                    }
                    let total = u128::from(total);
                    let even = total / (2 * count);
                    let by_load = if load == 0 {
                        total / (2 * count)
                    } else {
                        total * u128::from(self.pods[i].recent_tokens) / (2 * load)
                    };
                    u64::try_from(even + by_load).unwrap_or(u64::MAX)
                };
                (
                    i,
                    Amount {
                        tokens: share(unspent.tokens),
                        cost_nanos: share(unspent.cost_nanos),
                    },
                )
            })
            .collect()
    }

    /// Pods holding more than twice their fair room, with the grant that lowers them to it.
    /// Sent before any addition, so that the room they give back is free when the additions
    /// are computed from their answers.
    /// Also lowered to their share: pods holding more than it, when the free budget cannot
    /// give the pods under their share what they need (a new pod beside one that holds it all).
    pub fn lowerings(&self) -> Vec<(String, Grant)> {
        let spent = self.spent().is_some();
        let targets = self.targets();
        let wanted = targets
            .iter()
            .filter(|(i, target)| self.needs_room(*i, *target))
            .fold(Amount::default(), |wanted, (i, target)| {
                wanted.saturating_add(target.saturating_sub(self.pods[*i].room))
            });
        let free = self.free();
        let short = (self.limits.tokens.is_some() && wanted.tokens > free.tokens)
            || (self.limits.cost_nanos.is_some() && wanted.cost_nanos > free.cost_nanos);
        let stopping = (0..self.pods.len())
            .filter(|&i| self.pods[i].reached && self.pods[i].stopping)
            .map(|i| (i, Amount::default()));
        targets
            .into_iter()
            .chain(stopping)
            .filter(|(i, target)| {
                let room = self.pods[*i].room;
                let factor = if short { 1 } else { 2 };
                let over = |room: u64, target: u64| room > target.saturating_mul(factor);
                let holds = (self.limits.tokens.is_some() && room.tokens > 0)
                    || (self.limits.cost_nanos.is_some() && room.cost_nanos > 0);
                (spent || self.pods[*i].stopping) && holds
                    || (self.limits.tokens.is_some() && over(room.tokens, target.tokens))
                    || (self.limits.cost_nanos.is_some()
                        && over(room.cost_nanos, target.cost_nanos))
            })
            .map(|(i, target)| {
                let target = if spent || self.pods[i].stopping {
                    Amount::default()
                } else {
                    target
                };
                (
                    self.pods[i].pod.clone(),
                    self.limits.grant(GrantMode::Limit, target),
                )
            })
            .collect()
    }

    /// Pods holding less than half their fair room, with the addition that brings them back
    /// to it, as far as the free budget allows.
    pub fn additions(&self) -> Vec<(String, Grant)> {
        if self.spent().is_some() {
            return Vec::new();
        }
        let mut free = self.free();
        let mut grants = Vec::new();
        for (i, target) in self.targets() {
            if !self.needs_room(i, target) {
                continue;
            }
            let room = self.pods[i].room;
            let add = target.saturating_sub(room).min(free);
            if add == Amount::default() {
                continue;
            }
            free = free.saturating_sub(add);
            grants.push((
                self.pods[i].pod.clone(),
                self.limits.grant(GrantMode::Add, add),
            ));
        }
        grants
    }

    /// Whether pod `i` holds too little beside `target`, its share: under half of it, or less
    /// than what it was refused.
    fn needs_room(&self, i: usize, target: Amount) -> bool {
        let room = self.pods[i].room;
        let refused = self.pods[i].largest_refused;
        let under = |room: u64, target: u64, refused: u64| {
            room < target.div_ceil(2) || (refused > room && target > room)
        };
        (self.limits.tokens.is_some() && under(room.tokens, target.tokens, refused.tokens))
            || (self.limits.cost_nanos.is_some()
                && under(room.cost_nanos, target.cost_nanos, refused.cost_nanos))
    }

    /// Why the window is spent, if it is: a limit is reached, or a router refused a request
    /// that would not fit in all that is left of it.
    pub fn spent(&self) -> Option<String> {
        let used = self.used();
        let largest = self
            .pods
            .iter()
            .fold(Amount::default(), |largest, p| Amount {
                tokens: largest.tokens.max(p.largest_refused.tokens),
                cost_nanos: largest.cost_nanos.max(p.largest_refused.cost_nanos),
            });
        if self.spent_before {
            return Some(format!(
                "{}, and its routers refused requests that did not fit in what is left",
                self.summary()
            ));
        }
        if let Some(limit) = self.limits.tokens {
            let left = limit.saturating_sub(used.tokens);
            if left == 0 || largest.tokens > left {
                return Some(format!(
                    "{} of {limit} tokens are used in the window that ends at {}",
                    used.tokens, self.window.end
                ));
            }
        }
        if let Some(limit) = self.limits.cost_nanos {
            let left = limit.saturating_sub(used.cost_nanos);
            if left == 0 || largest.cost_nanos > left {
                return Some(format!(
                    "{} of {} {} are spent in the window that ends at {}",
                    format_amount(used.cost_nanos),
                    format_amount(limit),
                    self.limits.currency,
                    self.window.end
                ));
            }
        }
        None
    }

    /// The largest share of a limit used, in percent (0 to 100 and beyond).
    pub fn used_percent(&self) -> Vec<(&'static str, f64)> {
        let used = self.used();
        let ratio = |used: u64, limit: u64| used as f64 * 100.0 / limit.max(1) as f64;
        let mut shares = Vec::new();
        if let Some(limit) = self.limits.tokens {
            shares.push(("tokens", ratio(used.tokens, limit)));
        }
        if let Some(limit) = self.limits.cost_nanos {
            shares.push(("cost", ratio(used.cost_nanos, limit)));
        }
        shares
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    /// The books as the status records them.
    pub fn status(&self) -> AgentBudgetStatus {
        let priced = self.limits.cost_nanos.is_some();
        let currency = priced.then_some(self.limits.currency.as_str());
        AgentBudgetStatus {
            window_start: self.window.start.to_string(),
            window_end: self.window.end.to_string(),
            usage: self.usage.totals(currency),
            cost_nanos: i64::try_from(self.usage.cost_nanos).unwrap_or(i64::MAX),
            leases: self
                .pods
                .iter()
                .map(|p| PodLease {
                    pod: p.pod.clone(),
                    counted: counters_of(&p.counted),
                    granted: LeasedLimits {
                        tokens: self.limits.tokens.map(|_| signed(p.granted.tokens)),
                        cost_nanos: self.limits.cost_nanos.map(|_| signed(p.granted.cost_nanos)),
                    },
                })
                .collect(),
        }
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::budget_lease::Refused;
    use crate::resources::provider_config::Allowance;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn spec(period: BudgetPeriod, zone: &str) -> BudgetWindow {
        BudgetWindow {
            period,
            time_zone: zone.into(),
        }
    }

    #[test]
    fn windows_start_at_local_midnight_of_the_day_week_or_month() {
        let now = at("2026-12-02T03:30:00Z");
        let day = window(&spec(BudgetPeriod::Day, "UTC"), now).expect("day");
        assert_eq!(
            (day.start, day.end),
            (at("2026-12-02T00:00:00Z"), at("2026-12-03T00:00:00Z"))
        );
        // 03:30 UTC is still the 1st in New York (UTC-5 in December).
        let day = window(&spec(BudgetPeriod::Day, "America/New_York"), now).expect("day");
        assert_eq!(
            (day.start, day.end),
            (at("2026-12-01T05:00:00Z"), at("2026-12-02T05:00:00Z"))
        );
        // 2 December 2026 is a Wednesday: the week began on Monday the 30th of November.
        let week = window(&spec(BudgetPeriod::Week, "UTC"), now).expect("week");
        assert_eq!(
            (week.start, week.end),
            (at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z"))
        );
        let month = window(&spec(BudgetPeriod::Month, "Europe/Paris"), now).expect("month");
        assert_eq!(
            (month.start, month.end),
            (at("2026-11-30T23:00:00Z"), at("2026-12-31T23:00:00Z"))
        );
    }

    #[test]
    fn a_day_with_a_clock_change_is_as_long_as_it_is_lived() {
        // Paris moves its clocks forward on 29 March 2026: that day has 23 hours.
        let day = window(
            &spec(BudgetPeriod::Day, "Europe/Paris"),
            at("2026-03-29T12:00:00Z"),
        )
        .expect("day");
        assert_eq!(day.end.duration_since(day.start).as_hours(), 23);
    }

    #[test]
    fn an_unknown_time_zone_is_named_with_the_fix() {
        let error =
            window(&spec(BudgetPeriod::Day, "Mars/Olympus"), Timestamp::now()).expect_err("zone");
        assert!(
            error.contains("Mars/Olympus") && error.contains("IANA"),
            "{error}"
        );
    }

    fn limits(tokens: u64) -> Limits {
        Limits {
            tokens: Some(tokens),
            cost_nanos: None,
            currency: "USD".into(),
        }
    }

    fn the_day() -> Window {
        window(&spec(BudgetPeriod::Day, "UTC"), at("2026-12-01T12:00:00Z")).expect("day")
    }

    fn reading(tokens: u64, allowance: Option<u64>) -> LeaseReading {
        LeaseReading {
            usage: Tally {
                requests: tokens / 10,
                input_tokens: tokens,
                ..Tally::default()
            },
            allowance: allowance.map(|max| Allowance {
                max_tokens: Some(max),
                max_cost_nanos: None,
                currency: "USD".into(),
            }),
            ..LeaseReading::default()
        }
    }

    fn pods(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Applies `grants` as a router would, returning its new allowance.
    fn apply(accounts: &Accounts, pod: &str, grant: &Grant) -> u64 {
        let account = accounts.pods.iter().find(|p| p.pod == pod).expect("pod");
        let used = account.counted.tokens();
        let room = grant.tokens.expect("tokens");
        match grant.mode {
            GrantMode::Add => account.granted.tokens.max(used).saturating_add(room),
            GrantMode::Limit => account.granted.tokens.min(used + room),
        }
    }

    #[test]
    fn the_first_round_shares_the_whole_budget_and_never_more() {
        let mut accounts = Accounts::open(limits(9_000), the_day(), None, &pods(&["a", "b", "c"]));
        for pod in ["a", "b", "c"] {
            accounts.read(pod, &reading(0, None));
        }
        assert!(accounts.lowerings().is_empty());
        let additions = accounts.additions();
        assert_eq!(additions.len(), 3);
        let total: u64 = additions
            .iter()
            .map(|(_, g)| g.tokens.expect("tokens"))
            .sum();
        assert_eq!(total, 9_000);
        assert!(additions.iter().all(|(_, g)| g.mode == GrantMode::Add));
    }

    #[test]
    fn readings_are_counted_once_however_often_they_are_read() {
        let mut accounts = Accounts::open(limits(9_000), the_day(), None, &pods(&["a"]));
        accounts.read("a", &reading(100, Some(3_000)));
        accounts.read("a", &reading(100, Some(3_000)));
        let status = accounts.status();
        assert_eq!(status.usage.total_tokens, 100);
        // After a restart of the operator, from the status alone.
        let mut again = Accounts::open(limits(9_000), the_day(), Some(&status), &pods(&["a"]));
        again.read("a", &reading(250, Some(3_000)));
        assert_eq!(again.status().usage.total_tokens, 250);
    }

    #[test]
    fn a_new_window_starts_from_nothing_and_keeps_the_routers_baselines() {
        let mut accounts = Accounts::open(limits(1_000), the_day(), None, &pods(&["a"]));
        accounts.read("a", &reading(900, Some(1_000)));
        let status = accounts.status();
        let tomorrow =
            window(&spec(BudgetPeriod::Day, "UTC"), at("2026-12-02T12:00:00Z")).expect("day");
        let mut next = Accounts::open(limits(1_000), tomorrow, Some(&status), &pods(&["a"]));
        next.read("a", &reading(950, Some(1_000)));
        assert_eq!(
            next.status().usage.total_tokens,
            50,
            "only what tomorrow spent"
        );
        assert!(next.spent().is_none());
        let additions = next.additions();
        assert_eq!(additions.len(), 1, "the pod gets room again: {additions:?}");
    }

    #[test]
    fn a_busy_pod_gets_most_of_what_an_idle_pod_gives_back() {
        let previous = {
            let mut accounts =
                Accounts::open(limits(10_000), the_day(), None, &pods(&["busy", "idle"]));
            accounts.read("busy", &reading(0, Some(5_000)));
            accounts.read("idle", &reading(0, Some(5_000)));
            accounts.status()
        };
        let mut accounts = Accounts::open(
            limits(10_000),
            the_day(),
            Some(&previous),
            &pods(&["busy", "idle"]),
        );
        accounts.read("busy", &reading(4_800, Some(5_000)));
        accounts.read("idle", &reading(0, Some(5_000)));
        let lowerings = accounts.lowerings();
        assert_eq!(lowerings.len(), 1, "{lowerings:?}");
        assert_eq!(lowerings[0].0, "idle");
        // The idle pod answers with its lowered allowance.
        let lowered = apply(&accounts, "idle", &lowerings[0].1);
        accounts.read("idle", &reading(0, Some(lowered)));
        let additions = accounts.additions();
        assert_eq!(additions.len(), 1);
        assert_eq!(additions[0].0, "busy");
        let busy_room = 200 + additions[0].1.tokens.expect("tokens");
        assert!(busy_room > lowered, "busy {busy_room}, idle {lowered}");
    }

    #[test]
    fn the_pods_together_never_hold_more_than_the_limit() {
        // Rounds of uneven load, with readings after each grant as the routers would answer.
        let names = pods(&["a", "b", "c"]);
        let limit = 50_000;
        let mut status: Option<AgentBudgetStatus> = None;
        let mut counters = [0_u64; 3];
        let mut allowances = [None::<u64>; 3];
        for round in 0..40_u64 {
            let mut accounts = Accounts::open(limits(limit), the_day(), status.as_ref(), &names);
            for (i, pod) in names.iter().enumerate() {
                // Each pod spends what its room allows of an uneven load.
                let load = [round * 97 % 1_500, 40, round * 31 % 700][i];
                let cap = allowances[i].unwrap_or(counters[i]);
                counters[i] = (counters[i] + load).min(cap.max(counters[i]));
                accounts.read(pod, &reading(counters[i], allowances[i]));
            }
            for (pod, grant) in accounts.lowerings().into_iter().chain(Vec::new()) {
                let i = names.iter().position(|n| *n == pod).expect("pod");
                let allowance = apply(&accounts, &pod, &grant);
                allowances[i] = Some(allowance);
                accounts.read(&pod, &reading(counters[i], allowances[i]));
            }
            for (pod, grant) in accounts.additions() {
                let i = names.iter().position(|n| *n == pod).expect("pod");
                let allowance = apply(&accounts, &pod, &grant);
                allowances[i] = Some(allowance);
                accounts.read(&pod, &reading(counters[i], allowances[i]));
            }
            let held: u64 = (0..3)
                .map(|i| allowances[i].unwrap_or(counters[i]).max(counters[i]))
                .sum();
            assert!(held <= limit, "round {round}: the pods may reach {held}");
            status = Some(accounts.status());
        }
        let spent: u64 = counters.iter().sum();
        assert!(spent <= limit);
        assert!(
            spent > limit / 2,
            "the budget is used, not hoarded: {spent}"
        );
    }

    #[test]
    fn a_refusal_that_cannot_fit_in_what_is_left_spends_the_window() {
        let mut accounts = Accounts::open(limits(10_000), the_day(), None, &pods(&["a"]));
        let mut near = reading(9_000, Some(10_000));
        near.largest_refused = Refused {
            tokens: 500,
            cost_nanos: 0,
        };
        accounts.read("a", &near);
        assert!(accounts.spent().is_none(), "500 still fit in the 1000 left");
        near.largest_refused.tokens = 4_096;
        accounts.read("a", &near);
        let spent = accounts.spent().expect("spent");
        assert!(spent.contains("9000 of 10000 tokens"), "{spent}");
        let lowerings = accounts.lowerings();
        assert_eq!(
            lowerings[0].1.tokens,
            Some(0),
            "a spent window takes the room back"
        );
        assert!(accounts.additions().is_empty());
    }

    #[test]
    fn the_last_of_a_window_goes_to_one_pod_rather_than_fitting_no_request() {
        let names = pods(&["a", "b", "c"]);
        let previous = {
            let mut accounts = Accounts::open(limits(10_000), the_day(), None, &names);
            for (pod, used) in [("a", 9_400), ("b", 300), ("c", 0)] {
                accounts.read(pod, &reading(used, Some(used + 100)));
            }
            accounts.status()
        };
        // 300 are left, each pod holds 100, and every request needs 150.
        let mut accounts = Accounts::open(limits(10_000), the_day(), Some(&previous), &names);
        for (pod, used) in [("a", 9_400), ("b", 300), ("c", 0)] {
            let mut refused = reading(used, Some(used + 100));
            refused.largest_refused.tokens = if pod == "c" { 0 } else { 150 };
            accounts.read(pod, &refused);
        }
        assert!(accounts.spent().is_none(), "150 fit in the 300 left");
        let lowered: Vec<String> = accounts.lowerings().into_iter().map(|(p, _)| p).collect();
        assert_eq!(lowered, ["b", "c"], "the others give their room back");
        for pod in ["b", "c"] {
            let used = if pod == "b" { 300 } else { 0 };
            accounts.read(pod, &reading(used, Some(used)));
        }
        let additions = accounts.additions();
        assert_eq!(additions.len(), 1);
        assert_eq!(additions[0].0, "a", "the busiest pod that was refused");
        assert_eq!(additions[0].1.tokens, Some(200), "all that is left");
    }

    #[test]
    fn shares_just_short_of_a_request_are_pooled_for_one_pod() {
        // 178 are left: shares of 59, and each pod holds 58 while its requests need 59.
        let names = pods(&["a", "b", "c"]);
        let previous = {
            let mut accounts = Accounts::open(limits(2_500), the_day(), None, &names);
            for pod in ["a", "b", "c"] {
                accounts.read(pod, &reading(774, Some(832)));
            }
            accounts.status()
        };
        let mut accounts = Accounts::open(limits(2_500), the_day(), Some(&previous), &names);
        for pod in ["a", "b", "c"] {
            let mut refused = reading(774, Some(832));
            refused.largest_refused.tokens = 59;
            accounts.read(pod, &refused);
        }
        assert!(accounts.spent().is_none());
        let lowerings = accounts.lowerings();
        assert_eq!(lowerings.len(), 2, "{lowerings:?}");
        for (pod, _) in &lowerings {
            accounts.read(pod, &reading(774, Some(774)));
        }
        let additions = accounts.additions();
        assert_eq!(additions.len(), 1, "{additions:?}");
        assert_eq!(additions[0].1.tokens, Some(120), "all that is free");
    }

    #[test]
    fn a_pod_being_deleted_gives_its_room_back_and_its_share_goes_to_the_others() {
        let names = pods(&["a", "b"]);
        let mut accounts = Accounts::open(limits(1_000), the_day(), None, &names);
        accounts.read("a", &reading(0, Some(500)));
        accounts.read("b", &reading(0, Some(500)));
        accounts.stopping("b");
        let lowerings = accounts.lowerings();
        assert_eq!(lowerings.len(), 1);
        assert_eq!(lowerings[0].0, "b");
        assert_eq!(lowerings[0].1.tokens, Some(0));
        accounts.read("b", &reading(0, Some(0)));
        let additions = accounts.additions();
        assert_eq!(
            additions.len(),
            0,
            "a holds 500 of its 1000 share: not under half"
        );
        let targets = accounts.targets();
        assert_eq!(targets.len(), 1, "only a has a share");
        assert_eq!(targets[0].1.tokens, 1_000);
    }

    #[test]
    fn a_new_pod_beside_one_that_holds_everything_gets_its_share() {
        let names = pods(&["old", "new"]);
        let mut accounts = Accounts::open(limits(50_000), the_day(), None, &names);
        accounts.read("old", &reading(0, Some(50_000)));
        accounts.read("new", &reading(0, None));
        let lowerings = accounts.lowerings();
        assert_eq!(lowerings.len(), 1, "{lowerings:?}");
        assert_eq!(
            (lowerings[0].0.as_str(), lowerings[0].1.tokens),
            ("old", Some(25_000))
        );
        accounts.read("old", &reading(0, Some(25_000)));
        let additions = accounts.additions();
        assert_eq!(additions.len(), 1);
        assert_eq!(
            (additions[0].0.as_str(), additions[0].1.tokens),
            ("new", Some(25_000))
        );
    }

    #[test]
    fn cost_in_another_currency_does_not_count_against_the_cost_limit() {
        let limits = Limits {
            tokens: None,
            cost_nanos: Some(1_000_000_000),
            currency: "EUR".into(),
        };
        let mut accounts = Accounts::open(limits, the_day(), None, &pods(&["a"]));
        let mut priced = reading(100, None);
        priced.usage.cost_nanos = 500;
        priced.currency = Some("USD".into());
        accounts.read("a", &priced);
        assert_eq!(accounts.status().cost_nanos, 0);
    }
}
