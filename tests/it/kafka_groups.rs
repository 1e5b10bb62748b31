//! `herald groups` on the local stack's Apache Kafka: an operator lists, describes and moves
//! a consumer group, and a reset under live consumers is refused.

use std::time::Duration;

use herald::kafka;
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::harness::{quiet_provider, Fleet};

/// The CLI against this fleet: exit status, standard output and standard error.
async fn groups_cli(fleet: &Fleet, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("groups")
        .args(args)
        .env("HERALD_KAFKA_BROKERS", fleet.brokers())
        .env("HERALD_NAMESPACE", &fleet.ns)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The committed offset of partition 0 in `herald groups describe`'s table.
fn committed_of_partition_0(describe: &str) -> String {
    describe
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.len() == 4 && cols[0] == "0")
        .map(|cols| cols[1].to_string())
        .unwrap_or_else(|| panic!("no partition 0 row in:\n{describe}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_reset_to_replay_and_a_reset_under_live_members_is_refused() {
    let fleet = Fleet::start(quiet_provider(), 1).await;
    let topic = fleet.topics.sales();
    let group = fleet.topics.group("loyalty");
    let producer = kafka::producer(fleet.brokers()).unwrap();
    for i in 0..5 {
        kafka::publish(&producer, &topic, &format!("k{i}"), b"{}", None)
            .await
            .unwrap();
    }
    let args = |to: &'static str, dry: bool| {
        let mut a = vec!["reset", "--group", &group, "--topic", &topic, "--to", to];
        if dry {
            a.push("--dry-run");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let fleet = &fleet;
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            groups_cli(fleet, &a).await
        }
    };
    let describe = || {
        run(vec![
            "describe".into(),
            "--group".into(),
            group.clone(),
            "--topic".into(),
            topic.clone(),
        ])
    };

    let (ok, out, err) = run(args("latest", false)).await;
    assert!(ok, "{err}");
    assert!(out.contains("moved"), "{out}");
    let (_, out, _) = describe().await;
    assert_eq!(committed_of_partition_0(&out), "5", "{out}");

    let (ok, out, err) = run(args("earliest", true)).await;
    assert!(ok, "{err}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    let (_, out, _) = describe().await;
    assert_eq!(
        committed_of_partition_0(&out),
        "5",
        "a dry run changes nothing: {out}"
    );

    let (ok, _, err) = run(args("earliest", false)).await;
    assert!(ok, "{err}");
    let (_, out, _) = describe().await;
    assert_eq!(committed_of_partition_0(&out), "0", "{out}");
    let (ok, out, err) = run(args("3", false)).await;
    assert!(ok, "{err}");
    assert!(out.contains("moved"), "{out}");
    let (_, out, _) = describe().await;
    assert_eq!(committed_of_partition_0(&out), "3", "{out}");

    // A live member: the reset is refused, naming why, and nothing moves.
    let live: StreamConsumer = kafka::consumer(fleet.brokers(), &group).unwrap();
    live.subscribe(&[&topic]).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), live.recv()).await;
    fleet
        .wait_group_members(&group, 1, Duration::from_secs(30))
        .await;
    let (_, listed, _) = run(vec!["list".into()]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&group) && l.contains("Stable")),
        "{listed}"
    );
    let (ok, _, err) = run(args("earliest", false)).await;
    assert!(!ok, "a reset under a live member must fail");
    assert!(err.contains("live member"), "{err}");
}
