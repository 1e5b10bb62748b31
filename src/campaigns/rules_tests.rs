//! The channel rules' decisions, one situation at a time.
use super::*;
use crate::model::{CampaignId, Template, Topic};

/// 2026-01-15 12:00 UTC, a Thursday.
const NOON_UTC: u64 = 1_768_478_400_000;
const HOUR: u64 = 3_600_000;

fn customer(channels: &[Channel], zone: &str) -> Customer {
    Customer {
        name: None,
        contacts: channels.iter().map(|c| (*c, format!("addr-{c}"))).collect(),
        consent: channels.iter().map(|c| (*c, true)).collect(),
        time_zone: zone.into(),
        location: None,
        attributes: Default::default(),
        language: None,
    }
}

fn campaign(order: &[Channel], max_cost: Option<f64>) -> Campaign {
    Campaign {
        id: CampaignId::parse("c").unwrap(),
        name: "t".into(),
        template: Template::try_from("hi".to_string()).unwrap(),
        email: None,
        whatsapp: None,
        translations: Default::default(),
        channels: order.to_vec(),
        confirmation_timeout_ms: Default::default(),
        max_cost,
        recipients: 1,
        created_ms: 0,
        send_at_ms: None,
        topic: Topic::offers(),
        expires_at_ms: None,
    }
}

const RULES: &str = r#"
[selection]
default_order = ["push", "email", "sms"]
order_by = "campaign"
quiet_hours = "skip"
[channels.email]
cost = 0.001
[channels.push]
cost = 0.0005
[channels.sms]
cost = 0.05
quiet_hours = { start = "21:00", end = "09:00" }
[channels.whatsapp]
cost = 0.02
quiet_hours = { start = "22:00", end = "08:00" }
"#;

