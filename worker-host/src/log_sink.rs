//! The streaming log pipeline: bytes masked and spooled to a file as they arrive, memory
//! and disk bounded.
//!
//! Readers of a command's stdout and stderr (or a module's output streams, or the worker's
//! own notes) send chunks into one bounded channel, so the streams are merged in arrival
//! order and a fast producer waits for the disk rather than filling memory. A single writer
//! on the blocking pool masks the order's secrets in each chunk ([`crate::redact`]) — the
//! only way into the spool, so no unmasked byte is ever written — appends it to the
//! [`BoundedSpool`] (in memory while short; head and tail kept beyond the cap) and hands the
//! buffer back to a small pool the readers take from, so the pipeline allocates a fixed set
//! of buffers whatever the output size. When the producers are done, the tail for
//! `result.json` (the last [`MAX_LOG_TAIL_BYTES`]) is taken from the stored log.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sluice_contract::result::MAX_LOG_TAIL_BYTES;

use crate::redact::Redactor;
use crate::spool::{BoundedSpool, DEFAULT_MAX_LOG_BYTES, StoredLog};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks in flight between the readers and the writer (each at most [`CHUNK_SIZE`]).
const CHANNEL_CHUNKS: usize = 16;
/// Size of one read from a pipe.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Buffers returned by the writer, reused by the readers.
type BufferPool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Where producers send log bytes (cheap to clone: one per pipe reader).
#[derive(Debug, Clone)]
pub struct LogSender {
    chunks: mpsc::Sender<Vec<u8>>,
    pool: BufferPool,
}

impl LogSender {
    /// An empty buffer of [`CHUNK_SIZE`] capacity, reused when one is free.
    pub fn buffer(&self) -> Vec<u8> {
        let reused = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE))
    }

    /// The channel itself, for producers that reserve a slot before filling a buffer.
    pub(crate) fn channel(&self) -> mpsc::Sender<Vec<u8>> {
        self.chunks.clone()
    }

    /// Sends a chunk; waits while the writer is behind. `Err` when the pipeline is gone.
    pub async fn send(&self, chunk: Vec<u8>) -> Result<(), ()> {
        self.chunks.send(chunk).await.map_err(|_| ())
    }
}

/// The spooled log, once every producer is done.
#[derive(Debug)]
pub struct LogSummary {
    /// The stored log (its file deleted when this is dropped): all of it, or its head and
    /// tail.
    pub log: StoredLog,
    /// The size of the whole log, dropped bytes included.
    pub bytes: u64,
    /// Bytes dropped from the middle of the stored log (0 under the cap).
    pub dropped: u64,
    /// Its last bytes (at most [`MAX_LOG_TAIL_BYTES`]), as text.
    pub tail: String,
    /// Whether `tail` is only the end of the log.
    pub truncated: bool,
    /// Whether `tail` is the whole log byte for byte (not cut, and valid UTF-8, which the
    /// tail's text keeps as it is): a copy of the log needs nothing else.
    pub whole: bool,
}

/// A running log pipeline.
#[derive(Debug)]
pub struct LogSink {
    sender: LogSender,
    writer: JoinHandle<std::io::Result<LogSummary>>,
}

impl LogSink {
    /// Starts a pipeline spooling (when the log outgrows memory) into files in `dir`, with
    /// no secrets to mask and the default cap.
    pub fn create(dir: &Path) -> Self {
        Self::create_with(dir, Arc::new(Redactor::default()), DEFAULT_MAX_LOG_BYTES)
    }

