//! The one batcher: callers hand it items and wait for each one's outcome, and one collector
//! turns whatever is waiting into batches written by a [`Flush`].
//!
//! Batching adapts to load with no added delay: the collector takes what is waiting (up to
//! `max_items` items or `max_bytes` bytes) and flushes it, with up to `max_inflight` flushes at
//! once; while they run, new items pile up and the next batch is larger. An idle gateway
//! flushes one item at a time.
//!
//! Bounds: the queue holds at most `capacity` items (beyond it a submit fails at once with
//! [`BatchError::Overloaded`]), and each item carries a deadline: an item still waiting at its
//! deadline is answered [`BatchError::Expired`] without being flushed, so its caller hears
//! back within `deadline` plus one flush.
//!
//! A batch that its store refuses because of one item is split by [`isolate`] until the item
//! at fault is found and set aside, so one bad record never holds up the others.
//!
//! Shutdown: when the stop token fires (or every handle is dropped) no new item is taken; what
//! is queued is still flushed, and the flushes run on the caller's tracker, which the app waits
//! for. Nothing accepted is dropped unanswered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Writes batches.
pub trait Flush: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Bytes an item adds to a batch, for the byte cap.
    fn weight(_item: &Self::Item) -> usize {
        0
    }

    /// Writes `items`; answers one output per item, in their order. `deadline` is the
    /// earliest of the items' deadlines: a writer that stops waiting then answers each caller
    /// within its own deadline, not a deadline plus a whole flush.
    fn flush(
        &self,
        items: Vec<Self::Item>,
        deadline: Instant,
    ) -> impl Future<Output = Vec<Self::Output>> + Send;
}

/// A batcher's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most items per batch.
    pub max_items: usize,
    /// A batch stops growing past this many bytes (one large item still goes alone).
    pub max_bytes: usize,
    /// Most flushes at once.
    pub max_inflight: usize,
    /// Most items waiting for a batch.
    pub capacity: usize,
    /// Longest an item waits for its batch.
    pub deadline: Duration,
}

/// Why an item has no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("too many items are waiting to be written")]
    Overloaded,
    #[error("the batcher has stopped")]
    Stopped,
    #[error("the item waited past its deadline and was not written")]
    Expired,
}

struct Job<F: Flush> {
    item: F::Item,
    reply: oneshot::Sender<Result<F::Output, BatchError>>,
    deadline: Instant,
}

/// The handle callers submit through. Cheap to clone.
pub struct Batcher<F: Flush> {
    tx: mpsc::Sender<Job<F>>,
    deadline: Duration,
    /// Once cancelled, new items are refused at once, whatever the collector is doing.
    stop: CancellationToken,
}

impl<F: Flush> Clone for Batcher<F> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            deadline: self.deadline,
            stop: self.stop.clone(),
        }
    }
}

impl<F: Flush> std::fmt::Debug for Batcher<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("waiting", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish()
    }
}

