//! jq programs (target transformations, monitors' status maps), run in worker processes.
//!
//! jaq, the jq engine, has no bound on time, memory or recursion: a program that loops
//! forever holds its thread for good, and one that recurses without end or builds a huge
//! value aborts the whole process (a stack overflow or a failed allocation is not a panic to
//! catch). A tenant writes these programs, so none of them runs inside the gateway: a pool of
//! `estafeta jq-worker` processes, started on first use, compiles and runs them, one request
//! at a time each, over a pipe ([`protocol`]). The gateway gives each run `timeout` from the
//! moment it is handed to a worker; a worker that has not answered by then is killed and
//! replaced, and a worker that dies (an abort) is replaced too. Either way only that run
//! fails: the dispatcher and the other programs go on.
//!
//! Compiling goes through the workers as well (a deeply nested program text overflows the
//! parser's stack), with a longer bound, so the API can refuse a program that does not parse
//! with jaq's own words.

pub mod program;
pub mod protocol;
pub mod worker;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

use protocol::{Answer, MAX_FRAME, Request};

pub use crate::model::transform::MAX_PROGRAM_BYTES;

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The `estafeta` executable the workers are started from.
    pub executable: PathBuf,
    /// Worker processes.
    pub workers: usize,
    /// Bound of one run, from the moment a worker has it.
    pub timeout: Duration,
    /// Bound of a compile-only request (a cold worker parses its prelude first).
    pub compile_timeout: Duration,
    /// Each worker's address space (MiB; 0: unlimited).
    pub memory_mb: u64,
    /// Largest output of a run (bytes, as JSON).
    pub max_output_bytes: usize,
}

/// Why a program gave no output to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The program does not compile.
    #[error("the program does not compile: {0}")]
    Invalid(String),
    /// It failed on this input (an `error`, a type error, no output, an output too large).
    #[error("{0}")]
    Failed(String),
    /// It ran past its time and its worker was replaced.
    #[error("timeout: the program ran longer than {0} ms")]
    Timeout(u64),
    /// Its worker died running it (a recursion without end, memory exhausted).
    #[error("the program crashed its sandbox ({0})")]
    Crashed(String),
    /// No worker could be started, or the pool is shutting down.
    #[error("the sandbox is unavailable: {0}")]
    Unavailable(String),
}

impl SandboxError {
    /// Whether running the same program on the same input again gives the same answer: a
    /// refusal by the program itself is final; a timeout or a crash may come from the host
    /// (a busy machine) and is worth another try later.
    pub fn is_final(&self) -> bool {
        matches!(self, SandboxError::Invalid(_) | SandboxError::Failed(_))
    }
}

struct Job {
    request: Request,
    timeout: Duration,
    reply: oneshot::Sender<Result<Value, SandboxError>>,
}

