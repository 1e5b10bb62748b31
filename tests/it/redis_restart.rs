//! Redis restarts (with persistence) in the middle of a run: dispatchers ride it out, and
//! every request still ends sent, once.

use std::process::Command;
use std::time::Duration;

use herald::model::Channel;

use crate::harness::{quiet_provider, ChildGuard, Fleet};

struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    server: ChildGuard,
}

impl OwnRedis {
    async fn start(port: u16, dir: &std::path::Path) -> ChildGuard {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ChildGuard(Some(child))
    }

    async fn new() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("herald-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = OwnRedis::start(port, &dir).await;
        OwnRedis { port, dir, server }
    }

    async fn restart(&mut self, down_for: Duration) {
        let pid = self.server.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.server.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "redis stopped cleanly: {status:?}");
        tokio::time::sleep(down_for).await;
        self.server = OwnRedis::start(self.port, &self.dir).await;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn dispatchers_ride_out_a_redis_restart() {
    let mut redis = OwnRedis::new().await;
    let mut sim = quiet_provider();
    sim.rate_limit = 100;
    let fleet = Fleet::start_with_redis(sim, 4, &format!("redis://127.0.0.1:{}", redis.port)).await;
    let (ids, _) = fleet.submit(300, "email").await;
    let (dispatcher, _) = fleet
        .start_dispatcher(Channel::Email, fleet.shutdown.child_token())
        .await;
    for _ in 0..200 {
        if fleet.sim_stats().await.delivered >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    redis.restart(Duration::from_secs(2)).await;

    let counts = fleet.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert_eq!(counts.get("sent"), Some(&300), "{counts:?}");
    let sim = fleet.sim_stats().await;
    assert_eq!(sim.delivered, 300, "{sim:?}");
    assert_eq!(sim.keys_delivered_twice, 0, "{sim:?}");
    let sent = dispatcher
        .stats
        .sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 300);
}
