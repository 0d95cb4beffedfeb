//! The streaming log pipeline: bytes spooled to a file as they arrive, the tail kept in
//! bounded memory.
//!
//! Readers of a command's stdout and stderr send chunks into one bounded channel, so the two
//! streams are merged in arrival order and a fast producer waits for the disk rather than
//! filling memory. A single writer on the blocking pool appends each chunk to the spool file
//! and to a ring buffer of the last [`MAX_LOG_TAIL_BYTES`] bytes, which becomes the `log` of
//! `result.json`. Memory stays at the channel's capacity plus the tail, whatever the output
//! size.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use sluice_contract::result::MAX_LOG_TAIL_BYTES;
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks in flight between the readers and the writer (each at most [`CHUNK_SIZE`]).
const CHANNEL_CHUNKS: usize = 16;
/// Size of one read from a pipe.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Where producers send log bytes (cheap to clone: one per pipe reader).
pub type LogSender = mpsc::Sender<Vec<u8>>;

/// The spooled log, once every producer is done.
#[derive(Debug)]
pub struct LogSummary {
    /// The full log (deleted when this is dropped).
    pub spool: NamedTempFile,
    /// Its size.
    pub bytes: u64,
    /// Its last bytes (at most [`MAX_LOG_TAIL_BYTES`]), as text.
    pub tail: String,
    /// Whether `tail` is only the end of the log.
    pub truncated: bool,
}

/// A running log pipeline.
#[derive(Debug)]
pub struct LogSink {
    sender: LogSender,
    writer: JoinHandle<std::io::Result<LogSummary>>,
}

impl LogSink {
    /// Starts a pipeline spooling into a new file in `dir`.
    ///
    /// # Errors
    ///
    /// The spool file cannot be created.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let spool = tempfile::Builder::new().prefix("log-").tempfile_in(dir)?;
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || write_all(spool, receiver));
        Ok(LogSink { sender, writer })
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
    /// Writing the spool file failed.
    pub async fn finish(self) -> std::io::Result<LogSummary> {
        drop(self.sender);
        self.writer.await.map_err(std::io::Error::other)?
    }
}

fn write_all(spool: NamedTempFile, mut receiver: mpsc::Receiver<Vec<u8>>) -> std::io::Result<LogSummary> {
    let mut out = BufWriter::with_capacity(1 << 20, spool.reopen()?);
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(MAX_LOG_TAIL_BYTES);
    let mut bytes: u64 = 0;
    let mut failure: Option<std::io::Error> = None;
    while let Some(chunk) = receiver.blocking_recv() {
        bytes += chunk.len() as u64;
        if failure.is_none()
            && let Err(e) = out.write_all(&chunk)
        {
            // Keep draining so producers never block on a dead writer; report at the end.
            failure = Some(e);
        }
        keep_tail(&mut tail, &chunk);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    finish_file(out)?;
    let truncated = bytes > tail.len() as u64;
    Ok(LogSummary {
        spool,
        bytes,
        tail: tail_text(tail.make_contiguous(), truncated),
        truncated,
    })
}

fn finish_file(mut out: BufWriter<File>) -> std::io::Result<()> {
    out.flush()?;
    out.get_ref().sync_data()
}

fn keep_tail(tail: &mut VecDeque<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(MAX_LOG_TAIL_BYTES)..];
    let overflow = (tail.len() + chunk.len()).saturating_sub(MAX_LOG_TAIL_BYTES);
    tail.drain(..overflow);
    tail.extend(chunk);
}

/// The tail as text: when it was cut, a partial first character is dropped; other invalid
/// UTF-8 becomes U+FFFD.
fn tail_text(bytes: &[u8], truncated: bool) -> String {
    let start = if truncated {
        bytes.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count()
    } else {
        0
    };
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_everything_in_the_spool_and_the_end_in_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path()).unwrap();
        let sender = sink.sender();
        let line = vec![b'x'; 1000];
        for _ in 0..1000 {
            sender.send(line.clone()).await.unwrap();
        }
        sender.send(b"THE END\n".to_vec()).await.unwrap();
        drop(sender);
        let summary = sink.finish().await.unwrap();
        assert_eq!(summary.bytes, 1_000_008);
        assert!(summary.truncated);
        assert_eq!(summary.tail.len(), MAX_LOG_TAIL_BYTES);
        assert!(summary.tail.ends_with("THE END\n"));
        assert_eq!(std::fs::metadata(summary.spool.path()).unwrap().len(), 1_000_008);
    }

    #[test]
    fn cut_characters_are_dropped_from_the_tail() {
        // "é" is 0xC3 0xA9: a tail starting at 0xA9 drops it.
        assert_eq!(tail_text(&[0xA9, b'a', b'b'], true), "ab");
        assert_eq!(tail_text("éa".as_bytes(), false), "éa");
    }
}
