//! Redis users, one per program (security review, finding 6): each program authenticates as
//! `herald-<program>` with a password of its own, may run only the commands Herald sends
//! (its own and those of its Lua scripts) and touch only keys under its namespace;
//! herald-metrics only its counters, the providers' reports and (reading) campaigns'
//! records. The `default` user is off, so a caller without a password gets nothing, and no
//! Herald user can FLUSHALL, CONFIG, KEYS, DEBUG or read another fleet's keys.
//!
//! `herald redis-acl` writes the file Redis loads with `--aclfile`; it holds SHA-256 hashes
//! of the passwords, never the passwords.

use std::fmt;

/// A program of the fleet, as a Redis user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Ingest,
    Fanout,
    Dispatch,
    Retry,
    Events,
    Metrics,
    /// The operators' `herald` CLI (topics, customers, requests, campaigns).
    Operator,
}

impl Program {
    pub const ALL: [Program; 7] = [
        Program::Ingest,
        Program::Fanout,
        Program::Dispatch,
        Program::Retry,
        Program::Events,
        Program::Metrics,
        Program::Operator,
    ];

    fn name(self) -> &'static str {
        match self {
            Program::Ingest => "ingest",
            Program::Fanout => "fanout",
            Program::Dispatch => "dispatch",
            Program::Retry => "retry",
            Program::Events => "events",
            Program::Metrics => "metrics",
            Program::Operator => "operator",
        }
    }

    /// Its Redis user name.
    pub fn user(self) -> String {
        format!("herald-{}", self.name())
    }

    /// The variable its password is read from.
    pub fn password_var(self) -> &'static str {
        match self {
            Program::Ingest => "HERALD_REDIS_PASSWORD_INGEST",
            Program::Fanout => "HERALD_REDIS_PASSWORD_FANOUT",
            Program::Dispatch => "HERALD_REDIS_PASSWORD_DISPATCH",
            Program::Retry => "HERALD_REDIS_PASSWORD_RETRY",
            Program::Events => "HERALD_REDIS_PASSWORD_EVENTS",
            Program::Metrics => "HERALD_REDIS_PASSWORD_METRICS",
            Program::Operator => "HERALD_REDIS_PASSWORD_OPERATOR",
        }
    }

    /// The key patterns it may use, as ACL selectors.
    fn key_patterns(self, namespace: &str) -> Vec<String> {
        let ns = escape_glob(namespace);
        match self {
            // Its counters (one hash slot, `{metrics}`), the providers' reports (it prunes
            // stale entries as it reads them) and, read-only, campaigns' records (a campaign's
            // size on the dashboard). No customer, no request.
            Program::Metrics => vec![
                format!("~{ns}:{{metrics}}:*"),
                format!("~{ns}:providers"),
                format!("%R~{ns}:campaign:*"),
            ],
            _ => vec![format!("~{ns}:*")],
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.user())
    }
}

