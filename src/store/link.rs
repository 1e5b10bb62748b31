//! The connection to Redis: one server through a connection manager, or a Redis Cluster
//! through the cluster client, behind one `ConnectionLike` so every script and pipeline of the
//! store runs unchanged on either. On a cluster each command goes to the node that owns its
//! key's hash slot; a script's keys all share one hash tag, so every script is single-slot.

use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
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

/// A client that can open links to its target.
#[derive(Clone)]
pub(super) enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Client {
    pub(super) fn open(target: &RedisTarget) -> Result<Client, StoreError> {
        Ok(match target {
            RedisTarget::Single(url) => Client::Single(redis::Client::open(url.as_str())?),
            RedisTarget::Cluster(nodes) => Client::Cluster(
                ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(5))
                    .retries(3)
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
                        .set_connection_timeout(Duration::from_secs(2))
                        .set_response_timeout(Duration::from_secs(5))
                        .set_number_of_retries(3);
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map(Link::Single)
                }
                Client::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
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
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    /// A cluster takes a pipeline only when all its commands hash to one slot; the store's
    /// plain pipelines batch commands for many customers or campaigns, so on a cluster their
    /// commands go out one by one, all at once (each node's connection pipelines them), and
    /// the answers come back in order. Transactions are sent whole: they are single-slot.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => {
                if pipeline.is_transaction() {
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(each_command(c, pipeline))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// Runs a pipeline's commands concurrently, each routed by its own key. The first error
/// fails the whole call, as it fails a pipeline's answer (a missing script keeps its kind, so
/// the store still loads its scripts and runs the pipeline again).
async fn each_command(
    c: &ClusterConnection,
    pipeline: &Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    let calls = pipeline.cmd_iter().map(|cmd| {
        let mut c = c.clone();
        async move { c.req_packed_command(cmd).await }
    });
    try_join_all(calls).await
}
