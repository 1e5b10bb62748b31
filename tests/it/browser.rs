//! Headless Chromium for the tests of pages: run as the env notes say (no background
//! networking), and driven over the DevTools protocol where a test must click.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(path).exists(),
        "Chromium is needed for the dashboard test: scripts/test.sh installs Debian's chromium"
    );
    path
}

/// Headless Chromium as the env notes say to run it here (no background networking).
/// Chromium under `timeout`, so that a browser that hangs fails the test instead of CI.
pub fn chromium_command(profile: &std::path::Path) -> Command {
    let mut c = headless(profile, 90);
    c.args(["--hide-scrollbars", "--virtual-time-budget=3000"]);
    c
}

/// Headless Chromium with its profile in `profile`, killed after `seconds`.
fn headless(profile: &std::path::Path, seconds: u32) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=5", &seconds.to_string()])
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A headless Chromium with one page open, driven over the DevTools protocol: the test
/// clicks and reads as a person would; the page itself runs no script of its own.
pub struct Browser {
    child: std::process::Child,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    _profile: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Opens `url` in a new headless Chromium.
    pub fn open(url: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("herald-chromium-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&profile).unwrap();
        let child = headless(&profile, 120)
            .arg("--remote-debugging-port=0")
            .arg(url)
            .stdout(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes the port it took into the profile.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromium wrote no DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let page_socket = loop {
            let list = http_get(port, "/json/list");
            let pages: Vec<Value> = serde_json::from_str(&list).unwrap_or_default();
            if let Some(ws) = pages
                .iter()
                .find(|p| p["type"] == "page")
                .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            {
                break ws.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromium opened no page"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(page_socket).expect("the page's DevTools socket");
        Browser {
            child,
            socket,
            next_id: 0,
            _profile: tempdir::Dir(profile),
        }
    }

    /// Runs one DevTools command and answers its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let reply = self.socket.read().expect("a DevTools reply");
            let Ok(text) = reply.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (as a person's click or a look at the screen).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page (a page loaded after a submit).
    pub fn wait_for(&mut self, expression: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.eval(&format!("!!({expression})")) != json!(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "page never showed {expression}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET of Chromium's DevTools HTTP side (which keeps the connection open: the body is
/// read by its length).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut reader = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}