/// The pool of worker processes. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    jobs: mpsc::Sender<Job>,
    settings: Arc<SandboxSettings>,
    /// Takes the workers' tasks out of their slots on first use.
    start: Arc<std::sync::Mutex<Option<mpsc::Receiver<Job>>>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("workers", &self.settings.workers)
            .finish()
    }
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Sandbox {
        let (jobs, rx) = mpsc::channel(settings.workers.max(1) * 64);
        Sandbox {
            jobs,
            settings: Arc::new(settings),
            start: Arc::new(std::sync::Mutex::new(Some(rx))),
        }
    }

    /// Starts the worker tasks once, on first use: a gateway whose tenants write no program
    /// never starts a process.
    fn ensure_started(&self) {
        let mut slot = match self.start.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(rx) = slot.take() else { return };
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..self.settings.workers.max(1) {
            tokio::spawn(serve_jobs(n, rx.clone(), self.settings.clone()));
        }
    }

    /// Checks that `program` compiles.
    pub async fn check(&self, program: &str) -> Result<(), SandboxError> {
        if program.len() > MAX_PROGRAM_BYTES {
            return Err(SandboxError::Invalid(format!(
                "it is {} bytes; at most {MAX_PROGRAM_BYTES}",
                program.len()
            )));
        }
        self.submit(program, None, self.settings.compile_timeout)
            .await
            .map(|_| ())
    }

    /// Runs `program` on `input`: its first output.
    pub async fn run(&self, program: &str, input: Value) -> Result<Value, SandboxError> {
        self.submit(program, Some(input), self.settings.timeout)
            .await
    }

    async fn submit(
        &self,
        program: &str,
        input: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, SandboxError> {
        self.ensure_started();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request: Request {
                program: program.to_owned(),
                input,
            },
            timeout,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| SandboxError::Unavailable("the pool is stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(SandboxError::Unavailable("the pool is stopped".into())))
    }
}

/// A running worker process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Worker {
    fn spawn(settings: &SandboxSettings) -> Result<Worker, String> {
        let mut child = Command::new(&settings.executable)
            .arg("jq-worker")
            .arg("--memory-mb")
            .arg(settings.memory_mb.to_string())
            .arg("--max-output-bytes")
            .arg(settings.max_output_bytes.to_string())
            .env_clear()
            // mimalloc reserves a 1 GiB arena up front, which the worker's address-space
            // limit would not leave room for; small arenas keep the limit about the program.
            .env("MIMALLOC_ARENA_RESERVE", "32MiB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", settings.executable.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the worker has no pipes".into());
        };
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    async fn exchange(&mut self, frame: &[u8]) -> std::io::Result<Answer> {
        self.stdin
            .write_all(&(frame.len() as u32).to_be_bytes())
            .await?;
        self.stdin.write_all(frame).await?;
        self.stdin.flush().await?;
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("an answer of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        self.stdout.read_exact(&mut buf).await?;
        serde_json::from_slice(&buf).map_err(std::io::Error::other)
    }

    /// How the process ended, once it is gone.
    async fn end(mut self) -> String {
        let _ = self.child.start_kill();
        match self.child.wait().await {
            Ok(status) => describe_exit(status),
            Err(e) => e.to_string(),
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(6) => "it aborted: a recursion without end, or memory exhausted".into(),
        Some(9) => "it was killed".into(),
        Some(s) => format!("signal {s}"),
        None => format!("exit code {}", status.code().unwrap_or(-1)),
    }
}

/// A new worker that has answered once, so its start (the process, jaq's prelude) is not
/// counted against the first program's time.
async fn warm(settings: &SandboxSettings) -> Result<Worker, String> {
    let mut w = Worker::spawn(settings)?;
    let hello = serde_json::to_vec(&Request {
        program: ".".into(),
        input: None,
    })
    .map_err(|e| e.to_string())?;
    match tokio::time::timeout(settings.compile_timeout, w.exchange(&hello)).await {
        Ok(Ok(Answer::Ok(_))) => Ok(w),
        Ok(Ok(other)) => Err(format!(
            "the worker answered {other:?} to its first request"
        )),
        Ok(Err(e)) => Err(format!(
            "the worker failed its first request: {e} ({})",
            w.end().await
        )),
        Err(_) => Err(format!(
            "the worker did not answer within {} ms of starting",
            settings.compile_timeout.as_millis()
        )),
    }
}

/// One worker's loop: takes jobs, keeps a process for them, replaces it when it dies or
/// overruns.
async fn serve_jobs(
    n: usize,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    settings: Arc<SandboxSettings>,
) {
    let mut worker: Option<Worker> = None;
    let mut spawn_failures: u32 = 0;
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { break };
        if worker.is_none() {
            match warm(&settings).await {
                Ok(w) => {
                    worker = Some(w);
                    spawn_failures = 0;
                }
                Err(e) => {
                    spawn_failures += 1;
                    if spawn_failures == 1 {
                        tracing::error!(worker = n, error = %e, "cannot start a jq worker process; programs fail until one starts");
                    }
                    crate::telemetry::sandbox("unavailable");
                    let _ = job.reply.send(Err(SandboxError::Unavailable(e)));
                    // Not a busy loop while the executable is missing.
                    tokio::time::sleep(Duration::from_millis(
                        100 * u64::from(spawn_failures.min(50)),
                    ))
                    .await;
                    continue;
                }
            }
        }
        let Some(w) = worker.as_mut() else { continue };
        let frame = match serde_json::to_vec(&job.request) {
            Ok(f) => f,
            Err(e) => {
                let _ = job.reply.send(Err(SandboxError::Failed(e.to_string())));
                continue;
            }
        };
        let outcome = tokio::time::timeout(job.timeout, w.exchange(&frame)).await;
        let result = match outcome {
            Ok(Ok(Answer::Ok(v))) => Ok(v),
            Ok(Ok(Answer::Invalid(m))) => Err(SandboxError::Invalid(m)),
            Ok(Ok(Answer::Error(m))) => Err(SandboxError::Failed(m)),
            Ok(Err(_)) => {
                let how = match worker.take() {
                    Some(w) => w.end().await,
                    None => "gone".into(),
                };
                tracing::warn!(worker = n, how = %how, "a jq worker died running a program; starting another");
                Err(SandboxError::Crashed(how))
            }
            Err(_) => {
                if let Some(w) = worker.take() {
                    w.end().await;
                }
                tracing::debug!(
                    worker = n,
                    "a jq program ran past its time; its worker was replaced"
                );
                Err(SandboxError::Timeout(job.timeout.as_millis() as u64))
            }
        };
        crate::telemetry::sandbox(match &result {
            Ok(_) => "ok",
            Err(SandboxError::Invalid(_)) => "invalid",
            Err(SandboxError::Failed(_)) => "failed",
            Err(SandboxError::Timeout(_)) => "timeout",
            Err(SandboxError::Crashed(_)) => "crashed",
            Err(SandboxError::Unavailable(_)) => "unavailable",
        });
        let _ = job.reply.send(result);
    }
}
