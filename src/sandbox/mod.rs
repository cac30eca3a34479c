//! jq programs (target transformations, monitors' status maps), run in worker processes.
//!
//! jaq, the jq engine, has no bound on time, memory or recursion: a program that loops
//! forever holds its thread for good, and one that recurses without end or builds a huge
//! value aborts the whole process (a stack overflow or a failed allocation is not a panic to
//! catch). A tenant writes these programs, so none of them runs inside the gateway: a pool of
//! `estafeta jq-worker` processes, started on first use, compiles and runs them over a pipe
//! ([`protocol`]). Each job goes to the worker with the fewest waiting; a worker is sent up to
//! [`DEPTH`] requests at once and answers them in order, so a busy pool pays a process wake-up
//! per pipeful rather than per run. A run gets `timeout` from the moment its worker starts it
//! (the answer before it arrived); a worker that has not answered by then is killed and
//! replaced, and a worker that dies (an abort) is replaced too. Either way only that run
//! fails; the requests queued behind it go to the new worker, and the dispatcher and the other
//! programs go on.
//!
//! Compiling goes through the workers as well (a deeply nested program text overflows the
//! parser's stack), with a longer bound, so the API can refuse a program that does not parse
//! with jaq's own words.

pub mod program;
pub mod protocol;
pub mod worker;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use protocol::{Answer, MAX_FRAME, Request};

pub use crate::model::transform::MAX_PROGRAM_BYTES;

/// Requests a worker process is sent before it has answered the first of them.
pub const DEPTH: usize = 16;

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
    /// The request, as a frame's payload (kept: a request behind a lost run is sent again).
    frame: Bytes,
    timeout: Duration,
    reply: oneshot::Sender<Result<Value, SandboxError>>,
}

/// One worker's queue and how many jobs it holds (queued or sent, not yet answered).
struct Slot {
    jobs: mpsc::UnboundedSender<Job>,
    load: Arc<AtomicUsize>,
}

