//! Real e-mail: campaigns sent through the SMTP adapter to a real SMTP server (aiosmtpd from
//! PyPI, scripts/servers/smtp_catcher.py, which parses every message it accepts with Python's
//! e-mail package), with its faults: an address refused with 550, a server answering 421 for
//! a while, a dispatcher killed mid-campaign. And one-click unsubscribe, followed as a
//! mailbox provider does.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use herald::config::ProvidersArgs;
use herald::model::Channel;
use serde_json::{json, Value};

use crate::harness::{
    free_port, quiet_provider, wait_until, ChildGuard, Fleet, UNSUBSCRIBE_SECRET,
};

mod relay;

/// The SMTP server of one test: a process of its own on a free port.
struct Catcher {
    port: u16,
    dir: PathBuf,
    _process: ChildGuard,
}

impl Catcher {
    fn start() -> Catcher {
        Catcher::start_with(&[])
    }

    /// With more arguments for the server (`--auth USER:PASSWORD`).
    fn start_with(extra: &[&str]) -> Catcher {
        let python = std::env::var("HERALD_TEST_PYTHON")
            .map(PathBuf::from)
            .ok()
            .or_else(|| {
                let venv = std::env::var("HOME").ok()? + "/.cache/herald-venv/bin/python";
                std::path::Path::new(&venv)
                    .exists()
                    .then(|| PathBuf::from(venv))
            })
            .expect(
                "no Python with aiosmtpd: run scripts/test.sh (it makes one), or set \
                 HERALD_TEST_PYTHON to a python that can `import aiosmtpd`",
            );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("herald-smtp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new(python)
            .arg(crate::harness::repo_file("scripts/servers/smtp_catcher.py"))
            .args(["--port", &port.to_string(), "--out"])
            .arg(&dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the SMTP catcher starts");
        let catcher = Catcher {
            port,
            dir,
            _process: ChildGuard(Some(child)),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP catcher did not open its port"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        catcher
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Faults for the server, read on every RCPT (see the script).
    fn control(&self, control: Value) {
        let tmp = self.dir.join("control.json.tmp");
        std::fs::write(&tmp, control.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.join("control.json")).unwrap();
    }

    /// Every message the server accepted, as it parsed them.
    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("messages.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line per message"))
            .collect()
    }

    /// Messages by recipient.
    fn by_recipient(&self) -> HashMap<String, Vec<Value>> {
        let mut by: HashMap<String, Vec<Value>> = HashMap::new();
        for m in self.messages() {
            let to = m["rcpt_to"][0].as_str().unwrap_or_default().to_string();
            by.entry(to).or_default().push(m);
        }
        by
    }
}

/// The e-mail settings of a dispatcher sending through `catcher`; unsubscribe links point
/// at the fleet's API.
fn smtp_providers(fleet: &Fleet, catcher: &Catcher) -> ProvidersArgs {
    ProvidersArgs {
        smtp_url: Some(catcher.url().as_str().into()),
        email_from: Some("Tienda <ofertas@shop.test>".into()),
        public_url: Some(fleet.api_url.clone()),
        unsubscribe_secret: Some(UNSUBSCRIBE_SECRET.into()),
        ..Default::default()
    }
}

/// A fleet with fan-out, retry, an SMTP e-mail dispatcher and a push dispatcher (the
/// simulator): the e-mail dispatcher is returned for its provider figures.
async fn email_fleet(catcher: &Catcher) -> (Fleet, std::sync::Arc<herald::dispatch::Dispatcher>) {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    fleet.start_fanout(stop.clone()).await;
    fleet.start_retry(stop.clone()).await;
    fleet.start_dispatcher(Channel::Push, stop.clone()).await;
    let mut provider = fleet.provider_args();
    provider.provider_concurrency = 16;
    let (email, _) = fleet
        .start_dispatcher_through(
            Channel::Email,
            stop,
            provider,
            smtp_providers(&fleet, catcher),
        )
        .await;
    (fleet, email)
}

fn address(id: &str) -> String {
    format!("{id}@mail.test")
}

/// Customers reachable by e-mail (and push when `push`), in Spanish or English by turns.
async fn put_customers(fleet: &Fleet, ids: &[String], push: bool) {
    fleet
        .put_customers(
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut c = json!({"id": id, "name": format!("Cliente {i}"),
                        "contacts": {"email": address(id)}, "consent": {"email": true},
                        "language": if i % 2 == 0 { "es" } else { "en" },
                        "attributes": {"code": format!("C{i}")}, "time_zone": "Etc/GMT"});
                    if push {
                        c["contacts"]["push"] = json!(format!("tok-{id}"));
                        c["consent"]["push"] = json!(true);
                    }
                    c
                })
                .collect(),
        )
        .await;
}