impl<F: Flush> Batcher<F> {
    /// Starts the collector on `tracker`; it stops taking items when `stop` fires or every
    /// handle is dropped, and flushes what it holds first.
    pub fn start(
        flush: F,
        limits: Limits,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Batcher<F> {
        let (tx, rx) = mpsc::channel(limits.capacity.max(1));
        tracker.spawn(collect(
            rx,
            Arc::new(flush),
            limits,
            tracker.clone(),
            stop.clone(),
        ));
        Batcher {
            tx,
            deadline: limits.deadline,
            stop,
        }
    }

    /// Hands `item` to the next batch and waits for its outcome.
    pub async fn submit(&self, item: F::Item) -> Result<F::Output, BatchError> {
        if self.stop.is_cancelled() {
            return Err(BatchError::Stopped);
        }
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            item,
            reply,
            deadline: Instant::now() + self.deadline,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(BatchError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(BatchError::Stopped),
        }
        outcome.await.unwrap_or(Err(BatchError::Stopped))
    }
}

async fn collect<F: Flush>(
    mut rx: mpsc::Receiver<Job<F>>,
    flush: Arc<F>,
    limits: Limits,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
    let max_items = limits.max_items.max(1);
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => job,
            _ = stop.cancelled(), if !rx.is_closed() => {
                // No new items; what is queued is still taken below.
                rx.close();
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = Batch::new(first, max_items, limits.max_bytes);
        batch.fill(&mut rx);
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        // Items that arrived while every flush slot was busy join this batch.
        batch.fill(&mut rx);
        let flush = flush.clone();
        tracker.spawn(async move {
            run(&*flush, batch.jobs).await;
            drop(permit);
        });
    }
}

/// Flushes the jobs that are still within their deadline and answers every job.
async fn run<F: Flush>(flush: &F, jobs: Vec<Job<F>>) {
    let now = Instant::now();
    let mut items = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    let mut deadline: Option<Instant> = None;
    for job in jobs {
        if job.deadline <= now {
            let _ = job.reply.send(Err(BatchError::Expired));
        } else {
            deadline = Some(deadline.map_or(job.deadline, |d| d.min(job.deadline)));
            items.push(job.item);
            replies.push(job.reply);
        }
    }
    let Some(deadline) = deadline else {
        return;
    };
    let mut outputs = flush.flush(items, deadline).await.into_iter();
    for reply in replies {
        // A flush that answered fewer outputs than items leaves the rest unanswered: they
        // hear `Stopped` rather than a made-up outcome.
        if let Some(out) = outputs.next() {
            let _ = reply.send(Ok(out));
        }
    }
}

struct Batch<F: Flush> {
    jobs: Vec<Job<F>>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<F: Flush> Batch<F> {
    fn new(first: Job<F>, max_items: usize, max_bytes: usize) -> Batch<F> {
        let bytes = F::weight(&first.item);
        let mut jobs = Vec::with_capacity(max_items.min(64));
        jobs.push(first);
        Batch {
            jobs,
            bytes,
            max_items,
            max_bytes,
        }
    }

    fn fill(&mut self, rx: &mut mpsc::Receiver<Job<F>>) {
        while self.jobs.len() < self.max_items && self.bytes < self.max_bytes {
            match rx.try_recv() {
                Ok(job) => {
                    self.bytes += F::weight(&job.item);
                    self.jobs.push(job);
                }
                Err(_) => break,
            }
        }
    }
}

/// What [`isolate`] did with a batch.
#[derive(Debug)]
pub struct Isolated<R> {
    /// What each successful write answered, parts in item order.
    pub written: Vec<R>,
    /// Items set aside.
    pub set_aside: usize,
    /// Why the first item set aside was refused.
    pub first_fault: Option<String>,
}

/// A store that [`isolate`] writes batches to.
pub trait Isolate<T: Sync>: Sync {
    /// What one successful write answers.
    type Written: Send;
    type Error: std::fmt::Display + Send;

    /// Writes `items` together; idempotent, since a failed batch is written again.
    fn write(&self, items: &[T])
    -> impl Future<Output = Result<Self::Written, Self::Error>> + Send;

    /// Whether `e` refuses the items for what they hold, so writing them again cannot succeed.
    fn is_fault(e: &Self::Error) -> bool;

