//! What in-process gateways log at `warn` and above, captured for assertions: a test that
//! must know a consumer met a failure (and went on) reads it here instead of sleeping for
//! as long as the failure might take. Every gateway of the test binary logs into one
//! buffer; tests tell their lines apart by the ids they made.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LINES.lock() {
            Ok(mut lines) => lines.extend_from_slice(buf),
            Err(poisoned) => poisoned.into_inner().extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (once per test binary; later calls do nothing).
pub fn capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .try_init();
    });
}

/// How many captured lines hold every one of `needles`.
pub fn lines_with(needles: &[&str]) -> usize {
    let lines = match LINES.lock() {
        Ok(l) => l.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    String::from_utf8_lossy(&lines)
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}
