//! What only a Redis Cluster can show. These run in `scripts/test.sh`'s cluster phase, where
//! `HERALD_REDIS_URL` names the nodes of the local cluster; on a single Redis there is no slot
//! to move and they return at once.

use herald::model::{CampaignId, Channel, Customer, CustomerId, Delivery, Message, UncertainSend};
use herald::store::{OnceClaim, SentOutcome};

use crate::harness::TestStores;
use redis::aio::MultiplexedConnection;
use serde_json::json;

use crate::harness::redis_url;

/// A master of the cluster: its address, its id and a connection to it alone.
struct Node {
    host: String,
    port: u16,
    id: String,
    conn: MultiplexedConnection,
}

async fn nodes(urls: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for url in urls.split(',') {
        let client = redis::Client::open(url).expect("a node's URL");
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut conn)
            .await
            .unwrap();
        let info = client.get_connection_info();
        let (host, port) = match &info.addr {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => panic!("a TCP node, not {other:?}"),
        };
        nodes.push(Node {
            host,
            port,
            id,
            conn,
        });
    }
    nodes
}

async fn keys_in_slot(node: &mut Node, slot: u16) -> Vec<String> {
    redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query_async(&mut node.conn)
        .await
        .unwrap()
}

/// Moves `slot`, keys and all, from `from` to `to` the way `redis-cli --cluster reshard` does.
async fn move_slot(nodes: &mut [Node], slot: u16, from: usize, to: usize) {
    let (from_id, to_id) = (nodes[from].id.clone(), nodes[to].id.clone());
    let (to_host, to_port) = (nodes[to].host.clone(), nodes[to].port);
    let set = |state: &str, id: &str| {
        let mut c = redis::cmd("CLUSTER");
        c.arg("SETSLOT").arg(slot).arg(state).arg(id);
        c
    };
    let _: () = set("IMPORTING", &from_id)
        .query_async(&mut nodes[to].conn)
        .await
        .unwrap();
    let _: () = set("MIGRATING", &to_id)
        .query_async(&mut nodes[from].conn)
        .await
        .unwrap();
    loop {
        let keys = keys_in_slot(&mut nodes[from], slot).await;
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg(&to_host)
            .arg(to_port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut nodes[from].conn)
            .await
            .unwrap();
    }
    for node in nodes.iter_mut() {
        let _: () = set("NODE", &to_id)
            .query_async(&mut node.conn)
            .await
            .unwrap();
    }
}

/// Moves the slot of `key` (which must exist) from the master that holds it to the next one.
async fn move_slot_of(urls: &str, key: &str) {
    let mut nodes = nodes(urls).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut nodes[0].conn)
        .await
        .unwrap();
    let mut owner = None;
    for (i, node) in nodes.iter_mut().enumerate() {
        if keys_in_slot(node, slot).await.iter().any(|k| k == key) {
            owner = Some(i);
        }
    }
    let from = owner.unwrap_or_else(|| panic!("no node holds {key}"));
    let to = (from + 1) % nodes.len();
    move_slot(&mut nodes, slot, from, to).await;
    assert!(keys_in_slot(&mut nodes[to], slot)
        .await
        .iter()
        .any(|k| k == key));
}

/// The cluster's URL, a fresh namespace and a store on them; `None` on a single Redis.
async fn cluster_store() -> Option<(String, String, TestStores)> {
    let url = redis_url();
    if !url.contains(',') {
        eprintln!("a single Redis: no slot to move");
        return None;
    }
    let ns = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let store = TestStores::connect(&url, &ns)
        .await
        .expect("the local cluster");
    Some((url, ns, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_after_the_store_read_the_slot_map_is_followed() {
    let Some((url, ns, store)) = cluster_store().await else {
        return;
    };
    assert!(store.is_cluster());
    let ids: Vec<CustomerId> = (0..30)
        .map(|i| CustomerId::parse(&format!("m{i}")).unwrap())
        .collect();
    let profile: Customer = serde_json::from_value(json!({"name": "Moved"})).unwrap();
    let profiles: Vec<(CustomerId, Customer)> =
        ids.iter().map(|id| (id.clone(), profile.clone())).collect();
    store.customers.put_customers(&profiles).await.unwrap();
    // Read through per-node pipelines: the store has its slot map now.
    let read = store.customers.customers(&ids).await.unwrap();
    assert!(read.iter().all(Option::is_some));

    let key = format!("{ns}:customer:m0");
    move_slot_of(&url, &key).await;

    // The store's map still names the old node: the node's MOVED is followed.
    let read = store.customers.customers(&ids).await.unwrap();
    assert!(
        read.iter().all(Option::is_some),
        "a profile lost after its slot moved: {read:?}"
    );
    store.customers.put_customers(&profiles).await.unwrap();
    assert!(store.customers.customer(&ids[0]).await.unwrap().is_some());
}

/// A script whose slot moved after the store read the slot map (and after its first script
/// there) runs once, on the new node: the node's MOVED is followed, not taken for the answer
/// and not run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_slot_moved_runs_once_on_the_new_node() {
    let Some((url, _ns, store)) = cluster_store().await else {
        return;
    };
    let d = Delivery {
        campaign: CampaignId::parse("moving").unwrap(),
        customer: CustomerId::parse("c1").unwrap(),
        attempt: 0,
        message: Message {
            to: "x".into(),
            message: "hi".into(),
            channel: Channel::Email,
        },
        timeout_ms: 60_000,
        fanned_out_ms: 0,
        on_uncertain: UncertainSend::Resend,
        email: None,
        whatsapp: None,
    };
    let lease = std::time::Duration::from_secs(30);
    // The claim reads the slot map and opens the node's connection.
    assert_eq!(
        store
            .slots
            .claim_slot(&d, "o1", lease, None, true)
            .await
            .unwrap(),
        OnceClaim::Claimed
    );

    let key = store
        .slots
        .slot_key(&d.campaign, &d.customer)
        .await
        .unwrap();
    move_slot_of(&url, &key).await;

    // Run once on the new node: a second run of mark_sent would find the slot `sent` and
    // answer that the lease was lost.
    assert_eq!(
        store
            .slots
            .mark_sent(&d, "o1", "p1", "sim", false)
            .await
            .unwrap(),
        SentOutcome::AwaitingReceipt
    );
    let slot_now = store.slots.slot(&d.campaign, &d.customer).await.unwrap();
    assert_eq!(slot_now.get("st").map(String::as_str), Some("sent"));
    // And the next script, with the map read again, goes to the new node directly.
    assert_eq!(
        store
            .slots
            .claim_slot(&d, "o2", lease, None, true)
            .await
            .unwrap(),
        OnceClaim::Duplicate("sent".into())
    );
}

#[tokio::test]
async fn a_cluster_node_named_as_one_redis_is_refused_with_how_to_name_the_cluster() {
    let url = redis_url();
    let Some(first) = url.split(',').next().filter(|_| url.contains(',')) else {
        eprintln!("a single Redis: no cluster node to name");
        return;
    };
    let refused = TestStores::connect(first, "t-node")
        .await
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(message.contains("HERALD_REDIS_CLUSTER=1"), "{message}");
}
