//! How Herald's Kafka clients reach a broker that wants TLS or SASL (a managed Kafka):
//! `HERALD_KAFKA_SECURITY_PROTOCOL`, `HERALD_KAFKA_SASL_*` and `HERALD_KAFKA_SSL_CA_LOCATION`,
//! plus any other librdkafka property in `HERALD_KAFKA_PROPERTIES`. librdkafka is built with
//! OpenSSL (rdkafka's `ssl` feature), which TLS and SASL/SCRAM need; SASL/PLAIN and SCRAM are
//! built in, GSSAPI (Kerberos) is not.
//!
//! Every client of a process is made by [`client_config`], which applies the settings
//! [`install`]ed once at start-up: the programs' `Connections::open` and the CLI do so.

use std::path::PathBuf;
use std::sync::OnceLock;

use rdkafka::ClientConfig;

use crate::secret::Secret;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaSecurity {
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, global = true, env = "HERALD_KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,

    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a sasl_* protocol).
    #[arg(long, global = true, env = "HERALD_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,

    #[arg(long, global = true, env = "HERALD_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    #[arg(
        long,
        global = true,
        env = "HERALD_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub kafka_sasl_password: Option<Secret>,

    /// CA certificate(s) to verify the brokers with (PEM); the system's when unset.
    #[arg(long, global = true, env = "HERALD_KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,

    /// Any other librdkafka property: `name=value;name=value`.
    #[arg(
        long,
        global = true,
        env = "HERALD_KAFKA_PROPERTIES",
        hide_env_values = true
    )]
    pub kafka_properties: Option<Secret>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("HERALD_KAFKA_SECURITY_PROTOCOL must be plaintext, ssl, sasl_plaintext or sasl_ssl")]
    Protocol,
    #[error("HERALD_KAFKA_SASL_MECHANISM must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")]
    Mechanism,
    #[error("a sasl_* protocol needs HERALD_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD")]
    Incomplete,
    #[error("HERALD_KAFKA_PROPERTIES is name=value pairs separated by ';'")]
    Properties,
}

static INSTALLED: OnceLock<Vec<(String, String)>> = OnceLock::new();

impl KafkaSecurity {
    /// The librdkafka properties these settings stand for.
    pub fn properties(&self) -> Result<Vec<(String, String)>, SecurityError> {
        let mut props = Vec::new();
        let protocol = self
            .kafka_security_protocol
            .as_deref()
            .map(|p| p.trim().to_ascii_lowercase());
        if let Some(p) = &protocol {
            if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&p.as_str()) {
                return Err(SecurityError::Protocol);
            }
            props.push(("security.protocol".into(), p.clone()));
        }
        if protocol.as_deref().is_some_and(|p| p.starts_with("sasl_")) {
            let mechanism = self
                .kafka_sasl_mechanism
                .as_deref()
                .map(|m| m.trim().to_ascii_uppercase())
                .ok_or(SecurityError::Incomplete)?;
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mechanism.as_str()) {
                return Err(SecurityError::Mechanism);
            }
            let user = self
                .kafka_sasl_username
                .clone()
                .ok_or(SecurityError::Incomplete)?;
            let password = self
                .kafka_sasl_password
                .as_ref()
                .ok_or(SecurityError::Incomplete)?;
            props.push(("sasl.mechanism".into(), mechanism));
            props.push(("sasl.username".into(), user));
            props.push(("sasl.password".into(), password.expose().to_string()));
        }
        if let Some(ca) = &self.kafka_ssl_ca_location {
            props.push(("ssl.ca.location".into(), ca.display().to_string()));
        }
        if let Some(extra) = &self.kafka_properties {
            for pair in extra
                .expose()
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let (name, value) = pair.split_once('=').ok_or(SecurityError::Properties)?;
                props.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        Ok(props)
    }
}

/// Makes `security` the settings of every Kafka client this process creates from now on.
/// The first call wins: a process talks to one cluster.
pub fn install(security: &KafkaSecurity) -> Result<(), SecurityError> {
    let props = security.properties()?;
    let _ = INSTALLED.set(props);
    Ok(())
}

/// A client configuration for `brokers` with the installed security settings.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (name, value) in INSTALLED.get().map(Vec::as_slice).unwrap_or_default() {
        config.set(name, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::BaseProducer;

    fn sasl(mechanism: &str) -> KafkaSecurity {
        KafkaSecurity {
            kafka_security_protocol: Some("SASL_SSL".into()),
            kafka_sasl_mechanism: Some(mechanism.into()),
            kafka_sasl_username: Some("herald".into()),
            kafka_sasl_password: Some("s3cret".into()),
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn sasl_settings_become_librdkafka_properties_and_bad_ones_are_refused() {
        let props = sasl("scram-sha-512").properties().unwrap();
        assert!(props.contains(&("security.protocol".into(), "sasl_ssl".into())));
        assert!(props.contains(&("sasl.mechanism".into(), "SCRAM-SHA-512".into())));
        assert_eq!(sasl("GSSAPI").properties(), Err(SecurityError::Mechanism));
        let mut incomplete = sasl("PLAIN");
        incomplete.kafka_sasl_password = None;
        assert_eq!(incomplete.properties(), Err(SecurityError::Incomplete));
        let bad = KafkaSecurity {
            kafka_security_protocol: Some("tls".into()),
            ..KafkaSecurity::default()
        };
        assert_eq!(bad.properties(), Err(SecurityError::Protocol));
    }

    /// librdkafka refuses `ssl` and SCRAM unless it was built with OpenSSL.
    #[test]
    fn librdkafka_is_built_with_tls_and_scram() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
            let mut config = ClientConfig::new();
            config.set("bootstrap.servers", "127.0.0.1:1");
            for (name, value) in sasl(mechanism).properties().unwrap() {
                config.set(name, value);
            }
            let made: Result<BaseProducer, _> = config.create();
            assert!(made.is_ok(), "{mechanism}: {:?}", made.err());
        }
    }
}
