//! Child processes, ports, waits and the checks many tests share.

use super::*;

/// A child process that is killed when the test ends, pass or fail, so that no orphan
/// outlives the test and holds its output pipe open.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn kill(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for exit without blocking the test's runtime (which serves the provider and API).
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("child already waited for");
        let pid = child.id();
        let waited = tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || (child.wait(), child)),
        )
        .await;
        match waited {
            Ok(Ok((status, child))) => {
                self.0 = Some(child);
                status.expect("wait")
            }
            _ => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("process {pid} did not exit within {limit:?}");
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 100 ms until it holds; fails the test after `limit`.
/// A once-slot's fields, as `Store::slot` reads them.
pub type Slot = std::collections::BTreeMap<String, String>;

/// Every slot ended: `delivered`, `failed` or `uncertain`, none stuck on the way.
pub fn assert_every_slot_ended(slots: &HashMap<String, Slot>) {
    let stuck: Vec<_> = slots
        .iter()
        .filter(|(_, s)| {
            !matches!(
                s.get("st").map(String::as_str),
                Some("delivered" | "failed" | "uncertain")
            )
        })
        .collect();
    assert!(
        stuck.is_empty(),
        "{} slots not terminal, e.g. {:?}",
        stuck.len(),
        stuck.first()
    );
}

/// Every key the provider delivered more than once (`campaign:customer:channel`) is a
/// resend Herald recorded on that customer's slot (`rs`): no duplicate it did not count.
pub fn assert_repeats_are_counted_resends(sim: &SimStats, slots: &HashMap<String, Slot>) {
    assert!(sim.repeated_keys.len() < 1000, "{sim:?}");
    for (key, deliveries) in &sim.repeated_keys {
        let customer = key.split(':').nth(1).unwrap();
        let resends: u64 = slots[customer]
            .get("rs")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        assert!(
            resends >= deliveries - 1,
            "{key} delivered {deliveries} times but resent {resends} times: a duplicate Herald did not account for"
        );
    }
}

/// Spawns one of the fleet's tasks; an error or a panic is recorded in `failures`, where
/// the fleet's waits find it, instead of surfacing only as a time-out.
pub(super) fn spawn_checked<F>(
    failures: &Arc<std::sync::Mutex<Vec<String>>>,
    what: &'static str,
    work: F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let inner = tokio::spawn(work);
    let failures = failures.clone();
    tokio::spawn(async move {
        let failure = match inner.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{what} failed: {e:#}"),
            Err(e) => format!("{what} panicked: {e}"),
        };
        eprintln!("{failure}");
        failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(failure);
    })
}

/// A port for a server a test starts itself (a child process, Prometheus, Redis). Taken
/// from below the kernel's ephemeral range (32768 and up), so no port-0 bind anywhere can be
/// handed the same one between this check and the server's own bind; a counter keeps this
/// process's tests apart, the process id other test processes.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 800) as u16 * 20;
    for _ in 0..2000 {
        let port = 16_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 16_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Waits for a child to exit, killing it (and failing) after `limit`: a test must not hang CI.
pub fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A program of the test venv (`scripts/test.sh` makes it: aiosmtpd, Schemathesis,
/// openapi-python-client, openapi-spec-validator), `$HERALD_VENV` or `~/.cache/herald-venv`.
pub fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var("HERALD_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/herald-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let path = std::path::PathBuf::from(venv).join("bin").join(name);
    assert!(
        path.exists(),
        "no {}: run scripts/test.sh (it installs the test tools into the venv)",
        path.display()
    );
    path
}
