//! `herald-dev bench-reserve` and `herald-dev token`: flash-promo load and bearer tokens for
//! local use.

use std::time::Duration;

use crate::auth::{Jwt, Role};
use crate::config::Secret;

/// Reserve latency: USERS synthetic users (`PREFIX0..`) each reserve a unit of PROMO,
/// CONCURRENCY at a time; prints p50/p99/max and the statuses (for benchmarks).
#[derive(clap::Args, Debug)]
pub struct BenchReserve {
    #[arg(long)]
    promo: String,
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    #[arg(long, default_value_t = 2000)]
    concurrency: usize,
    #[arg(long, default_value = "rb")]
    prefix: String,
    /// HS256 secret, the same herald-ingest has.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Secret,
}

pub async fn execute(command: BenchReserve, api: &str) -> anyhow::Result<()> {
    let BenchReserve {
        promo,
        users,
        concurrency,
        prefix,
        jwt_secret,
    } = command;
    let jwt = Jwt::new(jwt_secret.expose())?;
    let run =
        crate::dev::loadgen::bench_reserve(api, &promo, &jwt, &prefix, users, concurrency).await?;
    let (lat, statuses, secs) = (run.latencies, run.statuses, run.elapsed.as_secs_f64());
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    println!("reserve_requests {}", lat.len());
    println!("reserve_per_sec {:.0}", lat.len() as f64 / secs);
    println!("reserve_p50_ms {:.2}", q(0.5));
    println!("reserve_p99_ms {:.2}", q(0.99));
    println!("reserve_max_ms {:.2}", lat.last().copied().unwrap_or(0.0));
    for (status, n) in statuses {
        println!("reserve_status_{status} {n}");
    }
    Ok(())
}

/// Mint a bearer token for the flash-promo API with the configured secret (local use and
/// tests; production tokens come from your identity provider).
#[derive(clap::Args, Debug)]
pub struct Token {
    #[arg(long, value_enum)]
    role: Role,
    /// The caller's id: a customer id for a user.
    #[arg(long)]
    sub: String,
    /// The shoppers' HS256 secret, the same herald-ingest has (for `--role user`).
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<Secret>,
    /// The admins' HS256 secret, the same herald-ingest has (for `--role admin`).
    #[arg(long, env = "HERALD_JWT_ADMIN_SECRET", hide_env_values = true)]
    jwt_admin_secret: Option<Secret>,
    /// Validity in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
    #[command(flatten)]
    policy: crate::auth::JwtPolicy,
}

impl Token {
    pub fn execute(self) -> anyhow::Result<()> {
        let (secret, variable) = match self.role {
            Role::User => (self.jwt_secret, "HERALD_JWT_SECRET"),
            Role::Admin => (self.jwt_admin_secret, "HERALD_JWT_ADMIN_SECRET"),
        };
        let secret = secret.ok_or_else(|| {
            anyhow::anyhow!("a {:?} token is signed with {variable}: set it", self.role)
        })?;
        let jwt = Jwt::with_policy(secret.expose(), self.policy)?;
        let ttl = Duration::from_secs(self.ttl_secs);
        println!("{}", jwt.mint(&self.sub, self.role, ttl)?);
        Ok(())
    }
}
