//! Apache Kafka losing a broker: a three-broker KRaft cluster (`scripts/kafka-cluster.sh`,
//! topics with three copies and `min.insync.replicas=2`) under a campaign and under seed 001
//! clients, against the counting simulator (it does not drop a repeated idempotency key).
//! `scripts/test.sh` runs these with `.herald/kafka-cluster.env` sourced; without it each test
//! fails naming the script.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald::model::Channel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::harness::{quiet_provider, repo_file, wait_until, ChildGuard, Fleet};

/// A node of the cluster, by its KRaft node id, driven through the script an operator uses.
struct Node(i32);

impl Node {
    fn script(&self, verb: &str) {
        assert!(
            std::env::var_os("HERALD_KAFKA_CLUSTER_DIR").is_some(),
            "these tests need the three-broker cluster: scripts/kafka-cluster.sh up, then source .herald/kafka-cluster.env"
        );
        let status = std::process::Command::new("bash")
            .arg(repo_file("scripts/kafka-cluster.sh"))
            .args([verb, &self.0.to_string()])
            .status()
            .expect("scripts/kafka-cluster.sh");
        assert!(status.success(), "kafka-cluster.sh {verb} {}", self.0);
    }

    /// SIGKILL: no controlled shutdown, leadership moves only when the controller fences it.
    fn kill(&self) {
        self.script("kill");
    }

    /// SIGTERM: a controlled shutdown.
    fn stop(&self) {
        self.script("stop");
    }

    fn start(&self) {
        self.script("start");
    }
}