/// A campaign in English with a Spanish translation, e-mail first (then push).
async fn post_campaign(fleet: &Fleet, id: &str, ids: &[String]) {
    let email = |subject: &str, greeting: &str| json!({"subject": subject, "html": format!("<p>{greeting} <b>{{{{ name }}}}</b>, code {{{{ code }}}}</p>")});
    let (status, body) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": id, "name": "Spring sale", "template": "Hi {{ name }}, your code is {{ code }}",
                   "email": email("Your offer, {{ name }}", "Hi"),
                   "translations": {"es": {"template": "Hola {{ name }}, tu código es {{ code }}",
                                           "email": email("Tu oferta, {{ name }} ✨", "Hola")}},
                   "channels": ["email", "push"],
                   "confirmation_timeout_ms": {"email": 5000, "push": 5000},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_arrives_as_one_real_email_per_customer_in_their_language() {
    let catcher = Catcher::start();
    let (fleet, _) = email_fleet(&catcher).await;
    let ids = ids("m", 500);
    put_customers(&fleet, &ids, false).await;
    post_campaign(&fleet, "mime", &ids).await;
    let report = fleet.wait_campaign("mime", Duration::from_secs(90)).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered"], 500, "{report}");

    let by = catcher.by_recipient();
    assert_eq!(by.len(), 500, "one recipient each");
    let mut message_ids = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let got = &by[&address(id)];
        assert_eq!(got.len(), 1, "{id}: {got:?}");
        let m = &got[0];
        assert!(message_ids.insert(m["message_id"].to_string()), "{m}");
        assert_eq!(m["defects"], json!([]), "{m}");
        assert_eq!(m["content_type"], "multipart/alternative", "{m}");
        let (subject, text, html) = if i % 2 == 0 {
            (
                format!("Tu oferta, Cliente {i} ✨"),
                format!("Hola Cliente {i}, tu código es C{i}"),
                format!("<p>Hola <b>Cliente {i}</b>, code C{i}</p>"),
            )
        } else {
            (
                format!("Your offer, Cliente {i}"),
                format!("Hi Cliente {i}, your code is C{i}"),
                format!("<p>Hi <b>Cliente {i}</b>, code C{i}</p>"),
            )
        };
        assert_eq!(m["subject"], subject.as_str(), "{m}");
        assert_eq!(
            m["text"].as_str().map(str::trim_end),
            Some(text.as_str()),
            "{m}"
        );
        assert_eq!(
            m["html"].as_str().map(str::trim_end),
            Some(html.as_str()),
            "{m}"
        );
        assert_eq!(m["from"], "Tienda <ofertas@shop.test>", "{m}");
        let unsubscribe = m["list_unsubscribe"].as_str().unwrap_or_default();
        assert!(
            unsubscribe.starts_with(&format!("<{}/v1/unsubscribe/", fleet.api_url)),
            "{m}"
        );
        assert_eq!(
            m["list_unsubscribe_post"], "List-Unsubscribe=One-Click",
            "{m}"
        );
    }

    // A seed 001 request is transactional: no unsubscribe header, the default subject.
    let (status, created) = fleet
        .post(
            "/v1/requests",
            json!({"to": "buyer@mail.test", "message": "Your order shipped", "type": "email"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, _) = fleet
        .post(&format!("/v1/requests/{id}/process"), json!({}))
        .await;
    assert_eq!(status, 202);
    wait_until("the request's e-mail", Duration::from_secs(30), || async {
        catcher.by_recipient().contains_key("buyer@mail.test")
    })
    .await;
    let m = &catcher.by_recipient()["buyer@mail.test"][0];
    assert_eq!(m["list_unsubscribe"], Value::Null, "{m}");
    assert_eq!(m["subject"], "Notification", "{m}");
    assert_eq!(m["content_type"], "text/plain", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_the_server_refuses_falls_back_at_once_and_is_skipped_next_time() {
    let catcher = Catcher::start();
    let (fleet, email) = email_fleet(&catcher).await;
    let ids = ids("r", 6);
    put_customers(&fleet, &ids, true).await;
    catcher.control(json!({"reject": [address("r3")]}));
    post_campaign(&fleet, "refused", &ids).await;
    // Within the e-mail time-out (5 s): the refusal sends r3 on to push at once.
    let report = fleet
        .wait_campaign("refused", Duration::from_millis(4500))
        .await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered"], 6, "{report}");
    assert_eq!(report["counts"]["delivered:push"], 1, "{report}");
    let by = catcher.by_recipient();
    assert_eq!(by.len(), 5, "{by:?}");
    assert!(!by.contains_key(&address("r3")));
    assert_eq!(
        email
            .providers
            .provider(0)
            .stats()
            .undeliverable
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The next campaign does not try that address again: r3 goes straight to push.
    catcher.control(json!({}));
    post_campaign(&fleet, "refused-next", &ids).await;
    let next = fleet
        .wait_campaign("refused-next", Duration::from_secs(30))
        .await;
    assert_eq!(next["counts"]["delivered"], 6, "{next}");
    assert_eq!(next["counts"]["delivered:push"], 1, "{next}");
    let calls = email
        .providers
        .provider(0)
        .stats()
        .calls
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls, 6 + 5, "no second try of the refused address");

    // A new address is a new chance.
    fleet
        .put_customers(vec![
            json!({"id": "r3", "contacts": {"email": "r3-new@mail.test"},
                                   "consent": {"email": true}, "time_zone": "Etc/GMT"}),
        ])
        .await;
    post_campaign(&fleet, "refused-new", &["r3".to_string()]).await;
    let new = fleet
        .wait_campaign("refused-new", Duration::from_secs(30))
        .await;
    assert_eq!(new["counts"]["delivered:email"], 1, "{new}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_server_slows_herald_down_without_losing_anyone() {
    let catcher = Catcher::start();
    let (fleet, email) = email_fleet(&catcher).await;
    let ids = ids("b", 60);
    put_customers(&fleet, &ids, false).await;
    let busy_until = herald::model::now_ms() as f64 / 1000.0 + 3.0;
    catcher.control(json!({"busy_until": busy_until, "busy_code": 421}));
    post_campaign(&fleet, "busy", &ids).await;
    let report = fleet.wait_campaign("busy", Duration::from_secs(60)).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["counts"]["delivered:email"], 60, "{report}");
    let by = catcher.by_recipient();
    assert_eq!(by.len(), 60);
    assert!(by.values().all(|m| m.len() == 1));
    let stats = email.providers.provider(0).stats();
    assert!(
        stats
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the 421s were taken as slow down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_click_unsubscribe_removes_the_customer_from_the_next_campaign_and_a_forged_link_nothing(
) {
    let catcher = Catcher::start();
    let (fleet, _) = email_fleet(&catcher).await;
    let ids = ids("u", 3);
    put_customers(&fleet, &ids, false).await;
    post_campaign(&fleet, "first", &ids).await;
    let report = fleet.wait_campaign("first", Duration::from_secs(30)).await;
    assert_eq!(report["counts"]["delivered"], 3, "{report}");
    let link = |id: &str| -> String {
        let m = &catcher.by_recipient()[&address(id)][0];
        let header = m["list_unsubscribe"].as_str().unwrap().to_string();
        header[1..header.find('>').unwrap()].to_string()
    };
    let one_click = |url: String| {
        fleet
            .anon
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
    };
    // A forged token (u1's link with its last digit changed) is refused and changes nothing.
    let genuine = link("u1");
    let last = genuine.chars().last().unwrap();
    let forged = format!(
        "{}{}",
        &genuine[..genuine.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    assert_eq!(one_click(forged).await.unwrap().status(), 404);
    // u0's link: the page first (a GET changes nothing), then the one-click POST, twice.
    let page = fleet.anon.get(link("u0")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    for _ in 0..2 {
        let r = one_click(link("u0")).await.unwrap();
        assert_eq!(r.status(), 200, "idempotent");
    }
    let (_, report) = fleet.get("/v1/campaigns/first").await;
    assert_eq!(report["counts"]["unsubscribed"], 1, "{report}");

    post_campaign(&fleet, "second", &ids).await;
    let second = fleet.wait_campaign("second", Duration::from_secs(30)).await;
    assert_eq!(second["counts"]["delivered"], 2, "{second}");
    assert_eq!(second["counts"]["failed:no_channel"], 1, "{second}");
    let by = catcher.by_recipient();
    assert_eq!(by[&address("u0")].len(), 1, "u0 heard nothing more");
    assert_eq!(
        by[&address("u1")].len(),
        2,
        "the forged link changed nothing"
    );

    // Transactional mail still reaches u0.
    let (_, created) = fleet
        .post(
            "/v1/requests",
            json!({"to": address("u0"), "message": "Your receipt", "type": "email"}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    fleet
        .post(&format!("/v1/requests/{id}/process"), json!({}))
        .await;
    wait_until("the receipt e-mail", Duration::from_secs(30), || async {
        catcher.by_recipient()[&address("u0")].len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hard_bounce_reported_later_suppresses_the_address() {
    let catcher = Catcher::start();
    let (fleet, _) = email_fleet(&catcher).await;
    let ids = ids("h", 2);
    put_customers(&fleet, &ids, true).await;
    let bounce = |kind: &str| json!({"address": address("h0").to_uppercase(), "kind": kind, "reason": "mailbox unknown"});
    let (status, body) = fleet.post("/v1/bounces", bounce("soft")).await;
    assert_eq!(
        (status, body["suppressed"].clone()),
        (200, json!(false)),
        "{body}"
    );
    let (status, body) = fleet
        .post("/v1/bounces", json!({"address": "", "kind": "hard"}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("address")),
        "{body}"
    );
    let (status, body) = fleet.post("/v1/bounces", bounce("hard")).await;
    assert_eq!(
        (status, body["suppressed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    // Bounces need their scope.
    let other = fleet.key("campaigns", &[herald::auth::Scope::CampaignsWrite]);
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/bounces", fleet.api_url))
        .bearer_auth(other)
        .json(&bounce("hard"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    post_campaign(&fleet, "after-bounce", &ids).await;
    let report = fleet
        .wait_campaign("after-bounce", Duration::from_secs(30))
        .await;
    assert_eq!(report["counts"]["delivered:push"], 1, "{report}");
    assert_eq!(report["counts"]["delivered:email"], 1, "{report}");
    assert!(!catcher.by_recipient().contains_key(&address("h0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_or_sender_error_is_refused_at_creation_naming_the_place() {
    let catcher = Catcher::start();
    let (fleet, _) = email_fleet(&catcher).await;
    put_customers(&fleet, &ids("t", 1), false).await;
    let cases = [
        (json!({"template": "Hi {{ nmae }}"}), "template", "nmae"),
        (
            json!({"template": "Hi", "email": {"subject": "{% if name %}open"}}),
            "email.subject",
            "line 1",
        ),
        (
            json!({"template": "Hi", "translations": {"es": {"template": "Hola\n{{ name | nosuchfilter }}"}}}),
            "translations.es.template",
            "line 2",
        ),
        (
            json!({"template": "Hi", "email": {"subject": "s", "from": "not an address"}}),
            "email.from",
            "address",
        ),
        // Finding 10: a campaigns:write key cannot send as someone else through the relay.
        (
            json!({"template": "Hi", "email": {"subject": "s", "from": "Bank <security@bank.test>"}}),
            "email.from",
            "security@bank.test is not an allowed sender",
        ),
    ];
    for (fields, field, says) in cases {
        let mut body = json!({"name": "n", "audience": {"customer_ids": ["t0"]}});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = fleet.post("/v1/campaigns", body).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    // The customer's own attribute is known once a profile has it.
    let (status, answer) = fleet
        .post(
            "/v1/campaigns",
            json!({"name": "n", "template": "{{ code }}", "audience": {"customer_ids": ["t0"]}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
}
