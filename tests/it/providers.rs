//! Real providers' APIs (against the fakes in `fakes.rs`): Twilio for SMS, Meta's Cloud API
//! for WhatsApp, FCM for push; failover between two SMS providers; the providers' signed
//! status webhooks; STOP replies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use herald::config::ProvidersArgs;
use herald::dispatch::Dispatcher;
use herald::model::Channel;
use serde_json::{json, Value};

use crate::fakes::{self, Fcm, Meta, Twilio};
use crate::harness::{
    quiet_provider, wait_until, Fleet, TWILIO_AUTH_TOKEN, UNSUBSCRIBE_SECRET, WHATSAPP_APP_SECRET,
};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// A time zone where it is midday now, so SMS and WhatsApp quiet hours never apply.
fn daytime_zone() -> String {
    let hour = (herald::model::now_ms() / 3_600_000 % 24) as i64;
    let offset = (12 - hour + 36) % 24 - 12; // -12..=11
    match offset {
        0 => "Etc/GMT".into(),
        // Etc/GMT-3 is three hours ahead of UTC.
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// Writes a providers file and sets the variables it names (unique to the fleet, since the
/// tests share one process); returns the settings a dispatcher is given.
fn providers_file(fleet: &Fleet, toml: &str, secrets: &[(&str, &str)]) -> ProvidersArgs {
    let mut text = toml.to_string();
    for (name, value) in secrets {
        let var = format!("HERALD_TEST_{}_{}", name, fleet.ns.to_uppercase());
        std::env::set_var(&var, value);
        text = text.replace(&format!("${name}"), &var);
    }
    let path = std::env::temp_dir().join(format!("herald-providers-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    ProvidersArgs {
        providers: Some(path),
        public_url: Some(fleet.api_url.clone()),
        unsubscribe_secret: Some(UNSUBSCRIBE_SECRET.into()),
        ..Default::default()
    }
}

/// Fan-out, retry, an e-mail dispatcher on the simulator (the fallback channel), and a
/// dispatcher for `channel` through `providers`.
async fn fleet_with(
    fleet: &Fleet,
    channel: Channel,
    providers: ProvidersArgs,
) -> std::sync::Arc<Dispatcher> {
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    fleet.start_dispatcher(Channel::Email, stop.clone()).await;
    let mut provider = fleet.provider_args();
    provider.provider_breaker_failures = 3;
    provider.provider_breaker_cooldown_ms = 1500;
    provider.provider_max_attempts = 2;
    provider.provider_backoff_ms = 10;
    let (d, _) = fleet
        .start_dispatcher_through(channel, stop, provider, providers)
        .await;
    d
}

fn number(i: usize) -> String {
    format!("+3460000{i:04}")
}

/// Customers reachable on `channel` (a number or push token) and on e-mail.
async fn put_customers(fleet: &Fleet, n: usize, channel: Channel, prefix: &str) -> Vec<String> {
    let zone = daytime_zone();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    fleet
        .put_customers(
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    let address = match channel {
                        Channel::Push => format!("push-token-{id}"),
                        _ => number(i),
                    };
                    let mut c = json!({"id": id, "name": format!("Cliente {i}"), "language": "es",
                           "contacts": {"email": format!("{id}@mail.test")},
                           "consent": {"email": true}, "time_zone": zone});
                    c["contacts"][channel.as_str()] = json!(address);
                    c["consent"][channel.as_str()] = json!(true);
                    c
                })
                .collect(),
        )
        .await;
    ids
}

async fn post_campaign(fleet: &Fleet, id: &str, channel: Channel, ids: &[String], extra: Value) {
    let mut body = json!({"id": id, "name": "Offer", "template": "Hola {{ name }}",
        "channels": [channel.as_str(), "email"],
        "confirmation_timeout_ms": {"email": 20000},
        "audience": {"customer_ids": ids}});
    body["confirmation_timeout_ms"][channel.as_str()] = json!(20000);
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    let (status, created) = fleet.post("/v1/campaigns", body).await;
    assert_eq!(status, 202, "{created}");
}

fn twilio_toml(name: &str, url: &str, var: &str) -> String {
    format!(
        "[[sms]]\nname = \"{name}\"\nadapter = \"twilio\"\nurl = \"{url}\"\naccount_sid = \"{ACCOUNT}\"\nauth_token_env = \"${var}\"\nfrom = \"+15005550006\"\n"
    )
}

/// A Twilio fake and the fleet's SMS dispatcher sending through it.
async fn twilio_sms(fleet: &Fleet) -> (Twilio, std::sync::Arc<Dispatcher>) {
    let twilio = Twilio::start(ACCOUNT, TWILIO_AUTH_TOKEN).await;
    let providers = providers_file(
        fleet,
        &twilio_toml("twilio", &twilio.url, "TOKEN"),
        &[("TOKEN", TWILIO_AUTH_TOKEN)],
    );
    let sms = fleet_with(fleet, Channel::Sms, providers).await;
    (twilio, sms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sms_through_twilio_reaches_everyone_once_confirmed_by_its_signed_webhooks() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let (twilio, sms) = twilio_sms(&fleet).await;
    let ids = put_customers(&fleet, 40, Channel::Sms, "s").await;
    // One number Twilio says replied STOP (21610): undeliverable, e-mail at once.
    twilio.state.unreachable.lock().unwrap().insert(number(7));
    // The first sends meet Twilio's rate limit (429 + Retry-After).
    twilio.state.rate_limit_next.store(5, Ordering::Relaxed);
    post_campaign(&fleet, "twilio", Channel::Sms, &ids, json!({})).await;
    // Well within the 20 s receipt time-out: the webhooks confirmed them.
    let report = fleet.wait_campaign("twilio", Duration::from_secs(15)).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered:sms"], 39, "{report}");
    assert_eq!(report["counts"]["delivered:email"], 1, "{report}");
    assert_eq!(report["counts"]["provider:twilio"], 39, "{report}");
    assert_eq!(twilio.state.total(), 39);
    assert!((0..40)
        .filter(|i| *i != 7)
        .all(|i| twilio.state.to(&number(i)) == 1));
    assert_eq!(twilio.state.malformed.load(Ordering::Relaxed), 0);
    let stats = sms.providers.provider(0).stats();
    assert!(stats.rate_limited.load(Ordering::Relaxed) >= 5);
    assert_eq!(stats.undeliverable.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_sms_provider_fails_over_to_the_next_and_is_used_again_once_it_recovers() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let (a, b) = (
        Twilio::start(ACCOUNT, TWILIO_AUTH_TOKEN).await,
        Twilio::start(ACCOUNT, TWILIO_AUTH_TOKEN).await,
    );
    let toml = twilio_toml("first", &a.url, "TOKEN") + &twilio_toml("second", &b.url, "TOKEN");
    let providers = providers_file(&fleet, &toml, &[("TOKEN", TWILIO_AUTH_TOKEN)]);
    let sms = fleet_with(&fleet, Channel::Sms, providers).await;
    let ids = put_customers(&fleet, 300, Channel::Sms, "f").await;
    post_campaign(&fleet, "failover", Channel::Sms, &ids, json!({})).await;
    // From mid-campaign the first provider answers every call with 503.
    wait_until("the first sends", Duration::from_secs(20), || async {
        a.state.total() >= 50
    })
    .await;
    a.state.failing.store(true, Ordering::Relaxed);
    let report = fleet
        .wait_campaign("failover", Duration::from_secs(60))
        .await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        report["counts"]["delivered:sms"], 300,
        "no channel fallback: {report}"
    );
    assert_eq!(report["counts"]["delivered:email"], Value::Null, "{report}");
    assert!(b.state.total() > 0, "the second provider took over");
    for i in 0..300 {
        let (at_a, at_b) = (a.state.to(&number(i)), b.state.to(&number(i)));
        assert_eq!(
            at_a + at_b,
            1,
            "{} reached {at_a} + {at_b} times",
            number(i)
        );
    }
    let counted = report["counts"]["provider:first"].as_u64().unwrap_or(0)
        + report["counts"]["provider:second"].as_u64().unwrap_or(0);
    assert_eq!(counted, 300, "the slot recorded who accepted: {report}");
    assert!(sms.providers.failovers.load(Ordering::Relaxed) > 0);

    // The dashboard's provider panel shows both, the first with its errors.
    let (_, metrics) = fleet
        .start_metrics("providers-panel", fleet.shutdown.child_token())
        .await;
    let panel = || async {
        let stats: Value = fleet
            .http
            .get(format!("{metrics}/v1/stats"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let sms: Vec<Value> = stats["providers"]
            .as_array()?
            .iter()
            .filter(|r| r["channel"] == "sms")
            .cloned()
            .collect();
        Some(sms)
    };
    // Dispatchers report once a second: wait for a report written after the failover.
    wait_until("the provider panel", Duration::from_secs(10), || async {
        panel().await.is_some_and(|rows| {
            rows.len() == 2 && rows[1]["calls"]["delivered"].as_u64().unwrap_or(0) > 0
        })
    })
    .await;
    let rows = panel().await.unwrap();
    assert_eq!(
        (rows[0]["provider"].as_str(), rows[1]["provider"].as_str()),
        (Some("first"), Some("second")),
        "{rows:?}"
    );
    assert!(
        rows[0]["calls"]["server_errors"].as_u64().unwrap_or(0) > 0,
        "{rows:?}"
    );
    assert!(
        rows[1]["calls"]["delivered"].as_u64().unwrap_or(0) > 0,
        "{rows:?}"
    );
    assert!(
        rows[0]["channel_failovers"].as_u64().unwrap_or(0) > 0,
        "{rows:?}"
    );

    // Recovered: after its breaker's cool-down the first provider is used again.
    a.state.failing.store(false, Ordering::Relaxed);
    let before = a.state.total();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let more = put_customers(&fleet, 20, Channel::Sms, "g").await;
    post_campaign(&fleet, "recovered", Channel::Sms, &more, json!({})).await;
    let report = fleet
        .wait_campaign("recovered", Duration::from_secs(30))
        .await;
    assert_eq!(report["counts"]["delivered:sms"], 20, "{report}");
    assert!(
        a.state.total() > before,
        "the first provider is back in use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_webhooks_change_nothing_and_a_stop_reply_ends_sms_promotions() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let (twilio, _) = twilio_sms(&fleet).await;
    let ids = put_customers(&fleet, 2, Channel::Sms, "w").await;
    post_campaign(&fleet, "forged", Channel::Sms, &ids, json!({})).await;
    wait_until("both sent", Duration::from_secs(20), || async {
        twilio.state.total() == 2
    })
    .await;
    // The fake's own callbacks confirm them; before that, forged ones are refused.
    let webhook = format!("{}/v1/webhooks/twilio?key=forged%3Aw0%3Asms", fleet.api_url);
    let params = |status: &str| {
        vec![
            ("MessageSid".to_string(), "SMforged".to_string()),
            ("MessageStatus".to_string(), status.to_string()),
        ]
    };
    let wrong =
        fakes::post_twilio_webhook(webhook.clone(), params("failed"), "not-the-token".into()).await;
    assert_eq!(wrong, 401);
    // A body changed after signing: signed for `delivered`, sent as `failed`.
    let signature =
        herald::auth::webhooks::twilio_signature(TWILIO_AUTH_TOKEN, &webhook, &params("delivered"));
    let changed = reqwest::Client::new()
        .post(&webhook)
        .header("X-Twilio-Signature", signature)
        .form(&params("failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 401);
    let unsigned = reqwest::Client::new()
        .post(&webhook)
        .form(&params("failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let report = fleet.wait_campaign("forged", Duration::from_secs(15)).await;
    assert_eq!(
        report["counts"]["delivered:sms"], 2,
        "forgeries changed nothing: {report}"
    );
    assert_eq!(report["counts"]["undelivered:sms"], Value::Null, "{report}");

    // w0 replies STOP: the next campaign reaches w0 by e-mail, w1 still by SMS.
    let inbound = vec![
        ("From".to_string(), number(0)),
        ("To".to_string(), "+15005550006".to_string()),
        ("Body".to_string(), " baja ".to_string()),
        ("MessageSid".to_string(), "SMinbound".to_string()),
    ];
    let status = fakes::post_twilio_webhook(
        format!("{}/v1/webhooks/twilio", fleet.api_url),
        inbound,
        TWILIO_AUTH_TOKEN.into(),
    )
    .await;
    assert_eq!(status, 200);
    post_campaign(&fleet, "after-stop", Channel::Sms, &ids, json!({})).await;
    let report = fleet
        .wait_campaign("after-stop", Duration::from_secs(15))
        .await;
    assert_eq!(report["counts"]["delivered:sms"], 1, "{report}");
    assert_eq!(report["counts"]["delivered:email"], 1, "{report}");
    assert_eq!(twilio.state.to(&number(0)), 1, "no SMS after STOP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_templates_through_metas_cloud_api_confirmed_by_signed_read_statuses() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let meta = Meta::start("meta-access-token", WHATSAPP_APP_SECRET).await;
    *meta.state.webhook.lock().unwrap() = Some(format!("{}/v1/webhooks/whatsapp", fleet.api_url));
    let toml = format!(
        "[whatsapp]\nadapter = \"whatsapp\"\nname = \"meta\"\nurl = \"{}\"\nphone_number_id = \"1234567890\"\ntoken_env = \"$TOKEN\"\n",
        meta.url
    );
    let providers = providers_file(&fleet, &toml, &[("TOKEN", "meta-access-token")]);
    let whatsapp = fleet_with(&fleet, Channel::Whatsapp, providers).await;
    let ids = put_customers(&fleet, 20, Channel::Whatsapp, "m").await;
    meta.state
        .unreachable
        .lock()
        .unwrap()
        .insert(number(3).trim_start_matches('+').to_string());
    let template = json!({"whatsapp": {"name": "spring_offer", "language": "en",
                                       "parameters": ["{{ name }}", "20%"]}});
    post_campaign(&fleet, "meta", Channel::Whatsapp, &ids, template).await;
    let report = fleet.wait_campaign("meta", Duration::from_secs(15)).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        report["counts"]["delivered:whatsapp"], 19,
        "read statuses confirmed: {report}"
    );
    assert_eq!(
        report["counts"]["delivered:email"], 1,
        "131026 fell back: {report}"
    );
    assert_eq!(meta.state.malformed.load(Ordering::Relaxed), 0);
    assert_eq!(meta.state.total(), 19);
    let stats = whatsapp.providers.provider(0).stats();
    assert_eq!(stats.undeliverable.load(Ordering::Relaxed), 1);

    // Meta's handshake, and a forged status.
    let url = format!("{}/v1/webhooks/whatsapp", fleet.api_url);
    let handshake = |token: &str| {
        fleet
            .anon
            .get(&url)
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ])
            .send()
    };
    let good = handshake(crate::harness::WHATSAPP_VERIFY_TOKEN)
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.text().await.unwrap(), "1158201444");
    assert_eq!(handshake("wrong").await.unwrap().status(), 401);
    let event = fakes::meta_status_event("wamid.x", "meta:m0:whatsapp", "34600000000", "failed");
    assert_eq!(
        fakes::post_meta_webhook(url.clone(), event.clone(), "wrong-secret".into()).await,
        401
    );
    let signed =
        herald::auth::webhooks::meta_signature(WHATSAPP_APP_SECRET, event.to_string().as_bytes());
    let mut altered = event.clone();
    altered["entry"][0]["id"] = json!("other");
    let r = reqwest::Client::new()
        .post(&url)
        .header("X-Hub-Signature-256", signed)
        .header("content-type", "application/json")
        .body(altered.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, report) = fleet.get("/v1/campaigns/meta").await;
    assert_eq!(report["counts"]["delivered:whatsapp"], 19, "{report}");
}

/// A service account's RSA key (PKCS#8 PEM), made with openssl as Google hands one out.
fn rsa_key(dir: &std::path::Path) -> String {
    let key = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl (installed by scripts/test.sh)");
    assert!(made.status.success(), "{made:?}");
    std::fs::read_to_string(&key).unwrap()
}

/// The service-account key file, as the Firebase console downloads it.
fn service_account(dir: &std::path::Path, pem: &str, token_uri: &str) -> std::path::PathBuf {
    let account = json!({"type": "service_account", "project_id": "herald-test",
        "private_key_id": "k1", "private_key": pem, "client_email": "herald@herald-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri});
    let path = dir.join("service-account.json");
    std::fs::write(&path, account.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_through_fcm_refreshes_its_token_and_drops_an_unregistered_one() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let dir = std::env::temp_dir().join(format!("herald-fcm-{}", fleet.ns));
    std::fs::create_dir_all(&dir).unwrap();
    // The token endpoint's URL is in the key file, so the fake must be up first: a
    // placeholder key to start it, then the real one.
    let pem = rsa_key(&dir);
    // Access tokens live 3 s: Herald renews them before they expire.
    let fcm = Fcm::start(
        "herald-test",
        "herald@herald-test.iam.gserviceaccount.com",
        &pem,
        3,
    )
    .await;
    let path = service_account(&dir, &pem, &format!("{}/token", fcm.url));
    let toml = format!(
        "[push]\nadapter = \"fcm\"\nurl = \"{0}\"\ntoken_uri = \"{0}/token\"\n\
         credentials_env = \"$CREDENTIALS\"\n",
        fcm.url
    );
    let providers = providers_file(&fleet, &toml, &[("CREDENTIALS", path.to_str().unwrap())]);
    fleet_with(&fleet, Channel::Push, providers).await;
    let ids = put_customers(&fleet, 10, Channel::Push, "p").await;
    fcm.state
        .unreachable
        .lock()
        .unwrap()
        .insert("push-token-p4".into());
    post_campaign(&fleet, "fcm-1", Channel::Push, &ids, json!({})).await;
    let report = fleet.wait_campaign("fcm-1", Duration::from_secs(15)).await;
    assert_eq!(report["counts"]["delivered:push"], 9, "{report}");
    assert_eq!(
        report["counts"]["delivered:email"], 1,
        "UNREGISTERED fell back: {report}"
    );
    assert_eq!(fcm.state.malformed.load(Ordering::Relaxed), 0);
    // The dead token is gone from the profile.
    let (_, profile) = fleet.get("/v1/customers/p4").await;
    assert_eq!(profile["contacts"]["push"], Value::Null, "{profile}");

    // The token held is revoked: FCM answers 401, Herald fetches a new one once and sends.
    let issued = fcm.tokens_issued.load(Ordering::Relaxed);
    fcm.revoke_all(&fakes::granted(&fcm));
    post_campaign(&fleet, "fcm-2", Channel::Push, &ids, json!({})).await;
    let report = fleet.wait_campaign("fcm-2", Duration::from_secs(15)).await;
    assert_eq!(report["counts"]["delivered:push"], 9, "{report}");
    assert_eq!(report["counts"]["failed"], Value::Null, "{report}");
    assert!(
        fcm.tokens_issued.load(Ordering::Relaxed) > issued,
        "a new token after the 401"
    );

    // The token expires: renewed before it does, so no send meets a 401 for it.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let issued = fcm.tokens_issued.load(Ordering::Relaxed);
    post_campaign(&fleet, "fcm-3", Channel::Push, &ids, json!({})).await;
    let report = fleet.wait_campaign("fcm-3", Duration::from_secs(15)).await;
    assert_eq!(report["counts"]["delivered:push"], 9, "{report}");
    assert!(
        fcm.tokens_issued.load(Ordering::Relaxed) > issued,
        "renewed on expiry"
    );
    for i in (0..10).filter(|i| *i != 4) {
        assert_eq!(fcm.state.to(&format!("push-token-p{i}")), 3);
    }
}
