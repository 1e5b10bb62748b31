//! `herald redis-acl`: the ACL file that gives each program a Redis user of its own.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Secret;
use crate::store::acl::{acl_file, Program};

/// Writes Redis's ACL file (`redis-server --aclfile FILE`): the `default` user off and one
/// user per program (herald-ingest, herald-fanout, herald-dispatch, herald-retry,
/// herald-events, herald-metrics, herald-operator), each limited to the commands Herald
/// sends and to the namespace's keys. Passwords come from HERALD_REDIS_PASSWORD_INGEST,
/// _FANOUT, _DISPATCH, _RETRY, _EVENTS, _METRICS and _OPERATOR (flags or variables; each its
/// own, 32+ characters); the file holds only their SHA-256 hashes. Each program then
/// connects with redis://herald-PROGRAM:PASSWORD@host:6379.
#[derive(clap::Args, Debug)]
pub struct RedisAcl {
    /// Prefix of every Redis key of the fleet (the programs' HERALD_NAMESPACE).
    #[arg(long, env = "HERALD_NAMESPACE", default_value = "herald")]
    namespace: String,
    /// Where to write the file ("-": standard output).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// herald-ingest's Redis password.
    #[arg(long, env = "HERALD_REDIS_PASSWORD_INGEST", hide_env_values = true)]
    ingest_password: Option<Secret>,
    /// herald-fanout's Redis password.
    #[arg(long, env = "HERALD_REDIS_PASSWORD_FANOUT", hide_env_values = true)]
    fanout_password: Option<Secret>,
    /// The dispatchers' Redis password (every channel's).
    #[arg(long, env = "HERALD_REDIS_PASSWORD_DISPATCH", hide_env_values = true)]
    dispatch_password: Option<Secret>,
    /// herald-retry's Redis password.
    #[arg(long, env = "HERALD_REDIS_PASSWORD_RETRY", hide_env_values = true)]
    retry_password: Option<Secret>,
    /// herald-events' Redis password.
    #[arg(long, env = "HERALD_REDIS_PASSWORD_EVENTS", hide_env_values = true)]
    events_password: Option<Secret>,
    /// herald-metrics' Redis password.
    #[arg(long, env = "HERALD_REDIS_PASSWORD_METRICS", hide_env_values = true)]
    metrics_password: Option<Secret>,
    /// The operators' (`herald dlq replay`) Redis password.
    #[arg(long, env = "HERALD_REDIS_PASSWORD_OPERATOR", hide_env_values = true)]
    operator_password: Option<Secret>,
}

impl RedisAcl {
    fn password(&self, program: Program) -> Option<String> {
        let secret = match program {
            Program::Ingest => &self.ingest_password,
            Program::Fanout => &self.fanout_password,
            Program::Dispatch => &self.dispatch_password,
            Program::Retry => &self.retry_password,
            Program::Events => &self.events_password,
            Program::Metrics => &self.metrics_password,
            Program::Operator => &self.operator_password,
        };
        secret.as_ref().map(|s| s.expose().to_string())
    }

    pub fn execute(self) -> anyhow::Result<()> {
        let file = acl_file(&self.namespace, |p| self.password(p))?;
        if self.out.as_os_str() == "-" {
            print!("{file}");
            return Ok(());
        }
        // Readable by Redis's own user: it holds hashes only.
        crate::replace_file::replace_file(&self.out, 0o644, &[file.as_bytes()])
            .with_context(|| format!("writing {}", self.out.display()))?;
        eprintln!(
            "wrote {} Redis users to {}",
            Program::ALL.len(),
            self.out.display()
        );
        Ok(())
    }
}
