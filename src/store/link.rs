//! The connection to Redis: one server through a connection manager, or a Redis Cluster
//! through the cluster client, behind one `ConnectionLike` so every script and pipeline of the
//! store runs unchanged on either. On a cluster each command goes to the node that owns its
//! key's hash slot; a script's keys all share one hash tag, so every script is single-slot.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};

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
    /// The cluster client, and how to reach a node directly (the first seed's settings:
    /// password, database, protocol), or `None` when its nodes are not reached over plain TCP.
    Cluster(ClusterClient, Option<Arc<ConnectionInfo>>),
}

impl Client {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(..))
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
                direct_info(nodes.first().map(String::as_str)),
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
                Client::Cluster(client, direct) => client
                    .get_async_connection()
                    .await
                    .map(|c| Link::Cluster(c, Topology::new(direct.clone()))),
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
            Link::Cluster(c, topology) => Box::pin(one_command(c, topology, cmd)),
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

/// Which node serves which slots, as `CLUSTER SLOTS` last said, with a connection to each
/// node; shared by a link's clones and dropped when a node answers that a slot moved or its
/// connection fails.
#[derive(Clone)]
pub(super) struct Topology {
    map: Arc<RwLock<Option<Arc<SlotMap>>>>,
    direct: Option<Arc<ConnectionInfo>>,
}

/// Slot ranges (first, last, node) in order, the nodes' addresses, and a connection to each
/// node opened on first use.
///
/// Scripts and per-node pipelines go straight to their node's connection: through the
/// cluster connection each command crossed its routing task and then the node's connection
/// task, which cost the dispatcher about 28 µs per recipient (two scripts) on the 1M
/// benchmark. A redirection still goes through the cluster connection, which follows it.
struct SlotMap(
    Vec<(u16, u16, usize)>,
    Vec<(String, u16)>,
    Vec<tokio::sync::OnceCell<MultiplexedConnection>>,
);

/// How to reach one node directly, from the first seed URL: only over plain TCP (a TLS or
/// Unix-socket seed keeps every command on the cluster connection).
fn direct_info(seed: Option<&str>) -> Option<Arc<ConnectionInfo>> {
    let info = seed?.into_connection_info().ok()?;
    matches!(info.addr, ConnectionAddr::Tcp(..)).then(|| Arc::new(info))
}

impl SlotMap {
    /// A connection to `node` alone; `None` if none can be opened now (the caller goes
    /// through the cluster connection instead).
    async fn node(&self, node: usize, base: &ConnectionInfo) -> Option<MultiplexedConnection> {
        let (host, port) = self.1.get(node)?.clone();
        let cell = self.2.get(node)?;
        let open = || async move {
            let mut info = base.clone();
            info.addr = ConnectionAddr::Tcp(host, port);
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT);
            redis::Client::open(info)?
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        cell.get_or_try_init(open).await.ok().cloned()
    }

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
        let mut map = SlotMap(Vec::new(), Vec::new(), Vec::new());
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
        map.2 = map.1.iter().map(|_| tokio::sync::OnceCell::new()).collect();
        Some(map)
    }
}

impl Topology {
    fn new(direct: Option<Arc<ConnectionInfo>>) -> Self {
        Topology {
            map: Arc::default(),
            direct,
        }
    }

    /// A connection to the node that serves `key`, when the map names one.
    async fn node_of(&self, c: &ClusterConnection, key: &[u8]) -> Option<MultiplexedConnection> {
        let base = self.direct.as_ref()?;
        let map = self.map(&mut c.clone()).await?;
        map.node(map.node_of(slot(key))?, base).await
    }

    async fn map(&self, c: &mut ClusterConnection) -> Option<Arc<SlotMap>> {
        if let Some(map) = self.map.read().unwrap_or_else(|e| e.into_inner()).clone() {
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
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Some(map.clone());
        Some(map)
    }

    fn forget(&self) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// One command on a cluster. A script goes straight to its node; if the node answers with a
/// redirection (it has not run it), it is sent again through the cluster connection, which
/// follows the redirection, and the map is read again next time. A failed connection is not
/// a redirection: the script may have run, so the error is returned as it would be from one
/// Redis, and the connection is replaced on the next call. Other commands (script loads,
/// which go to every master, and the rare single commands) go through the cluster connection.
async fn one_command(
    c: &ClusterConnection,
    topology: &Topology,
    cmd: &Cmd,
) -> redis::RedisResult<Value> {
    if let Some(key) = script_key(cmd) {
        if let Some(mut node) = topology.node_of(c, key).await {
            match node.req_packed_command(cmd).await {
                Ok(value) if !is_redirect(&value) => return Ok(value),
                Err(e) if !is_redirect_error(&e) => {
                    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        topology.forget();
                    }
                    return Err(e);
                }
                _ => topology.forget(),
            }
        }
    }
    c.clone().req_packed_command(cmd).await
}

/// The first key of a script call (`EVALSHA`/`EVAL` with keys), which routes it.
fn script_key(cmd: &Cmd) -> Option<&[u8]> {
    let name = match cmd.args_iter().next()? {
        redis::Arg::Simple(name) => name,
        redis::Arg::Cursor => return None,
    };
    let script = name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL");
    script.then(|| key_of(cmd)).flatten()
}

fn is_redirect_error(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::Moved | ErrorKind::Ask | ErrorKind::TryAgain | ErrorKind::ClusterDown
    )
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
            let map = &map;
            async move {
                let direct = match &topology.direct {
                    Some(base) => map.node(node, base).await,
                    None => None,
                };
                match direct {
                    Some(mut node) => node.req_packed_commands(&part, 0, group.len()).await,
                    None => {
                        let route = SingleNodeRoutingInfo::ByAddress { host, port };
                        c.route_pipeline(&part, 0, group.len(), route).await
                    }
                }
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
