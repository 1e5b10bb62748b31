//! Frequency caps as data: a limit per window, the counter it is held against, a customer's
//! own day and week, and what a check answered (see `campaigns::caps`, `store::caps`).

use super::Topic;

/// How many promotions a customer may get per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_day: Option<u32>,
    pub per_week: Option<u32>,
}

/// Which counter a limit counts: all promotions, or one topic's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counter {
    Promotions,
    Topic(Topic),
}

impl Counter {
    /// The key suffix of its sorted set (beside the customer's).
    pub fn suffix(&self) -> String {
        match self {
            Counter::Promotions => "all".into(),
            Counter::Topic(t) => format!("t:{t}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Counter::Promotions => "promotions".into(),
            Counter::Topic(t) => format!("topic {t}"),
        }
    }
}

/// A customer's current day and week, and when the next of each starts (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub day_start_ms: u64,
    pub next_day_ms: u64,
    pub week_start_ms: u64,
    pub next_week_ms: u64,
}

impl Windows {
    /// The windows `now_ms` falls in, in `time_zone` (UTC for a zone jiff does not know).
    pub fn at(time_zone: &str, now_ms: u64) -> Windows {
        let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let now = jiff::Timestamp::from_millisecond(now_ms as i64)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(tz);
        let ms = |z: &jiff::Zoned| z.timestamp().as_millisecond().max(0) as u64;
        let windows = || -> Result<Windows, jiff::Error> {
            let today = now.start_of_day()?;
            let monday_offset = now.weekday().to_monday_zero_offset() as i64;
            let week = today.checked_sub(jiff::Span::new().days(monday_offset))?;
            Ok(Windows {
                day_start_ms: ms(&today),
                next_day_ms: ms(&today.tomorrow()?.start_of_day()?),
                week_start_ms: ms(&week),
                next_week_ms: ms(&week
                    .checked_add(jiff::Span::new().days(7))?
                    .start_of_day()?),
            })
        };
        // Only at the ends of jiff's range: every window is then now.
        windows().unwrap_or(Windows {
            day_start_ms: now_ms,
            next_day_ms: now_ms,
            week_start_ms: now_ms,
            next_week_ms: now_ms,
        })
    }
}

/// What the cap script answered for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted (or counted before, for this campaign).
    Pass,
    /// A limit is reached: which, and when its window ends.
    Capped { reason: String, until_ms: u64 },
}

impl Verdict {
    /// The script's answer: 0 passes; `2k - 1` is counter k's day limit, `2k` its week limit.
    pub fn from_script(answer: i64, counters: &[(Counter, Limit)], windows: &Windows) -> Verdict {
        if answer <= 0 {
            return Verdict::Pass;
        }
        let k = ((answer - 1) / 2) as usize;
        let daily = answer % 2 == 1;
        let Some((counter, limit)) = counters.get(k) else {
            return Verdict::Pass;
        };
        let (n, window, until_ms) = if daily {
            (limit.per_day.unwrap_or(0), "day", windows.next_day_ms)
        } else {
            (limit.per_week.unwrap_or(0), "week", windows.next_week_ms)
        };
        Verdict::Capped {
            reason: format!("{} capped at {n} a {window}", counter.describe()),
            until_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02T23:30:00Z, a Wednesday in UTC; already Thursday 00:30 in Madrid.
    const T: u64 = 1_796_254_200_000;

    #[test]
    fn the_day_and_week_are_the_customers_own() {
        let madrid = Windows::at("Europe/Madrid", T);
        // Thursday 3 December 00:00 in Madrid is 2 December 23:00 UTC.
        assert_eq!(madrid.day_start_ms, T - 30 * 60_000);
        assert_eq!(madrid.next_day_ms, madrid.day_start_ms + 24 * 3_600_000);
        // Its week started on Monday 30 November, three days before.
        assert_eq!(
            madrid.week_start_ms,
            madrid.day_start_ms - 3 * 24 * 3_600_000
        );
        assert_eq!(
            madrid.next_week_ms,
            madrid.week_start_ms + 7 * 24 * 3_600_000
        );
        let utc = Windows::at("UTC", T);
        assert_eq!(utc.day_start_ms, T - 23 * 3_600_000 - 30 * 60_000);
        assert_eq!(utc.week_start_ms, utc.day_start_ms - 2 * 24 * 3_600_000);
        assert_eq!(Windows::at("Not/AZone", T), utc);
    }

    #[test]
    fn a_script_answer_names_the_limit_it_hit() {
        let topic = Topic::parse("offers").unwrap();
        let counters = vec![
            (
                Counter::Promotions,
                Limit {
                    per_day: Some(2),
                    per_week: Some(5),
                },
            ),
            (
                Counter::Topic(topic),
                Limit {
                    per_day: Some(1),
                    per_week: None,
                },
            ),
        ];
        let w = Windows::at("UTC", T);
        assert_eq!(Verdict::from_script(0, &counters, &w), Verdict::Pass);
        assert_eq!(
            Verdict::from_script(2, &counters, &w),
            Verdict::Capped {
                reason: "promotions capped at 5 a week".into(),
                until_ms: w.next_week_ms
            }
        );
        assert_eq!(
            Verdict::from_script(3, &counters, &w),
            Verdict::Capped {
                reason: "topic offers capped at 1 a day".into(),
                until_ms: w.next_day_ms
            }
        );
    }
}
