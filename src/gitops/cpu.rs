//! CPU time spent by the calling thread, and by a future across its polls: what a batch of
//! records costs the writer, independent of how many other processes share the machine
//! (wall-clock time on a busy machine measures the machine). Read from Linux's
//! `/proc/thread-self/schedstat` (nanoseconds on the CPU); zero where it cannot be read.

use std::cell::RefCell;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

thread_local! {
    /// This thread's schedstat file, opened once: each reading is then one `pread`.
    static SCHEDSTAT: RefCell<Option<File>> = RefCell::new(File::open("/proc/thread-self/schedstat").ok());
}

/// CPU time the calling thread has used since it started; zero where Linux's schedstat
/// cannot be read.
pub fn thread() -> Duration {
    SCHEDSTAT.with(|file| {
        let file = file.borrow();
        let Some(file) = file.as_ref() else {
            return Duration::ZERO;
        };
        let mut buf = [0u8; 96];
        let Ok(read) = file.read_at(&mut buf, 0) else {
            return Duration::ZERO;
        };
        parse_schedstat(&buf[..read]).unwrap_or_default()
    })
}

/// The first field of a schedstat line: nanoseconds spent on the CPU.
fn parse_schedstat(text: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(text).ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// CPU time the calling thread uses from now on.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Duration);

impl Stopwatch {
    pub fn start() -> Self {
        Self(thread())
    }

    /// CPU time used by this thread since `start`.
    pub fn elapsed(&self) -> Duration {
        thread().saturating_sub(self.0)
    }
}

/// CPU time added up across threads (nanoseconds).
#[derive(Clone, Debug, Default)]
pub struct Tally(Arc<AtomicU64>);

impl Tally {
    pub fn add(&self, took: Duration) {
        self.0.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// `future`, with the CPU time of each of its polls added to `tally`: the work done in the
/// task itself (decoding, building requests), not that of the tasks it waits on.
pub fn metered<F: Future>(tally: Tally, future: F) -> Metered<F> {
    Metered {
        tally,
        future: Box::pin(future),
    }
}

/// See [`metered`].
pub struct Metered<F> {
    tally: Tally,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let watch = Stopwatch::start();
        let out = self.future.as_mut().poll(cx);
        self.tally.add(watch.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_parse() {
        assert_eq!(
            parse_schedstat(b"115887166 328783020 47\n"),
            Some(Duration::from_nanos(115_887_166))
        );
        assert_eq!(parse_schedstat(b""), None);
        assert_eq!(parse_schedstat(b"x 1 2"), None);
    }

    fn spin(cpu: Duration) -> u64 {
        let watch = Stopwatch::start();
        let mut x = 0u64;
        while watch.elapsed() < cpu {
            for i in 0..10_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        x
    }

    #[test]
    fn a_busy_thread_counts_and_a_sleeping_one_does_not() {
        if thread() == Duration::ZERO {
            // No schedstat here (not Linux): nothing to measure.
            return;
        }
        let watch = Stopwatch::start();
        std::hint::black_box(spin(Duration::from_millis(30)));
        let busy = watch.elapsed();
        assert!(busy >= Duration::from_millis(30), "{busy:?}");
        let watch = Stopwatch::start();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            watch.elapsed() < Duration::from_millis(20),
            "sleeping costs no CPU"
        );
    }

    #[test]
    fn a_metered_future_counts_its_polls() {
        if thread() == Duration::ZERO {
            return;
        }
        let tally = Tally::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(metered(tally.clone(), async {
            std::hint::black_box(spin(Duration::from_millis(20)));
            tokio::time::sleep(Duration::from_millis(30)).await;
            std::hint::black_box(spin(Duration::from_millis(20)));
        }));
        let total = tally.total();
        assert!(total >= Duration::from_millis(40), "{total:?}");
        assert!(
            total < Duration::from_millis(65),
            "the sleep is not counted: {total:?}"
        );
    }
}