#[test]
fn choices_follow_the_rules() {
    use Channel::*;
    let skip = Rules::parse(RULES).unwrap();
    let wait =
        Rules::parse(&RULES.replace(r#"quiet_hours = "skip""#, r#"quiet_hours = "wait""#)).unwrap();
    let by_cost =
        Rules::parse(&RULES.replace(r#"order_by = "campaign""#, r#"order_by = "cost""#)).unwrap();
    struct Case {
        name: &'static str,
        rules: &'static Rules,
        has: &'static [Channel],
        zone: &'static str,
        order: &'static [Channel],
        max_cost: Option<f64>,
        tried: &'static [Channel],
        unhealthy: &'static [Channel],
        now: u64,
        want: Choice,
    }
    let (skip, wait, by_cost): (&'static Rules, &'static Rules, &'static Rules) = (
        Box::leak(Box::new(skip)),
        Box::leak(Box::new(wait)),
        Box::leak(Box::new(by_cost)),
    );
    let base = Case {
        name: "",
        rules: skip,
        has: &[Email, Sms, Whatsapp, Push],
        zone: "UTC",
        order: &[Sms, Email],
        max_cost: None,
        tried: &[],
        unhealthy: &[],
        now: NOON_UTC,
        want: Choice::Send(Sms),
    };
    let cases = [
        Case {
            name: "campaign order first",
            ..base
        },
        Case {
            name: "default order without a campaign order",
            order: &[],
            want: Choice::Send(Push),
            ..base
        },
        Case {
            name: "missing contact is skipped",
            has: &[Email],
            want: Choice::Send(Email),
            ..base
        },
        Case {
            name: "tried channel is never repeated",
            tried: &[Sms],
            want: Choice::Send(Email),
            ..base
        },
        Case {
            name: "nothing left after the last",
            tried: &[Sms, Email],
            want: Choice::NoChannel("every usable channel was tried"),
            ..base
        },
        Case {
            name: "no channel at all",
            has: &[],
            want: Choice::NoChannel("customer has no usable channel (contact and consent)"),
            ..base
        },
        Case {
            name: "channel outside the campaign's order is not used",
            has: &[Push],
            want: Choice::NoChannel("customer has no usable channel (contact and consent)"),
            ..base
        },
        Case {
            name: "too dear for the campaign",
            max_cost: Some(0.01),
            want: Choice::Send(Email),
            ..base
        },
        Case {
            name: "open circuit goes last",
            unhealthy: &[Sms],
            want: Choice::Send(Email),
            ..base
        },
        Case {
            name: "open circuit still used when alone",
            has: &[Sms],
            unhealthy: &[Sms],
            want: Choice::Send(Sms),
            ..base
        },
        Case {
            name: "cheapest first when ordered by cost",
            rules: by_cost,
            want: Choice::Send(Email),
            ..base
        },
        // 23:00 in Madrid (UTC+1 in January): SMS is quiet, e-mail is not.
        Case {
            name: "quiet hours skip to e-mail",
            zone: "Europe/Madrid",
            now: NOON_UTC + 10 * HOUR,
            want: Choice::Send(Email),
            ..base
        },
        Case {
            name: "quiet hours wait when the rules say so",
            rules: wait,
            zone: "Europe/Madrid",
            now: NOON_UTC + 10 * HOUR,
            want: Choice::WaitUntil {
                channel: Sms,
                at_ms: NOON_UTC + 20 * HOUR,
            },
            ..base
        },
        Case {
            name: "only a quiet channel: wait for it",
            has: &[Sms],
            zone: "Europe/Madrid",
            now: NOON_UTC + 10 * HOUR,
            want: Choice::WaitUntil {
                channel: Sms,
                at_ms: NOON_UTC + 20 * HOUR,
            },
            ..base
        },
        // Noon UTC is 07:00 in New York (UTC-5): quiet until 09:00 local.
        Case {
            name: "quiet hours read in the customer's zone",
            zone: "America/New_York",
            want: Choice::Send(Email),
            ..base
        },
        Case {
            name: "same hour elsewhere is fine",
            zone: "Asia/Tokyo",
            now: NOON_UTC - 3 * HOUR,
            want: Choice::Send(Sms),
            ..base
        },
    ];
    for c in cases {
        let customer = customer(c.has, c.zone);
        let campaign = campaign(c.order, c.max_cost);
        let got = c.rules.choose(&Situation {
            customer: &customer,
            campaign: &campaign,
            tried: c.tried,
            unhealthy: c.unhealthy,
            now_ms: c.now,
        });
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn consent_withdrawn_means_unused() {
    let rules = Rules::parse(RULES).unwrap();
    let mut c = customer(&[Channel::Email, Channel::Sms], "UTC");
    c.consent.insert(Channel::Sms, false);
    let campaign = campaign(&[Channel::Sms, Channel::Email], None);
    let s = Situation {
        customer: &c,
        campaign: &campaign,
        tried: &[],
        unhealthy: &[],
        now_ms: NOON_UTC,
    };
    assert_eq!(rules.choose(&s), Choice::Send(Channel::Email));
}

#[test]
fn the_built_in_rules_parse_and_bad_ones_are_named() {
    let rules = Rules::load(None).unwrap();
    assert_eq!(rules.default_order[0], Channel::Push);
    let bad = RULES.replace("[channels.sms]", "[channels.fax]");
    assert!(Rules::parse(&bad).unwrap_err().to_string().contains("fax"));
    let bad = RULES.replace("\"21:00\"", "\"25:00\"");
    assert!(Rules::parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("quiet_hours"));
    let bad = RULES.replace("order_by = \"campaign\"", "order_by = \"luck\"");
    assert!(Rules::parse(&bad).is_err());
}

#[test]
fn the_uncertain_send_policy_is_per_channel_and_resend_by_default() {
    let rules = Rules::parse(
        "[selection]\ndefault_order = [\"email\", \"sms\"]\n[channels.sms]\nuncertain_send = \"skip\"\n[channels.email]\ncost = 0.001\n",
    )
    .unwrap();
    assert_eq!(rules.uncertain_send(Channel::Sms), UncertainSend::Skip);
    assert_eq!(rules.uncertain_send(Channel::Email), UncertainSend::Resend);
    assert_eq!(rules.uncertain_send(Channel::Push), UncertainSend::Resend);
    let bad = Rules::parse(
        "[selection]\ndefault_order = [\"sms\"]\n[channels.sms]\nuncertain_send = \"maybe\"\n",
    )
    .unwrap_err();
    assert!(bad.to_string().contains("uncertain_send"), "{bad}");
}

#[test]
fn time_zones_are_checked() {
    assert!(crate::model::is_known_time_zone("Europe/Madrid"));
    assert!(!crate::model::is_known_time_zone("europe/madrid"));
    assert!(!crate::model::is_known_time_zone("Mars/Olympus"));
}
