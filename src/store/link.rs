//! The connection to Redis: one server through a connection manager, or a Redis Cluster
//! through the cluster client, behind one `ConnectionLike` so every script and pipeline of the
//! store runs unchanged on either. On a cluster each command goes to the node that owns its
//! key's hash slot; a script's keys all share one hash tag, so every script is single-slot.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::StoreError;

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// A comma-separated list of URLs names a cluster's nodes; `cluster` makes a single URL
    /// the seed of a cluster too.
    pub fn parse(urls: &str, cluster: bool) -> RedisTarget {
        let nodes: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        match nodes.as_slice() {
            [one] if !cluster => RedisTarget::Single(one.clone()),
            _ => RedisTarget::Cluster(nodes),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

/// Bounds of a connection, of either kind.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRIES: u32 = 3;

/// A client that can open links to its target.
#[derive(Clone)]
pub(super) enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Client {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    pub(super) fn open(target: &RedisTarget) -> Result<Client, StoreError> {
        Ok(match target {
            RedisTarget::Single(url) => Client::Single(redis::Client::open(url.as_str())?),
            RedisTarget::Cluster(nodes) => Client::Cluster(
                ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(RETRIES)
                    .build()?,
            ),
        })
    }

    /// Opens a link; the first connection is bounded so a wrong URL fails start-up with a
    /// clear error instead of hanging (the manager retries it on its own).
    pub(super) async fn link(&self) -> Result<Link, StoreError> {
        let limit = Duration::from_secs(10);
        let opening = async {
            match self {
                Client::Single(client) => {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(CONNECT_TIMEOUT)
                        .set_response_timeout(RESPONSE_TIMEOUT)
                        .set_number_of_retries(RETRIES as usize);
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map(Link::Single)
                }
                Client::Cluster(client) => client
                    .get_async_connection()
                    .await
                    .map(|c| Link::Cluster(c, Topology::default())),
            }
        };
        tokio::time::timeout(limit, opening)
            .await
            .map_err(|_| StoreError::ConnectTimeout(limit))?
            .map_err(StoreError::from)
    }
}

/// One connection to Redis, cheap to clone (both kinds multiplex).
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection, Topology),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    /// A cluster takes a pipeline only when all its commands hash to one slot; the store's
    /// plain pipelines batch commands for many customers or campaigns, so on a cluster they
    /// are split into one pipeline per node (by the slot map), and the answers come back in
    /// order. Transactions are sent whole: they are single-slot.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c, topology) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(by_node(c, topology, pipeline))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c, _) => c.get_db(),
        }
    }
}

/// Which node serves which slots, as `CLUSTER SLOTS` last said; shared by a link's clones
/// and dropped when a node answers that a slot moved.
#[derive(Clone, Default)]
pub(super) struct Topology(Arc<RwLock<Option<Arc<SlotMap>>>>);

/// Slot ranges (first, last, node) in order.
struct SlotMap(Vec<(u16, u16, usize)>, Vec<(String, u16)>);

impl SlotMap {
    fn node_of(&self, slot: u16) -> Option<usize> {
        let i = self.0.partition_point(|(_, last, _)| *last < slot);
        self.0
            .get(i)
            .filter(|(first, _, _)| *first <= slot)
            .map(|(_, _, node)| *node)
    }

    fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = SlotMap(Vec::new(), Vec::new());
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let Value::Int(port) = master.get(1)? else {
                return None;
            };
            let node = (host, u16::try_from(*port).ok()?);
            let index = match map.1.iter().position(|n| *n == node) {
                Some(i) => i,
                None => {
                    map.1.push(node);
                    map.1.len() - 1
                }
            };
            map.0.push((
                u16::try_from(*first).ok()?,
                u16::try_from(*last).ok()?,
                index,
            ));
        }
        map.0.sort_unstable();
        Some(map)
    }
}