/// Commands Herald sends itself, those its Lua scripts call (Redis checks a script's calls
/// against the caller's user too), and those a cluster client needs to find the slots.
/// Listed from the code (`redis::cmd`, the typed calls, `redis.call` in the scripts) and
/// checked by the redis_acl test, which runs the fleet as these users.
const COMMANDS: &[&str] = &[
    // connection and discovery
    "ping",
    "info",
    "select",
    "cluster|slots",
    "cluster|shards",
    "asking",
    "readonly",
    // scripts and transactions
    "evalsha",
    "eval",
    "script|load",
    "multi",
    "exec",
    "discard",
    // strings and keys
    "get",
    "set",
    "del",
    "exists",
    "expire",
    "ttl",
    "pexpireat",
    "pexpiretime",
    "getbit",
    "setbit",
    "time",
    // hashes
    "hget",
    "hmget",
    "hgetall",
    "hset",
    "hmset",
    "hsetnx",
    "hexists",
    "hdel",
    "hincrby",
    "hlen",
    // lists
    "lrange",
    "lpush",
    "rpush",
    "llen",
    "ltrim",
    // sets
    "sadd",
    "srem",
    "smembers",
    "sismember",
    // sorted sets
    "zadd",
    "zrem",
    "zcard",
    "zscore",
    "zrangebyscore",
    "zscan",
    "zrevrange",
    "zrevrangebyscore",
    "zpopmin",
    "zremrangebyrank",
    // geo (flash promos near a shopper)
    "geoadd",
    "geosearch",
];

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error(
        "{var} is not set: each program needs a Redis password of its own (openssl rand -hex 32)"
    )]
    Missing { var: &'static str },
    /// Short, or an example's: the check every secret Herald verifies passes.
    #[error(transparent)]
    Weak(#[from] crate::auth::secrets::WeakSecret),
    #[error("{first} and {second} hold the same password: each program needs its own")]
    Shared {
        first: &'static str,
        second: &'static str,
    },
    #[error("the namespace is empty")]
    EmptyNamespace,
}

/// Redis's ACL file for a fleet: `default` off, then one user per program.
/// `password` gives each program's password (None: not set).
pub fn acl_file(
    namespace: &str,
    password: impl Fn(Program) -> Option<String>,
) -> Result<String, AclError> {
    if namespace.is_empty() {
        return Err(AclError::EmptyNamespace);
    }
    let passwords = Program::ALL
        .iter()
        .map(|&p| checked_password(p, password(p)).map(|pw| (p, pw)))
        .collect::<Result<Vec<_>, _>>()?;
    refuse_shared(&passwords)?;
    let mut file = String::from("user default off resetchannels -@all\n");
    for (program, pw) in &passwords {
        file.push_str(&user_line(*program, namespace, pw));
        file.push('\n');
    }
    Ok(file)
}

fn checked_password(program: Program, password: Option<String>) -> Result<String, AclError> {
    let var = program.password_var();
    let password = password
        .filter(|p| !p.is_empty())
        .ok_or(AclError::Missing { var })?;
    crate::auth::secrets::check(var, &password)?;
    Ok(password)
}

/// One program's password must not open another's user: revoking one would not revoke it.
fn refuse_shared(passwords: &[(Program, String)]) -> Result<(), AclError> {
    for (i, (a, pa)) in passwords.iter().enumerate() {
        if let Some((b, _)) = passwords[i + 1..].iter().find(|(_, pb)| pb == pa) {
            return Err(AclError::Shared {
                first: a.password_var(),
                second: b.password_var(),
            });
        }
    }
    Ok(())
}

fn user_line(program: Program, namespace: &str, password: &str) -> String {
    let hash = crate::auth::hex::encode(
        ring::digest::digest(&ring::digest::SHA256, password.as_bytes()).as_ref(),
    );
    let commands: Vec<String> = COMMANDS.iter().map(|c| format!("+{c}")).collect();
    format!(
        "user {} on #{hash} resetchannels -@all {} {}",
        program.user(),
        commands.join(" "),
        program.key_patterns(namespace).join(" ")
    )
}

/// A namespace is taken literally in a key pattern.
fn escape_glob(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secrets::WeakSecret;

    fn password(p: Program) -> Option<String> {
        Some(format!("{:0>40}", p.name()))
    }

    #[test]
    fn the_default_user_is_off_and_every_program_has_a_user() {
        let file = acl_file("herald", password).unwrap();
        let lines: Vec<&str> = file.lines().collect();
        assert!(lines[0].starts_with("user default off"), "{}", lines[0]);
        for p in Program::ALL {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("user {} on #", p.user()))),
                "{p}"
            );
        }
    }

    #[test]
    fn the_file_holds_hashes_not_passwords() {
        let file = acl_file("herald", password).unwrap();
        for p in Program::ALL {
            assert!(!file.contains(&password(p).unwrap()), "{p}");
        }
    }

    #[test]
    fn metrics_reaches_its_counters_the_providers_reports_and_reads_campaigns_only() {
        let file = acl_file("shop", password).unwrap();
        let line = file.lines().find(|l| l.contains("herald-metrics")).unwrap();
        assert!(
            line.ends_with(" ~shop:{metrics}:* ~shop:providers %R~shop:campaign:*"),
            "{line}"
        );
        let ingest = file.lines().find(|l| l.contains("herald-ingest")).unwrap();
        assert!(ingest.ends_with(" ~shop:*"), "{ingest}");
    }

    #[test]
    fn glob_characters_of_a_namespace_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn a_missing_short_or_shared_password_is_refused_by_its_variable() {
        let missing = acl_file("h", |p| (p != Program::Retry).then(|| password(p).unwrap()));
        assert!(
            matches!(&missing, Err(AclError::Missing { var }) if *var == "HERALD_REDIS_PASSWORD_RETRY"),
            "{missing:?}"
        );
        let short = acl_file("h", |p| {
            Some(if p == Program::Events {
                "short".into()
            } else {
                password(p).unwrap()
            })
        });
        assert!(
            matches!(&short, Err(AclError::Weak(WeakSecret::Short { name, .. })) if *name == "HERALD_REDIS_PASSWORD_EVENTS"),
            "{short:?}"
        );
        let shared = acl_file("h", |p| {
            Some(if p == Program::Fanout {
                password(Program::Ingest).unwrap()
            } else {
                password(p).unwrap()
            })
        });
        assert!(matches!(shared, Err(AclError::Shared { .. })), "{shared:?}");
    }
}
