//! The worker process (`estafeta jq-worker`): reads requests from stdin, compiles and runs
//! jq programs, writes answers to stdout, one at a time, until stdin closes.
//!
//! It limits its own address space (`RLIMIT_AS`) before reading anything, so a program that
//! builds an enormous value fails an allocation and aborts this process, not the gateway, and
//! it runs programs on a thread with a large stack, so ordinary recursion has room (a program
//! that recurses without end still aborts it; the gateway starts another).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::program::Program;
use super::protocol::{Answer, MAX_FRAME, Request};

/// Stack of the thread that runs programs.
const STACK_BYTES: usize = 64 * 1024 * 1024;
/// Buffer of each side of the pipes.
const PIPE_BUFFER: usize = 64 * 1024;
/// Compiled programs kept; the cache is emptied when it is full.
const CACHED_PROGRAMS: usize = 256;

/// What a worker is started with.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    /// Address space of the process (MiB); 0 leaves it unlimited.
    pub memory_mb: u64,
    /// Largest output (bytes, as JSON).
    pub max_output_bytes: usize,
}

/// Runs the worker until stdin closes; `Err` says why it stopped otherwise.
pub fn serve(limits: WorkerLimits) -> Result<(), String> {
    if limits.memory_mb > 0 {
        let bytes = limits.memory_mb.saturating_mul(1024 * 1024);
        rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes)
            .map_err(|e| format!("cannot limit the worker's memory: {e}"))?;
    }
    let runner = std::thread::Builder::new()
        .name("jq".into())
        .stack_size(STACK_BYTES)
        .spawn(move || serve_stdio(limits))
        .map_err(|e| format!("cannot start the worker thread: {e}"))?;
    runner
        .join()
        .map_err(|_| "the worker thread panicked".to_owned())?
}

fn serve_stdio(limits: WorkerLimits) -> Result<(), String> {
    // Plain buffered pipes (std's stdout is line-buffered): the gateway sends several requests
    // in one write, read here in one call; each answer is one write.
    let pipe = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| format!("cannot take a pipe: {e}"))
    };
    let mut input = BufReader::with_capacity(PIPE_BUFFER, pipe(std::io::stdin().as_fd())?);
    let mut output = BufWriter::with_capacity(PIPE_BUFFER, pipe(std::io::stdout().as_fd())?);
    let mut cache: HashMap<String, Arc<Result<Program, String>>> = HashMap::new();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return output
                    .flush()
                    .map_err(|e| format!("writing an answer: {e}"));
            }
            Err(e) => return Err(format!("reading a request: {e}")),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(format!("a request of {len} bytes is over the limit"));
        }
        let mut frame = vec![0u8; len];
        input
            .read_exact(&mut frame)
            .map_err(|e| format!("reading a request: {e}"))?;
        let answer = match serde_json::from_slice::<Request>(&frame) {
            Ok(request) => answer(&mut cache, request, limits.max_output_bytes),
            Err(e) => Answer::Error(format!("the request cannot be read: {e}")),
        };
        let bytes = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
        output
            .write_all(&(bytes.len() as u32).to_be_bytes())
            .and_then(|()| output.write_all(&bytes))
            .map_err(|e| format!("writing an answer: {e}"))?;
        // At once, not when the batch is done: the gateway's clock for the next request
        // starts with this answer.
        output
            .flush()
            .map_err(|e| format!("writing an answer: {e}"))?;
    }
}

fn answer(
    cache: &mut HashMap<String, Arc<Result<Program, String>>>,
    request: Request,
    max_output: usize,
) -> Answer<Box<RawValue>> {
    let program = match cache.get(&request.program) {
        Some(p) => p.clone(),
        None => {
            if cache.len() >= CACHED_PROGRAMS {
                cache.clear();
            }
            let compiled = Arc::new(Program::compile(&request.program));
            cache.insert(request.program, compiled.clone());
            compiled
        }
    };
    let program = match program.as_ref() {
        Ok(p) => p,
        Err(e) => return Answer::Invalid(e.clone()),
    };
    let Some(input) = request.input else {
        return match serde_json::value::to_raw_value(&Value::Null) {
            Ok(null) => Answer::Ok(null),
            Err(e) => Answer::Error(e.to_string()),
        };
    };
    match program.run(&input) {
        // Serialized once: its size is checked on the bytes that are sent.
        Ok(out) => match serde_json::value::to_raw_value(&out) {
            Ok(raw) if raw.get().len() > max_output => Answer::Error(format!(
                "the output is {} bytes as JSON; at most {max_output}",
                raw.get().len()
            )),
            Ok(raw) => Answer::Ok(raw),
            Err(e) => Answer::Error(format!("the output cannot be written as JSON: {e}")),
        },
        Err(e) => Answer::Error(e),
    }
}