    /// Starts a pipeline spooling (when the log outgrows memory) into files in `dir`,
    /// masking `redactor`'s secrets and keeping at most `max_bytes` of the log (its head and
    /// tail).
    pub fn create_with(dir: &Path, redactor: Arc<Redactor>, max_bytes: u64) -> Self {
        let (chunks, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let pool = BufferPool::default();
        let writer_pool = Arc::clone(&pool);
        let bounded = BoundedSpool::new(dir, max_bytes);
        let writer = tokio::task::spawn_blocking(move || {
            write_all(bounded, &redactor, receiver, writer_pool)
        });
        LogSink {
            sender: LogSender { chunks, pool },
            writer,
        }
    }

    /// A sender for one producer.
    pub fn sender(&self) -> LogSender {
        self.sender.clone()
    }

    /// Writes a line of the worker's own (`==> ...`), in order with the order's output.
    pub async fn note(&self, line: &str) {
        let _ = self.sender.send(format!("==> {line}\n").into_bytes()).await;
    }

    /// Waits for every producer to finish (drop their senders first) and returns the log.
    ///
    /// # Errors
    ///
    /// Writing or reading back a spool file failed.
    pub async fn finish(self) -> std::io::Result<LogSummary> {
        drop(self.sender);
        self.writer.await.map_err(std::io::Error::other)?
    }
}

fn write_all(
    mut bounded: BoundedSpool,
    redactor: &Redactor,
    mut receiver: mpsc::Receiver<Vec<u8>>,
    pool: BufferPool,
) -> std::io::Result<LogSummary> {
    let mut stream = redactor.stream();
    let mut masked = Vec::with_capacity(CHUNK_SIZE);
    let mut failure: Option<std::io::Error> = None;
    while let Some(mut chunk) = receiver.blocking_recv() {
        masked.clear();
        stream.push(&chunk, &mut masked);
        if failure.is_none()
            && let Err(e) = bounded.write(&masked)
        {
            // Keep draining so producers never block on a dead writer; report at the end.
            failure = Some(e);
        }
        if chunk.capacity() == CHUNK_SIZE {
            chunk.clear();
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(chunk);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    masked.clear();
    stream.finish(&mut masked);
    bounded.write(&masked)?;
    let end = bounded.finish()?;
    let (tail, cut, lossless) = read_tail(&end.log)?;
    let truncated = cut || end.dropped > 0;
    Ok(LogSummary {
        log: end.log,
        bytes: end.bytes,
        dropped: end.dropped,
        tail,
        truncated,
        whole: !truncated && lossless,
    })
}

/// The last [`MAX_LOG_TAIL_BYTES`] of the stored log: the text, whether it is only the
/// end, and whether the bytes read were valid UTF-8 (the text is them unchanged).
fn read_tail(log: &StoredLog) -> std::io::Result<(String, bool, bool)> {
    let (tail, cut) = log.tail(MAX_LOG_TAIL_BYTES)?;
    let lossless = std::str::from_utf8(&tail).is_ok();
    let text = tail_text(&tail, cut);
    let (text, fitted) = fit_escaped(text, MAX_LOG_TAIL_BYTES);
    Ok((text, cut || fitted, lossless))
}

/// The tail as text: when it was cut, a partial first character is dropped; other invalid
/// UTF-8 becomes U+FFFD.
fn tail_text(bytes: &[u8], truncated: bool) -> String {
    let start = if truncated {
        bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count()
    } else {
        0
    };
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Bytes a character takes inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Drops characters from the front until the text, JSON-escaped, fits in `max` bytes, so a
/// tail of control characters (6 bytes each once escaped) or of replacement characters still
/// makes a result readers accept. Returns whether anything was dropped.
fn fit_escaped(text: String, max: usize) -> (String, bool) {
    let total: usize = text.chars().map(escaped_len).sum();
    if total <= max {
        return (text, false);
    }
    let excess = total - max;
    let mut dropped = 0;
    let cut = text
        .char_indices()
        .find(|&(_, c)| {
            let enough = dropped >= excess;
            dropped += escaped_len(c);
            enough
        })
        .map_or(text.len(), |(i, _)| i);
    (text[cut..].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_everything_in_the_spool_and_the_end_in_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path());
        let sender = sink.sender();
        for _ in 0..1000 {
            let mut buffer = sender.buffer();
            buffer.extend_from_slice(&[b'x'; 1000]);
            sender.send(buffer).await.unwrap();
        }
        sender.send(b"THE END\n".to_vec()).await.unwrap();
        drop(sender);
        let summary = sink.finish().await.unwrap();
        assert_eq!(summary.bytes, 1_000_008);
        assert!(summary.truncated && !summary.whole);
        // The tail fills the budget as JSON: the final newline escapes to two bytes.
        assert_eq!(summary.tail.len(), MAX_LOG_TAIL_BYTES - 1);
        assert!(summary.tail.ends_with("xxTHE END\n"));
        assert_eq!(summary.log.contents().unwrap().len(), 1_000_008);
    }

    #[tokio::test]
    async fn a_short_log_is_whole_in_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path());
        sink.note("hello").await;
        let summary = sink.finish().await.unwrap();
        assert_eq!(summary.tail, "==> hello\n");
        assert!(!summary.truncated);
        assert!(summary.whole);
    }

    #[tokio::test]
    async fn a_short_log_that_is_not_text_is_not_whole_in_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path());
        sink.sender().send(b"caf\xe9\n".to_vec()).await.unwrap();
        let summary = sink.finish().await.unwrap();
        assert_eq!(summary.tail, "caf\u{fffd}\n");
        assert!(!summary.truncated);
        assert!(!summary.whole, "the tail is not the log's bytes");
    }

    #[tokio::test]
    async fn a_tail_of_control_characters_still_fits_once_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path());
        sink.sender()
            .send(vec![0u8; 3 * MAX_LOG_TAIL_BYTES])
            .await
            .unwrap();
        sink.note("end").await;
        let summary = sink.finish().await.unwrap();
        assert!(summary.truncated);
        assert!(summary.tail.ends_with("==> end\n"));
        let escaped = serde_json::to_string(&summary.tail).unwrap();
        assert!(escaped.len() <= MAX_LOG_TAIL_BYTES + 2, "{}", escaped.len());
        assert!(
            escaped.len() > MAX_LOG_TAIL_BYTES - 6,
            "keeps as much as fits"
        );
    }

    #[test]
    fn fitting_keeps_short_text_and_cuts_at_characters() {
        assert_eq!(fit_escaped("abc".into(), 3), ("abc".into(), false));
        assert_eq!(fit_escaped("a\"bc".into(), 3), ("bc".into(), true));
        assert_eq!(fit_escaped("ééé".into(), 4), ("éé".into(), true));
    }

    #[test]
    fn cut_characters_are_dropped_from_the_tail() {
        // "é" is 0xC3 0xA9: a tail starting at 0xA9 drops it.
        assert_eq!(tail_text(&[0xA9, b'a', b'b'], true), "ab");
        assert_eq!(tail_text("éa".as_bytes(), false), "éa");
    }
}
