//! Encrypted transport to Redis: a program given a `rediss://` URL talks TLS to a Redis that
//! only speaks TLS, trusting the CA the operator names (`SSL_CERT_FILE`, read by
//! rustls-native-certs), and refuses a server it cannot verify, without printing the password.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_child, wait_until, ChildGuard, Fleet};

fn openssl(args: &[&str], dir: &std::path::Path) {
    let made = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian's package)");
    assert!(made.success(), "openssl {args:?}");
}

/// A Redis on `port` that only speaks TLS, with a certificate for 127.0.0.1 from a CA of the
/// test's own, and a password; the CA's certificate.
fn tls_redis(dir: &std::path::Path, port: u16) -> (ChildGuard, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let days = ["-days", "1"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=herald-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ][..],
            &days,
        ]
        .concat(),
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            &[
                "x509",
                "-req",
                "-in",
                "req.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "ext.cnf",
                "-out",
                "cert.pem",
            ][..],
            &days,
        ]
        .concat(),
        dir,
    );
    let redis = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--requirepass", "tls-test-password-7f3a"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    (ChildGuard(Some(redis)), dir.join("ca.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_talks_tls_to_redis_and_refuses_a_server_it_cannot_verify() {
    let fleet = Fleet::start(crate::harness::quiet_provider(), 1).await;
    let dir = std::env::temp_dir().join(format!("herald-tls-{}", fleet.ns));
    let port = free_port();
    let (_redis, ca) = tls_redis(&dir, port);
    let url = format!("rediss://:tls-test-password-7f3a@127.0.0.1:{port}/0");
    let metrics = |trust: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald-metrics"));
        let addr = format!("127.0.0.1:{}", free_port());
        cmd.args(["--http-addr", &addr])
            .env("HERALD_KAFKA_BROKERS", fleet.brokers())
            .env("HERALD_REDIS_URL", &url)
            .env("HERALD_NAMESPACE", &fleet.ns)
            .env("HERALD_API_KEYS_FILE", &fleet.keys_file)
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match trust {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env("SSL_CERT_FILE", "/nonexistent-ca.pem"),
        };
        (cmd.spawn().unwrap(), addr)
    };

    let (child, addr) = metrics(Some(&ca));
    let _guard = ChildGuard(Some(child));
    wait_until(
        "herald-metrics ready over TLS",
        Duration::from_secs(20),
        || {
            let r = fleet.anon.get(format!("http://{addr}/readyz")).send();
            async move { r.await.map(|r| r.status() == 200).unwrap_or(false) }
        },
    )
    .await;

    let (mut untrusting, _) = metrics(None);
    let status = wait_child(&mut untrusting, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(untrusting.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "started against a Redis it cannot verify"
    );
    assert!(stderr.contains("Redis"), "{stderr}");
    assert!(
        !stderr.contains("tls-test-password-7f3a"),
        "the password is printed: {stderr}"
    );
}
