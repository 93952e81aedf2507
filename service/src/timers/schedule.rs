//! When a timer ticks: checking and normalizing a schedule when a timer is
//! created, and the next due time after a tick. Pure (the clock is passed
//! in) so every rule is unit-tested here.
//!
//! Ticks sit on a grid: `start`, `start + interval`, `start + 2 interval`,
//! ... The next due time after a tick handled at `now` is the first grid
//! point after `now`, so after downtime the missed ticks collapse into the
//! one just handled (at most one catch-up run, as the anchor does).

use chrono::{DateTime, Duration, Utc};
use lattice_protocol::timers::{Schedule, ScheduleEnd, MAX_INTERVAL_SECONDS};

/// How far in the past a start may be (clocks of clients differ a little).
const PAST_GRACE_SECS: i64 = 300;
/// How far ahead a timer may first tick.
const MAX_AHEAD_DAYS: i64 = 366;

/// Checks `schedule` against the rules and fills in what defaults to
/// `now` (a once timer's time, a recurring timer's start), so the stored
/// schedule says exactly when it ticks. The error names the field.
pub(crate) fn normalize(
    schedule: Schedule,
    now: DateTime<Utc>,
    min_interval_secs: u64,
) -> Result<Schedule, String> {
    // The store keeps milliseconds: a schedule finer than that would not
    // line up with the due times recorded from it.
    let now = whole_millis(now);
    let check_time = |field: &str, at: DateTime<Utc>| -> Result<(), String> {
        if at < now - Duration::seconds(PAST_GRACE_SECS) {
            return Err(format!("{field}: {at} is in the past"));
        }
        if at > now + Duration::days(MAX_AHEAD_DAYS) {
            return Err(format!(
                "{field}: {at} is more than {MAX_AHEAD_DAYS} days ahead"
            ));
        }
        Ok(())
    };
    match schedule {
        Schedule::Once { datetime } => {
            let at = whole_millis(datetime.unwrap_or(now));
            check_time("schedule.datetime", at)?;
            Ok(Schedule::Once { datetime: Some(at) })
        }
        Schedule::Recurring {
            interval_seconds,
            start,
            end,
        } => {
            if interval_seconds < min_interval_secs {
                return Err(format!(
                    "schedule.interval_seconds: {interval_seconds} s is below this service's minimum of {min_interval_secs} s"
                ));
            }
            if interval_seconds > MAX_INTERVAL_SECONDS {
                return Err(format!(
                    "schedule.interval_seconds: at most {MAX_INTERVAL_SECONDS} (one year)"
                ));
            }
            let start = whole_millis(start.unwrap_or(now));
            check_time("schedule.start", start)?;
            match &end {
                Some(ScheduleEnd::Time { datetime }) if *datetime <= start => {
                    return Err(format!(
                        "schedule.end.datetime: {datetime} is not after the start {start}"
                    ));
                }
                Some(ScheduleEnd::Iterations { count: 0 }) => {
                    return Err("schedule.end.count: must be at least 1".into());
                }
                _ => {}
            }
            Ok(Schedule::Recurring {
                interval_seconds,
                start: Some(start),
                end,
            })
        }
    }
}

fn whole_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// When a normalized schedule first ticks.
pub(crate) fn first_due(schedule: &Schedule, created: DateTime<Utc>) -> DateTime<Utc> {
    match schedule {
        Schedule::Once { datetime } => datetime.unwrap_or(created),
        Schedule::Recurring { start, .. } => start.unwrap_or(created),
    }
}

/// The next due time after a tick handled at `now`, with `runs` runs
/// started so far (skipped ticks do not count); `None` when the schedule
/// is over.
pub(crate) fn next_due(
    schedule: &Schedule,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
    runs: u64,
) -> Option<DateTime<Utc>> {
    let Schedule::Recurring {
        interval_seconds,
        start,
        end,
    } = schedule
    else {
        return None;
    };
    if let Some(ScheduleEnd::Iterations { count }) = end {
        if runs >= *count {
            return None;
        }
    }
    let start = start.unwrap_or(created);
    let interval = (*interval_seconds).max(1) as i64 * 1000;
    let since = (now - start).num_milliseconds();
    let steps = if since < 0 { 0 } else { since / interval + 1 };
    let next = start + Duration::milliseconds(steps.saturating_mul(interval));
    match end {
        Some(ScheduleEnd::Time { datetime }) if next > *datetime => None,
        _ => Some(next),
    }
}

/// How long a tick's start is retried after transient errors: half the
/// interval, at most 45 minutes (a once timer: 45 minutes).
pub(crate) fn retry_window(schedule: &Schedule) -> Duration {
    let cap = Duration::minutes(45);
    match schedule {
        Schedule::Once { .. } => cap,
        Schedule::Recurring {
            interval_seconds, ..
        } => Duration::seconds((*interval_seconds / 2).max(1) as i64).min(cap),
    }
}

