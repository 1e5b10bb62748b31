//! Quiet hours: a window of local time in which a channel (SMS, WhatsApp by default) must
//! not disturb a customer.

/// A local-time window, `start` inclusive and `end` exclusive, in minutes after midnight;
/// it crosses midnight when `start > end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: u32,
    end: u32,
}

impl QuietHours {
    pub(super) fn parse(start: &str, end: &str) -> Result<Self, String> {
        Ok(QuietHours {
            start: minutes_of(start)?,
            end: minutes_of(end)?,
        })
    }

    pub(super) fn contains(&self, minute: u32) -> bool {
        if self.start <= self.end {
            minute >= self.start && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window ends.
    pub(super) fn minutes_left(&self, minute: u32) -> u32 {
        (self.end + 24 * 60 - minute) % (24 * 60)
    }
}

fn minutes_of(hhmm: &str) -> Result<u32, String> {
    let (h, m) = hhmm
        .split_once(':')
        .ok_or_else(|| format!("{hhmm:?} is not HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("{hhmm:?} is not HH:MM"))?,
        m.parse().map_err(|_| format!("{hhmm:?} is not HH:MM"))?,
    );
    if h > 23 || m > 59 {
        return Err(format!("{hhmm:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}
