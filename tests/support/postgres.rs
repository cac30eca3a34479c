//! A PostgreSQL server owned by a test binary: `initdb` into a temporary folder, `pg_ctl` on a
//! free port, stopped when the test process exits (a shell watchdog, as for Redis).
//! `initdb` and `pg_ctl` refuse to run as root, so under root (CI) they run as `postgres`
//! (`runuser -u postgres --`) on a folder that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::free_port;

pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The watchdogs (one per start), reaped on drop.
    watchdogs: std::sync::Mutex<Vec<std::process::Child>>,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        if let Ok(mut w) = self.watchdogs.lock() {
            for mut c in w.drain(..) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The folder of `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest Debian one.
fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries (apt-get install postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs as the unprivileged `postgres` user under root.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("estafeta-pg")
            .tempdir()
            .expect("tempdir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown the PostgreSQL folder to postgres");
        }
        let bin = bindir();
        let data = dir.path().join("data");
        let out = as_pg_user(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            port: free_port(),
            dir,
            bin,
            watchdogs: std::sync::Mutex::new(Vec::new()),
        };
        server.spawn();
        server
    }

    /// The per-binary shared server; tests isolate themselves by database.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = as_pg_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
        // The watchdog: stops the server when the test process is gone.
        let pg_ctl = self.bin.join("pg_ctl");
        let runner = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "trap '{runner}{} -D {} -m immediate stop >/dev/null 2>&1' EXIT TERM; while kill -0 {} 2>/dev/null; do sleep 0.3; done",
            pg_ctl.display(),
            self.data().display(),
            std::process::id()
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog");
        self.watchdogs.lock().unwrap().push(watchdog);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (the data stays).
    pub fn stop(&self) {
        let _ = as_pg_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        self.spawn();
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; its URL.
    pub async fn database(&self, name: &str) -> String {
        let db = format!(
            "t{}_{}",
            std::process::id(),
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        )
        .to_lowercase();
        let client = self.client("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("create the test database");
        self.url(&db)
    }

    /// A client for assertions.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        connect(&self.url(db)).await
    }
}

/// A client of `url` for assertions.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}
