//! An output written while the command runs (the CSV timeline; the report stream with
//! `-I` lines): opened before the command starts, put in place once it has, then written
//! in whole chunks.
//!
//! Each chunk (a tick's CSV rows, an interval's lines) goes to the kernel in one write, so
//! a kill of joulerun never leaves half a row. A write that fails (disk full, a file size
//! limit, a closed pipe) stops the stream: a regular file is cut back to its last complete
//! chunk, and the failure is kept to be reported; it changes joulerun's exit status like
//! any lost output (README, "Exit statuses").
//!
//! [`Background`] moves a stream onto a thread of its own, so that a slow or paused reader
//! (a terminal stopped with Ctrl-S) never slows the sampling loop.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::output::Prepared;

pub struct Stream {
    out: Prepared,
    flag: &'static str,
    what: &'static str,
    describe: String,
    /// What is lost after a failure ("the rows after that are missing").
    lost: &'static str,
    opened: bool,
    placed: bool,
    /// Bytes written whole so far (where a regular file is cut back to on a failure).
    written: u64,
    error: Option<String>,
}

impl Stream {
    /// `out` prepared by [`crate::output::prepare`].
    pub fn new(
        out: Prepared,
        flag: &'static str,
        what: &'static str,
        describe: String,
        lost: &'static str,
    ) -> Stream {
        Stream {
            out,
            flag,
            what,
            describe,
            lost,
            opened: false,
            placed: false,
            written: 0,
            error: None,
        }
    }

    /// A regular file, written in a temporary file until it is placed.
    pub fn is_atomic(&self) -> bool {
        matches!(self.out, Prepared::Atomic(_))
    }

    fn is_regular(&self) -> bool {
        matches!(self.out, Prepared::Atomic(_) | Prepared::Open(..))
    }

    /// Before the command starts: a FIFO, a device or a descriptor is opened now (a FIFO
    /// without a reader is waited for, with a message). Once per stream.
    pub fn open(&mut self) -> Result<(), String> {
        if !self.opened {
            self.opened = true;
            if self.error.is_none()
                && !self.is_atomic()
                && let Err(e) = self.out.place(self.flag)
            {
                self.fail(0.0, &e);
            }
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The command has started: a regular file now replaces what was at its destination.
    /// Once per stream.
    pub fn place(&mut self) {
        if !self.placed {
            self.placed = true;
            if self.error.is_none()
                && self.is_atomic()
                && let Err(e) = self.out.place(self.flag)
            {
                self.fail(0.0, &e);
            }
        }
    }

    /// Write `bytes` in one write. After a failure, nothing more is written.
    pub fn write(&mut self, bytes: &[u8], at_s: f64) {
        if self.error.is_some() || bytes.is_empty() {
            return;
        }
        let r = match self.out.writer() {
            Ok(f) => f.write_all(bytes).and_then(|_| f.flush()),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => self.written += bytes.len() as u64,
            Err(e) => self.fail(at_s, &e),
        }
    }

    fn fail(&mut self, at_s: f64, e: &io::Error) {
        // Never leave half a chunk: cut a regular file back to its last complete one.
        let regular = self.is_regular();
        if regular && let Ok(f) = self.out.writer() {
            let _ = f.set_len(self.written);
        }
        self.error = Some(format!(
            "writing {} ({}) to {} failed at {:.2} s: {e}; {}{}",
            self.what,
            self.flag,
            self.describe,
            at_s,
            self.lost,
            if regular {
                " (the file ends with the last complete one)"
            } else {
                ""
            }
        ));
    }

    /// The failure, if writing failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// What the writer thread is given.
enum Chunk {
    /// Lines that may be dropped when the reader does not keep up.
    Droppable(Vec<u8>, f64),
    /// Bytes that must be written (the final report), however long it takes.
    Must(Vec<u8>, f64),
}

/// How many droppable chunks may wait for a slow reader before new ones are dropped.
const QUEUE: usize = 4096;

/// A [`Stream`] written by a thread of its own.
pub struct Background {
    tx: Option<SyncSender<Chunk>>,
    thread: Option<JoinHandle<Stream>>,
    error: Arc<Mutex<Option<String>>>,
    dropped: Arc<AtomicU64>,
}

impl Background {
    /// Start writing `stream` (opened and placed) on its own thread.
    pub fn start(stream: Stream) -> io::Result<Background> {
        let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE);
        let error = Arc::new(Mutex::new(None));
        let err = error.clone();
        let thread = std::thread::Builder::new()
            .name("joulerun-report".to_string())
            .spawn(move || {
                let mut s = stream;
                for c in rx {
                    let (bytes, at) = match c {
                        Chunk::Droppable(b, at) | Chunk::Must(b, at) => (b, at),
                    };
                    s.write(&bytes, at);
                    if let Some(e) = s.error()
                        && let Ok(mut g) = err.lock()
                        && g.is_none()
                    {
                        *g = Some(e.to_string());
                    }
                }
                s
            })?;
        Ok(Background {
            tx: Some(tx),
            thread: Some(thread),
            error,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queue lines; when the reader is this far behind, they are dropped and counted.
    pub fn send_droppable(&self, bytes: Vec<u8>, at_s: f64) {
        if let Some(tx) = &self.tx {
            match tx.try_send(Chunk::Droppable(bytes, at_s)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Chunks dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The failure so far, if writing failed.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|g| g.clone())
    }

    /// Write `bytes` last, wait for everything queued to be written, and return the
    /// stream's failure, if any.
    pub fn finish(mut self, bytes: Vec<u8>, at_s: f64) -> Option<String> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Chunk::Must(bytes, at_s));
        }
        let s = self.thread.take().and_then(|t| t.join().ok());
        match s {
            Some(s) => s.error().map(str::to_string),
            None => Some("the report writer thread failed".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_stream(path: &std::path::Path) -> Stream {
        let r = crate::output::Requested {
            flag: "-o",
            what: "the report",
            dest: crate::output::Dest::parse(path),
        };
        Stream::new(
            crate::output::prepare(&r).unwrap(),
            "-o",
            "the report",
            path.display().to_string(),
            "the lines after that are missing",
        )
    }

    #[test]
    fn a_regular_file_appears_once_placed_and_is_written_in_order() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.txt");
        let mut s = file_stream(&p);
        s.open().unwrap();
        s.write(b"early\n", 0.0);
        assert!(!p.exists(), "not in place before the command starts");
        s.place();
        s.place();
        let bg = Background::start(s).unwrap();
        for i in 0..100 {
            bg.send_droppable(format!("line {i}\n").into_bytes(), i as f64);
        }
        assert_eq!(bg.finish(b"end\n".to_vec(), 1.0), None);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 102);
        assert_eq!(
            (lines[0], lines[50], lines[101]),
            ("early", "line 49", "end")
        );
    }

    #[test]
    fn a_failed_write_is_kept_and_cuts_a_file_back() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.txt");
        let mut s = file_stream(&p);
        s.open().unwrap();
        s.place();
        s.write(b"whole\n", 0.0);
        // The file descriptor now refuses writes.
        s.out = Prepared::Fd(std::fs::File::open("/dev/null").unwrap());
        s.write(b"lost\n", 2.5);
        let e = s.error().unwrap();
        assert!(e.contains("failed at 2.50 s") && e.contains("-o"), "{e}");
        s.write(b"after\n", 3.0);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "whole\n");
    }
}
