//! `estafeta serve` as a subprocess, the way an operator runs it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::Request;
use super::{ADMIN_TOKEN, Addrs, RedisServer, binary, free_port};

pub fn addrs() -> Addrs {
    let a = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    Addrs {
        tls: a(free_port()),
        plain: a(free_port()),
        admin: a(free_port()),
    }
}

pub fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("estafeta.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `estafeta serve` whose output is collected.
pub struct Served {
    pub child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    pub addrs: Addrs,
    /// Config and certificate folders, kept for the life of the process.
    pub dirs: Vec<tempfile::TempDir>,
}

impl Served {
    /// A ready gateway on the shared Redis, with its own prefix and the test config.
    pub async fn on_shared_redis(name: &str, env: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let certs = super::certs();
        let a = addrs();
        let text = super::config_toml(
            &RedisServer::shared().url(),
            &super::unique_prefix(name),
            &a,
            certs.path(),
            "",
        );
        let path = write_config(dir.path(), &text);
        let mut served = Served::start(&path, a, env);
        served.dirs = vec![dir, certs];
        served.wait_ready().await;
        served
    }

    /// A ready gateway on `redis_url` with its own prefix and the test config plus `extra`.
    pub async fn on(redis_url: &str, name: &str, extra: &str, env: &[(&str, &str)]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let certs = super::certs();
        let a = addrs();
        let text = super::config_toml(
            redis_url,
            &super::unique_prefix(name),
            &a,
            certs.path(),
            extra,
        );
        let path = write_config(dir.path(), &text);
        let mut served = Served::start(&path, a, env);
        served.dirs = vec![dir, certs];
        served.wait_ready().await;
        served
    }

    /// Creates a tenant through the admin API and returns its token.
    pub async fn tenant_token(&self) -> String {
        let created = Request::new("POST", "/admin/tenants")
            .bearer(ADMIN_TOKEN)
            .json(&serde_json::json!({"name": "acme"}))
            .send_plain(self.addrs.admin)
            .await
            .unwrap();
        created.json()["token"].as_str().unwrap().to_owned()
    }

    pub fn start(config: &Path, addrs: Addrs, env: &[(&str, &str)]) -> Served {
        Served::start_args(config, addrs, env, &[])
    }

    /// Like [`Served::start`], with more arguments for `serve` (e.g. `--role dispatcher`).
    pub fn start_args(config: &Path, addrs: Addrs, env: &[(&str, &str)], args: &[&str]) -> Served {
        let mut c = Command::new(binary());
        c.args(["serve", "--config"])
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Served {
            child,
            output,
            addrs,
            dirs: Vec::new(),
        }
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("estafeta exited ({status}): {}", self.logs());
            }
            if let Ok(r) = Request::get("/readyz").send_plain(self.addrs.admin).await {
                if r.status == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("estafeta did not become ready: {}", self.logs());
    }

    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit status within `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.wait_exit(limit)
    }

    /// The exit status within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
