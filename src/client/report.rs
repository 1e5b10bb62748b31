//! Reports for people at a terminal: a campaign's counts as a table, per channel.

use serde_json::Value;

use crate::model::Channel;

/// A campaign report (`GET /v1/campaigns/{id}`) as a table: one row per channel with its
/// sends, deliveries, fallbacks away from it and failures, then the totals.
pub fn campaign_summary(report: &Value) -> String {
    let counts = &report["counts"];
    let n = |k: String| counts[k.as_str()].as_u64().unwrap_or(0);
    let mut out = format!(
        "campaign {}: {} · {} recipients · {}% finished\n",
        report["id"].as_str().unwrap_or("?"),
        report["status"].as_str().unwrap_or("?"),
        report["recipients"],
        report["progress"]["percent"],
    );
    out.push_str(&format!(
        "{:<10} {:>10} {:>10} {:>12} {:>12}\n",
        "channel", "sent", "delivered", "fell back to", "undelivered"
    ));
    for c in Channel::ALL {
        let row = [
            n(format!("sent:{c}")),
            n(format!("delivered:{c}")),
            n(format!("fallbacks:{c}")),
            n(format!("undelivered:{c}")),
        ];
        if row.iter().any(|v| *v > 0) {
            out.push_str(&format!(
                "{:<10} {:>10} {:>10} {:>12} {:>12}\n",
                c.as_str(),
                row[0],
                row[1],
                row[2],
                row[3]
            ));
        }
    }
    out.push_str(&format!(
        "{:<10} {:>10} {:>10} {:>12} {:>12}\n",
        "total",
        n("sent".into()),
        n("delivered".into()),
        n("fallbacks".into()),
        "",
    ));
    out.push_str(&format!(
        "failed {} · deduplicated {} · late receipts {} · deferred {}\n",
        n("failed".into()),
        n("deduplicated".into()),
        n("late_receipts".into()),
        n("deferred".into()),
    ));
    // What crashes left uncertain: sent again (resent) or left alone (uncertain).
    out.push_str(&format!(
        "uncertain sends: resent {} · left uncertain {}\n",
        n("resent".into()),
        n("uncertain".into()),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_has_a_row_per_channel_used_and_the_totals() {
        let report = json!({
            "id": "c1", "status": "completed", "recipients": 10,
            "progress": {"percent": 100.0},
            "counts": {"sent": 12, "delivered": 10, "fallbacks": 2, "failed": 0,
                       "sent:email": 10, "delivered:email": 8, "sent:push": 2,
                       "delivered:push": 2, "fallbacks:push": 2},
        });
        let table = campaign_summary(&report);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(table.starts_with("campaign c1: completed · 10 recipients · 100.0% finished"));
        assert!(
            rows.contains(&vec!["email", "10", "8", "0", "0"]),
            "{table}"
        );
        assert!(rows.contains(&vec!["push", "2", "2", "2", "0"]), "{table}");
        assert!(rows.contains(&vec!["total", "12", "10", "2"]), "{table}");
        assert!(
            !table.contains("sms"),
            "unused channels are left out: {table}"
        );
    }
}