/// The wait before start attempt `attempt + 1` (1 s, 2 s, 4 s, ... 60 s).
pub(crate) fn retry_backoff(attempt: u32) -> Duration {
    Duration::seconds(1i64 << attempt.min(6)).min(Duration::seconds(60))
}

/// How soon to look again at a run that has been going since `ran_at`:
/// often at first, then less (1 s up to 30 s).
pub(crate) fn poll_after(ran_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let age = (now - ran_at).num_milliseconds().max(0);
    Duration::milliseconds((age / 4).clamp(1000, 30_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn every(interval: u64, start: i64, end: Option<ScheduleEnd>) -> Schedule {
        Schedule::Recurring {
            interval_seconds: interval,
            start: Some(t(start)),
            end,
        }
    }

    #[test]
    fn normalize_fills_defaults_and_refuses_bad_schedules() {
        let now = t(0);
        assert_eq!(
            normalize(Schedule::Once { datetime: None }, now, 60).unwrap(),
            Schedule::Once {
                datetime: Some(now)
            }
        );
        let s = normalize(
            Schedule::Recurring {
                interval_seconds: 60,
                start: None,
                end: None,
            },
            now,
            60,
        )
        .unwrap();
        assert_eq!(s, every(60, 0, None));
        let bad = |s: Schedule, min: u64| normalize(s, now, min).unwrap_err();
        assert!(bad(every(30, 0, None), 60).contains("below this service's minimum of 60 s"));
        assert!(normalize(every(1, 0, None), now, 1).is_ok());
        assert!(bad(every(MAX_INTERVAL_SECONDS + 1, 0, None), 1).contains("one year"));
        assert!(bad(every(60, -3600, None), 60).contains("schedule.start"));
        assert!(bad(every(60, 400 * 86_400, None), 60).contains("days ahead"));
        let end_before = bad(
            every(60, 100, Some(ScheduleEnd::Time { datetime: t(50) })),
            60,
        );
        assert!(end_before.contains("not after the start"), "{end_before}");
        assert!(
            bad(every(60, 0, Some(ScheduleEnd::Iterations { count: 0 })), 60)
                .contains("at least 1")
        );
        assert!(bad(
            Schedule::Once {
                datetime: Some(t(-1000))
            },
            60
        )
        .contains("in the past"));
        // A little in the past is a client's clock, not a mistake.
        assert!(normalize(every(60, -10, None), now, 60).is_ok());
    }

    #[test]
    fn ticks_follow_the_grid_and_collapse_missed_ones() {
        let s = every(60, 0, None);
        assert_eq!(first_due(&s, t(-5)), t(0));
        // On time, and a little late: the next grid point.
        assert_eq!(next_due(&s, t(0), t(0), 1), Some(t(60)));
        assert_eq!(next_due(&s, t(0), t(3), 1), Some(t(60)));
        // Exactly on the next point: that one is taken, so the one after.
        assert_eq!(next_due(&s, t(0), t(60), 2), Some(t(120)));
        // After an hour of downtime: one catch-up now, then the grid.
        assert_eq!(next_due(&s, t(0), t(3601), 3), Some(t(3660)));
        // Before the start (a resume before the first tick).
        assert_eq!(next_due(&s, t(0), t(-30), 0), Some(t(0)));
    }

    #[test]
    fn schedules_end_by_count_or_time() {
        let s = every(60, 0, Some(ScheduleEnd::Iterations { count: 3 }));
        assert_eq!(next_due(&s, t(0), t(60), 2), Some(t(120)));
        assert_eq!(next_due(&s, t(0), t(120), 3), None);
        let s = every(60, 0, Some(ScheduleEnd::Time { datetime: t(150) }));
        assert_eq!(next_due(&s, t(0), t(60), 2), Some(t(120)));
        assert_eq!(next_due(&s, t(0), t(120), 3), None);
        let once = Schedule::Once {
            datetime: Some(t(10)),
        };
        assert_eq!(first_due(&once, t(0)), t(10));
        assert_eq!(next_due(&once, t(0), t(10), 1), None);
    }

    #[test]
    fn retries_and_polls_back_off() {
        assert_eq!(retry_window(&every(60, 0, None)), Duration::seconds(30));
        assert_eq!(retry_window(&every(86_400, 0, None)), Duration::minutes(45));
        assert_eq!(
            retry_window(&Schedule::Once { datetime: None }),
            Duration::minutes(45)
        );
        assert_eq!(retry_backoff(0), Duration::seconds(1));
        assert_eq!(retry_backoff(3), Duration::seconds(8));
        assert_eq!(retry_backoff(20), Duration::seconds(60));
        assert_eq!(poll_after(t(0), t(0)), Duration::seconds(1));
        assert_eq!(poll_after(t(0), t(20)), Duration::seconds(5));
        assert_eq!(poll_after(t(0), t(3600)), Duration::seconds(30));
    }
}