/// The node that leads `partition` of `topic` now.
fn leader_of(brokers: &str, topic: &str, partition: i32) -> i32 {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("the topic's metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .map(|p| p.leader())
        .expect("the partition")
}

/// Customers reachable by e-mail and push, in a zone where quiet hours do not matter.
async fn put_email_push_customers(fleet: &Fleet, ids: &[String]) {
    for chunk in ids.chunks(5000) {
        fleet
            .put_customers(
                chunk
                    .iter()
                    .map(|id| {
                        json!({"id": id, "contacts": {"email": format!("{id}@x"), "push": format!("tok-{id}")},
                               "consent": {"email": true, "push": true}, "time_zone": "Etc/GMT"})
                    })
                    .collect(),
            )
            .await;
    }
}

/// A fleet on six partitions with a quick counting provider, and `n` customers reachable by
/// e-mail and push (`PREFIX0`...).
async fn campaign_fleet(prefix: &str, n: usize) -> (Fleet, Vec<String>) {
    let mut sim = quiet_provider();
    sim.latency_min_ms = 2;
    sim.latency_max_ms = 10;
    let fleet = Fleet::start(sim, 6).await;
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    put_email_push_customers(&fleet, &ids).await;
    (fleet, ids)
}

fn count(report: &Value, key: &str) -> u64 {
    report["counts"][key].as_u64().unwrap_or(0)
}

async fn outcomes(fleet: &Fleet, campaign: &str) -> u64 {
    let (_, now) = fleet.get(&format!("/v1/campaigns/{campaign}")).await;
    now["progress"]["outcomes"].as_u64().unwrap_or(0)
}

/// An e-mail-then-push campaign to `ids` whose confirmation window is longer than the test:
/// no fallback, so a second message could only be a second send.
async fn post_campaign(fleet: &Fleet, id: &str, ids: &[String]) {
    let (status, created) = fleet
        .post(
            "/v1/campaigns",
            json!({"id": id, "name": id, "template": "offer for {{id}}",
                   "channels": ["email", "push"],
                   "confirmation_timeout_ms": {"email": 600_000, "push": 600_000},
                   "audience": {"customer_ids": ids}}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
}

/// Every recipient delivered once: the report, the slots and the counting provider agree.
async fn assert_each_delivered_once(fleet: &Fleet, report: &Value, n: usize) {
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(count(report, "delivered"), n as u64, "{report}");
    assert_eq!(count(report, "failed"), 0, "{report}");
    assert_eq!(count(report, "uncertain"), 0, "{report}");
    assert_eq!(count(report, "resent"), 0, "{report}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    assert_eq!(sim.recipients_reached_twice, 0, "{sim:?}");
    assert_eq!(
        sim.delivered, n as u64,
        "one delivery per recipient: {sim:?}"
    );
}

/// The fleet's campaign workers as processes: `email` e-mail dispatchers at `rate` calls a
/// second each, one push dispatcher, fan-out and `herald-retry`.
fn campaign_workers(fleet: &Fleet, email: usize, rate: &str) -> Vec<ChildGuard> {
    let dispatch = env!("CARGO_BIN_EXE_herald-dispatch");
    let mut workers: Vec<ChildGuard> = (0..email).map(|_| email_dispatcher(fleet, rate)).collect();
    workers.push(fleet.spawn(dispatch, &["--channel", "push"]));
    workers.push(fleet.spawn(env!("CARGO_BIN_EXE_herald-fanout"), &[]));
    workers.push(fleet.spawn(env!("CARGO_BIN_EXE_herald-retry"), &[]));
    workers
}

fn email_dispatcher(fleet: &Fleet, rate: &str) -> ChildGuard {
    fleet.spawn(
        env!("CARGO_BIN_EXE_herald-dispatch"),
        &[
            "--channel",
            "email",
            "--provider-rate",
            rate,
            "--provider-max-rate",
            rate,
        ],
    )
}

/// The leader of an e-mail partition is SIGKILLed mid-campaign and comes back 20 s later:
/// its partitions move to the other two (which hold every acknowledged message, acks=all with
/// two in sync), every recipient still ends with exactly one delivery, and herald-metrics
/// (which counts only what reached `herald.events`) agrees with the campaign report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_an_email_partition_leader_mid_campaign_loses_nobody_and_reaches_nobody_twice() {
    const N: usize = 20_000;
    let (fleet, ids) = campaign_fleet("L", N).await;
    let (_, metrics) = fleet
        .start_metrics(&fleet.topics.metrics_group(), fleet.shutdown.child_token())
        .await;
    // 2 x 400 calls a second: about 25 s of sending, so the kill and the outage land inside.
    let _workers = campaign_workers(&fleet, 2, "400");
    post_campaign(&fleet, "leader-loss", &ids).await;
    wait_until(
        "a tenth of the campaign's outcomes",
        Duration::from_secs(120),
        || async { outcomes(&fleet, "leader-loss").await >= N as u64 / 10 },
    )
    .await;

    let topic = fleet.topics.notify(Channel::Email);
    let leader = Node(leader_of(fleet.brokers(), &topic, 0));
    let at_kill = outcomes(&fleet, "leader-loss").await;
    leader.kill();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during_outage = outcomes(&fleet, "leader-loss").await;
    leader.start();
    assert!(
        at_kill < N as u64 / 2,
        "the kill landed mid-campaign: {at_kill} outcomes of {N}"
    );
    let report = fleet
        .wait_campaign("leader-loss", Duration::from_secs(300))
        .await;
    eprintln!(
        "leader {} killed at {at_kill} outcomes, {during_outage} when it came back; {report}",
        leader.0
    );
    assert!(
        during_outage > at_kill,
        "the two brokers left went on serving: {at_kill} -> {during_outage}"
    );
    assert_each_delivered_once(&fleet, &report, N).await;
    // The lifecycle events made it through the outage too: herald-metrics, which counts only
    // what reached herald.events, agrees with the campaign report.
    let delivered = fleet
        .metrics_delivered(&metrics, "leader-loss", N as u64, Duration::from_secs(60))
        .await;
    if delivered != N {
        let events = fleet
            .read_topic(&fleet.topics.events(), usize::MAX, Duration::from_secs(20))
            .await;
        let mut kinds: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for m in &events {
            use rdkafka::message::Message as _;
            let v: Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
            kinds
                .entry(v["kind"].to_string())
                .or_default()
                .insert(v["id"].to_string());
        }
        let summary: Vec<(String, usize)> = kinds
            .iter()
            .map(|(k, ids)| (k.clone(), ids.len()))
            .collect();
        eprintln!(
            "events on the topic: {} messages; distinct ids by kind {summary:?}",
            events.len()
        );
    }
    assert_eq!(
        delivered, N,
        "herald-metrics counted every delivery the report holds"
    );
}

/// A dispatcher joins and another leaves mid-campaign: two real rebalances of the e-mail
/// group, waited on through the group coordinator, and still one delivery per recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dispatcher_joining_and_another_leaving_mid_campaign_sends_nothing_twice() {
    const N: usize = 6_000;
    // 150 sends a second per dispatcher: at 300 one CI run had the whole campaign sent by the
    // time the joined member was in the group and 1,000 more outcomes were in (6000 of 6000
    // at the leave), so nothing was left to rebalance.
    const RATE: &str = "150";
    let (fleet, ids) = campaign_fleet("R", N).await;
    let group = fleet.topics.dispatch_group(Channel::Email);
    let mut workers = campaign_workers(&fleet, 1, RATE);
    fleet
        .wait_group_members(&group, 1, Duration::from_secs(60))
        .await;
    post_campaign(&fleet, "rebalance", &ids).await;
    wait_until("the first outcomes", Duration::from_secs(60), || async {
        outcomes(&fleet, "rebalance").await >= 500
    })
    .await;

    let joined = email_dispatcher(&fleet, RATE);
    fleet
        .wait_group_members(&group, 2, Duration::from_secs(60))
        .await;
    let at_join = outcomes(&fleet, "rebalance").await;
    wait_until(
        "progress with two members",
        Duration::from_secs(60),
        || async { outcomes(&fleet, "rebalance").await >= at_join + 1000 },
    )
    .await;
    // The first dispatcher leaves as an upgrade stops it: SIGTERM hands its work back.
    let mut first = workers.remove(0);
    // Where the campaign stands when the member is told to leave (its exit and the group's
    // rebalance can take seconds more, by which time the campaign may be over).
    let at_leave = outcomes(&fleet, "rebalance").await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    first.wait_exit(Duration::from_secs(30)).await;
    fleet
        .wait_group_members(&group, 1, Duration::from_secs(60))
        .await;
    assert!(
        at_leave < N as u64,
        "the member left mid-campaign: {at_leave} of {N}"
    );
    let report = fleet
        .wait_campaign("rebalance", Duration::from_secs(240))
        .await;
    drop(joined);
    eprintln!("joined at {at_join}, left at {at_leave}: {report}");
    assert_each_delivered_once(&fleet, &report, N).await;
}

/// One broker stopped for 30 s while seed 001 clients create and process requests: with two
/// of three copies in sync every write still has its quorum, so no call is refused, and every
/// request created is sent once; nothing is stranded in `queued` or `processing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_stopped_for_30_s_strands_no_request_and_refuses_no_call() {
    let fleet = Fleet::start(quiet_provider(), 4).await;
    let stop = fleet.shutdown.child_token();
    let _dispatchers = [
        fleet.start_dispatcher(Channel::Email, stop.clone()).await,
        fleet.start_dispatcher(Channel::Sms, stop.clone()).await,
    ];
    let victim = Node(leader_of(
        fleet.brokers(),
        &fleet.topics.notify(Channel::Email),
        0,
    ));
    let began = Instant::now();
    let mut ids = Vec::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut stopped_at = None;
    let mut restarted = false;
    let mut i = 0;
    // Bounded: 45 s of calls at most, the broker down from the 5th second to the 35th.
    while began.elapsed() < Duration::from_secs(45) {
        if stopped_at.is_none() && began.elapsed() > Duration::from_secs(5) {
            victim.stop();
            stopped_at = Some(Instant::now());
        }
        if !restarted && stopped_at.is_some_and(|t| t.elapsed() > Duration::from_secs(30)) {
            victim.start();
            restarted = true;
        }
        let channel = if i % 2 == 0 { "email" } else { "sms" };
        let (s, body) = fleet
            .post(
                "/v1/requests",
                json!({"to": format!("user{i}@example.com"), "message": "hola", "type": channel}),
            )
            .await;
        *statuses.entry(s).or_default() += 1;
        if s == 201 {
            let id = body["id"].as_str().expect("id").to_string();
            let (s, _) = fleet
                .post(&format!("/v1/requests/{id}/process"), json!({}))
                .await;
            *statuses.entry(s).or_default() += 1;
            ids.push(id);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restarted, "the broker was stopped and started again");
    let refused: usize = statuses
        .iter()
        .filter(|(s, _)| !(200..=202).contains(*s))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        refused, 0,
        "two brokers of three keep every write's quorum: {statuses:?}"
    );
    let counts = fleet.wait_terminal(&ids, Duration::from_secs(120)).await;
    eprintln!("{} requests; statuses {statuses:?}; {counts:?}", ids.len());
    assert!(ids.len() > 200, "clients kept calling: {}", ids.len());
    assert_eq!(counts.get("sent"), Some(&ids.len()), "{counts:?}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    assert_eq!(sim.delivered, ids.len() as u64, "{sim:?}");
}