/// The pool of worker processes. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    slots: Arc<Vec<Slot>>,
    settings: Arc<SandboxSettings>,
    /// The workers' queues, taken out by the first use, which starts their tasks.
    start: Arc<std::sync::Mutex<Option<Vec<mpsc::UnboundedReceiver<Job>>>>>,
    /// Where the search for the least loaded worker begins (spreads ties).
    next: Arc<AtomicUsize>,
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
        let (slots, receivers): (Vec<Slot>, Vec<_>) = (0..settings.workers.max(1))
            .map(|_| {
                let (jobs, rx) = mpsc::unbounded_channel();
                let slot = Slot {
                    jobs,
                    load: Arc::new(AtomicUsize::new(0)),
                };
                (slot, rx)
            })
            .unzip();
        Sandbox {
            slots: Arc::new(slots),
            settings: Arc::new(settings),
            start: Arc::new(std::sync::Mutex::new(Some(receivers))),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Starts the worker tasks once, on first use: a gateway whose tenants write no program
    /// never starts a process.
    fn ensure_started(&self) {
        let mut slot = match self.start.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(receivers) = slot.take() else { return };
        for (n, (rx, s)) in receivers.into_iter().zip(self.slots.iter()).enumerate() {
            tokio::spawn(serve_jobs(n, rx, s.load.clone(), self.settings.clone()));
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
        let frame: Bytes = serde_json::to_vec(&Request {
            program: program.to_owned(),
            input,
        })
        .map_err(|e| SandboxError::Failed(e.to_string()))?
        .into();
        let (reply, answer) = oneshot::channel();
        let slot = self.least_loaded();
        slot.load.fetch_add(1, Ordering::Relaxed);
        if slot
            .jobs
            .send(Job {
                frame,
                timeout,
                reply,
            })
            .is_err()
        {
            slot.load.fetch_sub(1, Ordering::Relaxed);
            return Err(SandboxError::Unavailable("the pool is stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(SandboxError::Unavailable("the pool is stopped".into())))
    }

    fn least_loaded(&self) -> &Slot {
        let n = self.slots.len();
        let from = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = &self.slots[from];
        for i in 1..n {
            let s = &self.slots[(from + i) % n];
            if s.load.load(Ordering::Relaxed) < best.load.load(Ordering::Relaxed) {
                best = s;
            }
        }
        best
    }
}

/// A running worker process and its pipes.
struct Worker {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
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
            stdin: BufWriter::with_capacity(PIPE_BUFFER, stdin),
            stdout: BufReader::with_capacity(PIPE_BUFFER, stdout),
        })
    }

    /// How the process ended, once it is gone.
    async fn end(mut child: Child) -> String {
        let _ = child.start_kill();
        match child.wait().await {
            Ok(status) => describe_exit(status),
            Err(e) => e.to_string(),
        }
    }
}

/// Buffer of each side of a worker's pipes.
const PIPE_BUFFER: usize = 64 * 1024;

async fn write_frame<W: AsyncWriteExt + Unpin>(to: &mut W, frame: &[u8]) -> std::io::Result<()> {
    to.write_all(&(frame.len() as u32).to_be_bytes()).await?;
    to.write_all(frame).await
}

async fn read_answer<R: AsyncReadExt + Unpin>(from: &mut R) -> std::io::Result<Answer> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("an answer of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    from.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
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
    let first = async {
        write_frame(&mut w.stdin, &hello).await?;
        w.stdin.flush().await?;
        read_answer(&mut w.stdout).await
    };
    match tokio::time::timeout(settings.compile_timeout, first).await {
        Ok(Ok(Answer::Ok(_))) => Ok(w),
        Ok(Ok(other)) => Err(format!(
            "the worker answered {other:?} to its first request"
        )),
        Ok(Err(e)) => Err(format!(
            "the worker failed its first request: {e} ({})",
            Worker::end(w.child).await
        )),
        Err(_) => Err(format!(
            "the worker did not answer within {} ms of starting",
            settings.compile_timeout.as_millis()
        )),
    }
}

/// One worker's loop: keeps a process for its queue, replaces it when it dies or overruns,
/// and sends the requests queued behind a lost run to the next process.
async fn serve_jobs(
    n: usize,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    load: Arc<AtomicUsize>,
    settings: Arc<SandboxSettings>,
) {
    let mut carried: VecDeque<Job> = VecDeque::new();
    let mut spawn_failures: u32 = 0;
    loop {
        if carried.is_empty() {
            match jobs.recv().await {
                Some(job) => carried.push_back(job),
                None => break,
            }
        }
        let worker = match warm(&settings).await {
            Ok(w) => {
                spawn_failures = 0;
                w
            }
            Err(e) => {
                spawn_failures += 1;
                if spawn_failures == 1 {
                    tracing::error!(worker = n, error = %e, "cannot start a jq worker process; programs fail until one starts");
                }
                for job in carried.drain(..) {
                    finish(&load, job, Err(SandboxError::Unavailable(e.clone())));
                }
                // Not a busy loop while the executable is missing.
                tokio::time::sleep(Duration::from_millis(
                    100 * u64::from(spawn_failures.min(50)),
                ))
                .await;
                continue;
            }
        };
        match run_process(n, worker, &mut jobs, &mut carried, &load).await {
            Ended::Closed => break,
            Ended::Lost => {}
        }
    }
}

/// Why [`run_process`] returned.
enum Ended {
    /// The pool is gone.
    Closed,
    /// The process died or overran; `carried` holds the requests it had not started.
    Lost,
}

/// Feeds one process until it is lost or the pool closes.
async fn run_process(
    n: usize,
    worker: Worker,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    carried: &mut VecDeque<Job>,
    load: &AtomicUsize,
) -> Ended {
    let Worker {
        child,
        mut stdin,
        mut stdout,
    } = worker;
    // The pipes are driven by tasks of their own, so a process that stops reading (a program
    // that loops) never blocks this loop's clock, and a partial read is never cancelled.
    let (frames, mut to_write) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = to_write.recv().await {
            write_frame(&mut stdin, &frame).await?;
            while let Ok(more) = to_write.try_recv() {
                write_frame(&mut stdin, &more).await?;
            }
            stdin.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let (answered, mut answers) = mpsc::unbounded_channel::<std::io::Result<Answer>>();
    let reader = tokio::spawn(async move {
        loop {
            let a = read_answer(&mut stdout).await;
            let failed = a.is_err();
            if answered.send(a).is_err() || failed {
                break;
            }
        }
    });
    let mut in_flight: VecDeque<Job> = VecDeque::new();
    // When the oldest request in flight was started by the process.
    let mut started = Instant::now();
    let mut writer_gone = false;
    let ended = loop {
        // Requests carried from a lost process go first, in their order.
        while in_flight.len() < DEPTH {
            let Some(job) = carried.pop_front() else {
                break;
            };
            if in_flight.is_empty() {
                started = Instant::now();
            }
            match frames.send(job.frame.clone()) {
                Ok(()) => in_flight.push_back(job),
                Err(_) => {
                    carried.push_front(job);
                    writer_gone = true;
                    break;
                }
            }
        }
        if writer_gone && in_flight.is_empty() {
            // Its stdin is closed: it died between runs.
            let how = Worker::end(child).await;
            tracing::warn!(worker = n, how = %how, "a jq worker died between programs; starting another");
            break Ended::Lost;
        }
        let deadline = in_flight
            .front()
            .map(|j| started + j.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            answer = answers.recv(), if !in_flight.is_empty() => {
                let Some(job) = in_flight.pop_front() else { continue };
                match answer {
                    Some(Ok(a)) => {
                        started = Instant::now();
                        finish(load, job, Ok(a));
                    }
                    Some(Err(_)) | None => {
                        let how = Worker::end(child).await;
                        tracing::warn!(worker = n, how = %how, "a jq worker died running a program; starting another");
                        finish(load, job, Err(SandboxError::Crashed(how)));
                        break Ended::Lost;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline), if !in_flight.is_empty() => {
                let _ = Worker::end(child).await;
                tracing::debug!(worker = n, "a jq program ran past its time; its worker was replaced");
                if let Some(job) = in_flight.pop_front() {
                    let ms = job.timeout.as_millis() as u64;
                    finish(load, job, Err(SandboxError::Timeout(ms)));
                }
                break Ended::Lost;
            }
            job = jobs.recv(), if in_flight.len() < DEPTH && carried.is_empty() => {
                let Some(job) = job else {
                    break Ended::Closed;
                };
                carried.push_back(job);
                // Whatever else is queued goes in the same write.
                while carried.len() + in_flight.len() < DEPTH {
                    match jobs.try_recv() {
                        Ok(job) => carried.push_back(job),
                        Err(_) => break,
                    }
                }
            }
            else => {
                // Nothing in flight and nothing to take: cannot happen (the queue branch is
                // open then), but a loop that cannot wait must not spin.
                let _ = Worker::end(child).await;
                break Ended::Lost;
            }
        }
    };
    writer.abort();
    reader.abort();
    match ended {
        Ended::Lost => {
            // The requests behind the lost one were never started: they go to the next
            // process, first.
            for job in in_flight.into_iter().rev() {
                carried.push_front(job);
            }
        }
        Ended::Closed => {
            for job in in_flight.into_iter().chain(carried.drain(..)) {
                finish(
                    load,
                    job,
                    Err(SandboxError::Unavailable("the pool is stopped".into())),
                );
            }
        }
    }
    ended
}

/// Answers a job and takes it off its worker's load.
fn finish(load: &AtomicUsize, job: Job, answer: Result<Answer, SandboxError>) {
    load.fetch_sub(1, Ordering::Relaxed);
    let result = answer.and_then(|a| match a {
        Answer::Ok(v) => Ok(v),
        Answer::Invalid(m) => Err(SandboxError::Invalid(m)),
        Answer::Error(m) => Err(SandboxError::Failed(m)),
    });
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