impl Topology {
    async fn map(&self, c: &mut ClusterConnection) -> Option<Arc<SlotMap>> {
        if let Some(map) = self.0.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(map);
        }
        let reply = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS"),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .ok()?;
        let map = Arc::new(SlotMap::parse(&reply)?);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(map.clone());
        Some(map)
    }

    fn forget(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Runs a pipeline as one pipeline per node. A command whose node cannot be told (no slot
/// map, no key) goes alone, routed and redirected by the cluster connection. When a node's
/// part fails (the node is gone, or one of its slots moved: the cluster connection then
/// reports the whole part as redirected) or answers a command with a redirection, those
/// commands go alone the same way and the slot map is read again on the next call. A part
/// that failed may have run in part already, so those commands can run twice: the store's
/// pipelines hold idempotent commands, or scripts that take a repeat as a duplicate (a
/// receipt applied twice counts one late receipt), as a pipeline run again after NOSCRIPT
/// always did.
async fn by_node(
    c: &ClusterConnection,
    topology: &Topology,
    pipeline: &Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let Some(map) = topology.map(&mut c.clone()).await else {
        return each_command(c, &commands).await;
    };
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); map.1.len()];
    let mut alone: Vec<usize> = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        match key_of(cmd).and_then(|k| map.node_of(slot(k))) {
            Some(node) => groups[node].push(i),
            None => alone.push(i),
        }
    }
    let sends = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(node, group)| {
            let mut c = c.clone();
            let (host, port) = map.1[node].clone();
            let mut part = redis::pipe();
            for &i in group {
                part.add_command(commands[i].clone());
            }
            async move {
                let route = SingleNodeRoutingInfo::ByAddress { host, port };
                c.route_pipeline(&part, 0, group.len(), route).await
            }
        });
    let answers = futures::future::join_all(sends).await;
    let mut values: Vec<Option<Value>> = vec![None; commands.len()];
    let mut moved = false;
    for (group, answer) in groups.iter().filter(|g| !g.is_empty()).zip(answers) {
        match answer {
            Ok(replies) if replies.len() == group.len() => {
                for (&i, value) in group.iter().zip(replies) {
                    if is_redirect(&value) {
                        moved = true;
                        alone.push(i);
                    } else {
                        values[i] = Some(value);
                    }
                }
            }
            _ => {
                moved = true;
                alone.extend(group);
            }
        }
    }
    if moved {
        topology.forget();
    }
    let singles: Vec<&Cmd> = alone.iter().map(|&i| commands[i]).collect();
    for (i, value) in alone.iter().zip(each_command(c, &singles).await?) {
        values[*i] = Some(value);
    }
    Ok(values
        .into_iter()
        .map(|v| v.unwrap_or(Value::Nil))
        .collect())
}

/// A node's answer that the slot is served elsewhere (now or for a while).
fn is_redirect(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}

/// The key that routes a command: the first argument after the name, or for a script the
/// first of its keys.
fn key_of(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        redis::Arg::Cursor => None,
    });
    let name = args.next()??;
    if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        let _script = args.next()??;
        let keys = args.next()??;
        if keys == b"0" {
            return None;
        }
    }
    args.next()?
}

/// Redis Cluster's hash slot: CRC16 (XMODEM) of the key's hash tag, or of the whole key.
fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Sends commands one by one, all at once, each routed (and redirected) by the cluster
/// connection. The first error fails the whole call, as it fails a pipeline's answer (a
/// missing script keeps its kind, so the store still loads its scripts and runs again).
async fn each_command(c: &ClusterConnection, commands: &[&Cmd]) -> redis::RedisResult<Vec<Value>> {
    let calls = commands.iter().map(|cmd| {
        let mut c = c.clone();
        async move { c.req_packed_command(cmd).await }
    });
    try_join_all(calls).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from Redis' CLUSTER KEYSLOT.
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"herald:campaign:{spring}"), slot(b"spring"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot(b"a{}b"), crc16(b"a{}b") % 16384);
        assert_eq!(slot(b"x{ab}y{cd}"), slot(b"ab"));
    }

    #[test]
    fn a_script_is_routed_by_its_first_key_and_a_command_by_its_first_argument() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(2).arg("k1").arg("k2").arg("argv");
        assert_eq!(key_of(&eval), Some(&b"k1"[..]));
        let mut none = redis::cmd("EVALSHA");
        none.arg("abc").arg(0).arg("argv");
        assert_eq!(key_of(&none), None);
        let mut get = redis::cmd("HGET");
        get.arg("h").arg("f");
        assert_eq!(key_of(&get), Some(&b"h"[..]));
    }
}
