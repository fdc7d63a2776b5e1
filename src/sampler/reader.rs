//! A reader thread: one slow source, read at its own period, its samples stamped on the
//! sampler's clock and queued for the tick to take.
//!
//! The sampling loop never waits for a reader: it takes what is queued. A read that blocks
//! (a BMC that stops answering, a driver that hangs for a while) holds up this thread
//! only; its samples are simply late, and the sampler integrates them over their own
//! times. At the end of a run the loop asks the reader to stop: a reader waiting for its
//! next read takes one last sample at once (so its intervals reach the end); one inside a
//! read lets that read be the last. The loop waits a bounded time for it.
//! A reader still stuck after that is left behind: a run never hangs on a device.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sources::{IntervalUsage, ReadError, Reading, Source};

/// One read of every domain of a source.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The sampler's clock just before the read, s.
    pub t_s: f64,
    /// The sampler's clock just after it, s.
    pub t_end_s: f64,
    pub readings: Vec<Result<Reading, ReadError>>,
    /// The source's usage per domain over the interval ending at this read
    /// ([`Source::usage`]; empty when it has none).
    pub usage: Vec<Option<IntervalUsage>>,
}

#[derive(Default)]
struct State {
    stop: bool,
    done: bool,
    queue: Vec<Batch>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the reader early (stop) and the loop waiting for the reader to finish.
    cv: Condvar,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets `done` when the thread ends, however it ends.
struct DoneOnDrop(Arc<Shared>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        lock(&self.0).done = true;
        self.0.cv.notify_all();
    }
}

pub struct Reader {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Reader {
    /// Start reading `source` every `period`, on the clock that started at `epoch`.
    pub fn spawn(mut source: Box<dyn Source>, period: Duration, epoch: Instant) -> Reader {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let name = format!("joulerun-{}", source.kind());
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let shared = thread_shared;
            let _done = DoneOnDrop(shared.clone());
            let mut buf = Vec::new();
            let mut usage = Vec::new();
            let period = period.max(Duration::from_millis(1));
            let mut next = Instant::now();
            loop {
                let t_s = epoch.elapsed().as_secs_f64();
                source.read(&mut buf);
                let t_end_s = epoch.elapsed().as_secs_f64();
                source.usage(&mut usage);
                let all_gone = !buf.is_empty() && buf.iter().all(|r| matches!(r, Err(e) if e.gone));
                let mut st = lock(&shared);
                st.queue.push(Batch {
                    t_s,
                    t_end_s,
                    readings: buf.clone(),
                    usage: usage.clone(),
                });
                // Asked to stop before or during this read: it ended after the request,
                // so it is the last sample. Devices that are all gone: nothing more.
                if st.stop || all_gone {
                    return;
                }
                // The next read on schedule; if late, a period from now (never bunched).
                next += period;
                let now = Instant::now();
                if next <= now {
                    next = now + period;
                }
                // Woken by a stop while waiting: the loop takes one last sample now.
                while !st.stop {
                    let now = Instant::now();
                    if now >= next {
                        break;
                    }
                    st = shared
                        .cv
                        .wait_timeout(st, next - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        });
        Reader {
            shared,
            handle: handle.ok(),
        }
    }

    /// Whether the thread could be started (a machine out of threads cannot).
    pub fn started(&self) -> bool {
        self.handle.is_some()
    }

    /// Move every queued sample into `out` (without waiting).
    pub fn drain_into(&mut self, out: &mut Vec<Batch>) {
        out.append(&mut lock(&self.shared).queue);
    }

    /// Ask the thread to take its last sample and end.
    pub fn request_stop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.cv.notify_all();
    }

    /// Wait until the thread has ended, at most until `deadline`. True if it did (it is
    /// then joined); false if it is still inside a read (it is left behind).
    pub fn wait_stopped(&mut self, deadline: Instant) -> bool {
        if self.handle.is_none() {
            return true;
        }
        let mut st = lock(&self.shared);
        while !st.done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        drop(st);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        true
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Never block here: a reader stuck in a read is left to finish on its own.
        self.request_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Cadence, Domain, DomainKind, SourceKind};

    /// A source whose every read takes `delay` and returns a count of reads as power.
    struct Slow {
        domains: Vec<Domain>,
        delay: Duration,
        n: f64,
        gone_after: Option<u32>,
    }

    impl Source for Slow {
        fn kind(&self) -> SourceKind {
            SourceKind::Hwmon
        }
        fn domains(&self) -> &[Domain] {
            &self.domains
        }
        fn cadence(&self) -> Cadence {
            Cadence::Every(Duration::from_millis(10))
        }
        fn read(&mut self, out: &mut Vec<Result<Reading, ReadError>>) {
            std::thread::sleep(self.delay);
            self.n += 1.0;
            out.clear();
            if self.gone_after.is_some_and(|g| self.n > g as f64) {
                out.push(Err(ReadError::gone("unplugged")));
            } else {
                out.push(Ok(Reading::Power { watts: self.n }));
            }
        }
    }

    fn slow(delay_ms: u64, gone_after: Option<u32>) -> Box<Slow> {
        Box::new(Slow {
            domains: vec![Domain::new(DomainKind::Package, Some(0), SourceKind::Hwmon)],
            delay: Duration::from_millis(delay_ms),
            n: 0.0,
            gone_after,
        })
    }

    #[test]
    fn samples_are_stamped_queued_and_a_last_one_taken_at_stop() {
        let epoch = Instant::now();
        let mut r = Reader::spawn(slow(0, None), Duration::from_millis(10), epoch);
        std::thread::sleep(Duration::from_millis(80));
        let mut got = Vec::new();
        r.drain_into(&mut got);
        assert!(got.len() >= 3, "{}", got.len());
        for w in got.windows(2) {
            assert!(w[1].t_s >= w[0].t_end_s);
        }
        r.request_stop();
        assert!(r.wait_stopped(Instant::now() + Duration::from_secs(2)));
        let before = got.len();
        r.drain_into(&mut got);
        assert!(got.len() > before, "a last sample at stop");
        let last = got.last().unwrap();
        assert!(last.t_s >= epoch.elapsed().as_secs_f64() - 0.05);
    }

    #[test]
    fn a_reader_stuck_in_a_read_is_left_behind_within_the_deadline() {
        let mut r = Reader::spawn(slow(3000, None), Duration::from_millis(10), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        r.request_stop();
        let t = Instant::now();
        assert!(!r.wait_stopped(Instant::now() + Duration::from_millis(200)));
        assert!(t.elapsed() < Duration::from_millis(1000));
    }

    #[test]
    fn a_source_whose_devices_are_all_gone_is_not_read_again() {
        let mut r = Reader::spawn(slow(0, Some(2)), Duration::from_millis(5), Instant::now());
        assert!(r.wait_stopped(Instant::now() + Duration::from_secs(2)));
        let mut got = Vec::new();
        r.drain_into(&mut got);
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[2].readings[0], Err(e) if e.gone));
    }
}