    /// Keeps one refused item out of the way (a quarantine), visibly.
    fn set_aside(
        &self,
        item: &T,
        e: &Self::Error,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Writes a record known to be good and keeps nothing of it: `Ok` when the store takes
    /// records at all. Asked before the first item is set aside when no item of the batch was
    /// written, so a store that refuses every record (a constraint an operator added) fails
    /// the batch instead of sending all of it to the quarantine.
    fn probe(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Writes `items` to `store`, whole when it can. When the write fails for a reason that
/// writing the same items again cannot fix ([`Isolate::is_fault`]: a record the store refuses
/// for what it holds), the batch is split in halves until the items at fault are found, each of
/// which is [set aside](Isolate::set_aside) while the others are written as usual: one bad
/// record costs about `2 log2(n)` writes, never the pipeline. Any other failure is returned as
/// it is, for the caller to retry the whole batch.
pub async fn isolate<T: Sync, S: Isolate<T>>(
    store: &S,
    items: &[T],
) -> Result<Isolated<S::Written>, S::Error> {
    let mut done = Isolated {
        written: Vec::new(),
        set_aside: 0,
        first_fault: None,
    };
    // Parts still to write, the earlier one on top, so parts are written in item order.
    let mut parts: Vec<&[T]> = vec![items];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        match store.write(part).await {
            Ok(r) => done.written.push(r),
            Err(e) if S::is_fault(&e) => {
                if let [one] = part {
                    if done.written.is_empty() && done.set_aside == 0 {
                        // The refusal may be the store's, not the item's: is anything taken?
                        store.probe().await?;
                    }
                    store.set_aside(one, &e).await?;
                    done.set_aside += 1;
                    done.first_fault.get_or_insert_with(|| e.to_string());
                } else {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A store that refuses any batch holding an odd item (for what it holds) and, when told,
    /// fails once for a reason retrying fixes.
    #[derive(Default)]
    struct Picky {
        writes: Mutex<Vec<Vec<u32>>>,
        aside: Mutex<Vec<u32>>,
        down: bool,
        /// Refuses every record, the good one of the probe too.
        refuses_all: bool,
    }

    #[derive(Debug, PartialEq)]
    enum Refusal {
        Odd,
        Down,
    }

    impl std::fmt::Display for Refusal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Isolate<u32> for Picky {
        type Written = usize;
        type Error = Refusal;

        async fn write(&self, part: &[u32]) -> Result<usize, Refusal> {
            self.writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(part.to_vec());
            if self.down {
                return Err(Refusal::Down);
            }
            if part.iter().any(|n| n % 2 == 1) {
                return Err(Refusal::Odd);
            }
            Ok(part.len())
        }

        fn is_fault(e: &Refusal) -> bool {
            *e == Refusal::Odd
        }

        async fn set_aside(&self, item: &u32, _: &Refusal) -> Result<(), Refusal> {
            self.aside
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(*item);
            Ok(())
        }

        async fn probe(&self) -> Result<(), Refusal> {
            if self.refuses_all {
                Err(Refusal::Odd)
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn isolate_finds_the_items_at_fault_and_writes_the_rest() {
        let store = Picky::default();
        let items: Vec<u32> = (0..1000)
            .map(|n| if n == 333 || n == 334 { n | 1 } else { n * 2 })
            .collect();
        let done = isolate(&store, &items).await;
        let Ok(done) = done else {
            panic!("isolate failed")
        };
        assert_eq!(done.set_aside, 2);
        assert_eq!(done.first_fault.as_deref(), Some("Odd"));
        assert_eq!(
            done.written.iter().sum::<usize>(),
            998,
            "every other item is written"
        );
        assert_eq!(
            *store.aside.lock().unwrap_or_else(|p| p.into_inner()),
            vec![333, 335]
        );
        let writes = store.writes.lock().unwrap_or_else(|p| p.into_inner()).len();
        assert!(
            writes <= 2 * 2 * 10 + 1,
            "two bad items in 1000 cost {writes} writes"
        );
        // The parts written succeed in item order.
        let written: Vec<u32> = store
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|w| w.iter().all(|n| n % 2 == 0))
            .flatten()
            .copied()
            .collect();
        let mut sorted = written.clone();
        sorted.sort_unstable();
        assert_eq!(written, sorted);
    }

    #[tokio::test]
    async fn a_store_refusing_everything_fails_the_batch_instead_of_emptying_it() {
        let store = Picky {
            refuses_all: true,
            ..Picky::default()
        };
        let items = [1u32, 3, 5, 7];
        let done = isolate(&store, &items).await;
        assert_eq!(done.err(), Some(Refusal::Odd));
        assert!(
            store
                .aside
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
        // A batch of bad items only, in a store that takes good ones: all set aside.
        let store = Picky::default();
        let done = isolate(&store, &items).await;
        assert_eq!(done.map(|d| d.set_aside).ok(), Some(4));
    }

    #[tokio::test]
    async fn isolate_returns_a_transient_failure_whole() {
        let store = Picky {
            down: true,
            ..Picky::default()
        };
        let items = [1u32, 2, 3];
        let done = isolate(&store, &items).await;
        assert_eq!(done.err(), Some(Refusal::Down));
        assert_eq!(
            store.writes.lock().unwrap_or_else(|p| p.into_inner()).len(),
            1,
            "no split for a failure retrying fixes"
        );
    }

    /// Records the batches it is given; answers each item doubled.
    #[derive(Default)]
    struct Doubler {
        batches: Mutex<Vec<Vec<u32>>>,
        pause: Option<Duration>,
    }

    impl Flush for Arc<Doubler> {
        type Item = u32;
        type Output = u32;

        fn weight(item: &u32) -> usize {
            *item as usize
        }

        async fn flush(&self, items: Vec<u32>, _deadline: Instant) -> Vec<u32> {
            if let Some(p) = self.pause {
                tokio::time::sleep(p).await;
            }
            if let Ok(mut b) = self.batches.lock() {
                b.push(items.clone());
            }
            items.into_iter().map(|i| i * 2).collect()
        }
    }

    fn limits() -> Limits {
        Limits {
            max_items: 4,
            max_bytes: 1000,
            max_inflight: 1,
            capacity: 64,
            deadline: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn items_get_their_own_outcome_in_bounded_batches() {
        let d = Arc::new(Doubler {
            pause: Some(Duration::from_millis(20)),
            ..Default::default()
        });
        let tracker = TaskTracker::new();
        let b = Batcher::start(d.clone(), limits(), &tracker, CancellationToken::new());
        let outs = futures_util::future::join_all((1..=10).map(|i| b.submit(i))).await;
        let outs: Vec<u32> = outs.into_iter().map(|o| o.unwrap_or(0)).collect();
        assert_eq!(outs, (1..=10).map(|i| i * 2).collect::<Vec<_>>());
        let batches = d.batches.lock().map(|b| b.clone()).unwrap_or_default();
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert!(batches.len() < 10, "items were batched: {batches:?}");
    }

    #[tokio::test]
    async fn the_byte_cap_closes_a_batch() {
        let d = Arc::new(Doubler {
            pause: Some(Duration::from_millis(20)),
            ..Default::default()
        });
        let tracker = TaskTracker::new();
        let l = Limits {
            max_bytes: 100,
            ..limits()
        };
        let b = Batcher::start(d.clone(), l, &tracker, CancellationToken::new());
        let _ = futures_util::future::join_all([60, 60, 60, 1].map(|i| b.submit(i))).await;
        let batches = d.batches.lock().map(|b| b.clone()).unwrap_or_default();
        assert!(
            batches.iter().all(|b| b.iter().sum::<u32>() < 100 + 60),
            "{batches:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let d = Arc::new(Doubler {
            pause: Some(Duration::from_millis(200)),
            ..Default::default()
        });
        let tracker = TaskTracker::new();
        let l = Limits {
            capacity: 1,
            max_items: 1,
            ..limits()
        };
        let b = Batcher::start(d, l, &tracker, CancellationToken::new());
        let outs = futures_util::future::join_all((0..6).map(|i| b.submit(i))).await;
        assert!(outs.contains(&Err(BatchError::Overloaded)), "{outs:?}");
        assert!(outs.contains(&Ok(0)), "{outs:?}");
    }

    #[tokio::test]
    async fn items_past_their_deadline_are_not_flushed() {
        let d = Arc::new(Doubler {
            pause: Some(Duration::from_millis(150)),
            ..Default::default()
        });
        let tracker = TaskTracker::new();
        let l = Limits {
            max_items: 1,
            deadline: Duration::from_millis(50),
            ..limits()
        };
        let b = Batcher::start(d.clone(), l, &tracker, CancellationToken::new());
        let outs = futures_util::future::join_all((1..=3).map(|i| b.submit(i))).await;
        assert_eq!(outs[0], Ok(2));
        assert!(
            outs[1..].iter().all(|o| *o == Err(BatchError::Expired)),
            "{outs:?}"
        );
        let flushed: Vec<u32> = d.batches.lock().map(|b| b.concat()).unwrap_or_default();
        assert_eq!(flushed, vec![1]);
    }

    #[tokio::test]
    async fn stopping_flushes_what_is_queued_and_refuses_the_rest() {
        let d = Arc::new(Doubler {
            pause: Some(Duration::from_millis(50)),
            ..Default::default()
        });
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let l = Limits {
            max_items: 1,
            ..limits()
        };
        let b = Batcher::start(d.clone(), l, &tracker, stop.clone());
        let waiting: Vec<_> = (1..=3)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(b.submit(9).await, Err(BatchError::Stopped));
        for w in waiting {
            assert!(matches!(w.await, Ok(Ok(_))), "a queued item was dropped");
        }
        tracker.close();
        tokio::time::timeout(Duration::from_secs(2), tracker.wait())
            .await
            .map_err(|_| "the collector did not end")
            .ok();
        assert!(tracker.is_empty());
    }
}
