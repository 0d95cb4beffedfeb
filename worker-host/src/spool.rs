//! [`BoundedSpool`]: where an order's log is written, kept to a size cap by keeping its head
//! and its tail, and kept in memory while it is short.
//!
//! Most logs are a few lines: they stay in memory ([`MEMORY_BYTES`] at most) and never
//! touch the disk, where each file is an inode made and freed per order. A longer log
//! spills into a file in the work folder; the first half of the cap goes straight into it,
//! and beyond that bytes go round a ring file holding the last half. At the end the ring is
//! appended in order after a marker line saying how many bytes were dropped between the
//! two, so a 2 GB log is stored as its first and last 32 MiB (by default) with the gap
//! visible, and disk and memory stay bounded whatever the order prints.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Default cap of a stored log, bytes.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 << 20;

/// Most bytes of a log kept in memory; a longer one is spooled to a file.
pub const MEMORY_BYTES: usize = 256 * 1024;

/// The stored log: all of it, or its head and tail around the marker.
#[derive(Debug)]
pub enum StoredLog {
    /// A short log, never written to disk.
    Memory(Vec<u8>),
    /// A log spooled to a file (deleted when this is dropped).
    File(NamedTempFile),
}

impl StoredLog {
    /// Its bytes, read back from the file when it has one.
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn contents(&self) -> std::io::Result<Vec<u8>> {
        match self {
            StoredLog::Memory(bytes) => Ok(bytes.clone()),
            StoredLog::File(file) => std::fs::read(file.path()),
        }
    }

    /// Its last `max` bytes (fewer when it is shorter), and whether any came before them.
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn tail(&self, max: usize) -> std::io::Result<(Vec<u8>, bool)> {
        match self {
            StoredLog::Memory(bytes) => {
                let start = bytes.len().saturating_sub(max);
                Ok((bytes[start..].to_vec(), start > 0))
            }
            StoredLog::File(file) => {
                let mut file = file.reopen()?;
                let len = file.seek(SeekFrom::End(0))?;
                let start = len.saturating_sub(max as u64);
                file.seek(SeekFrom::Start(start))?;
                let mut tail = Vec::with_capacity((len - start) as usize);
                file.read_to_end(&mut tail)?;
                Ok((tail, start > 0))
            }
        }
    }
}

/// A log with a size cap.
#[derive(Debug)]
pub struct BoundedSpool {
    /// The log's head while it is short enough to keep in memory.
    memory: Vec<u8>,
    /// The log's head once it spilled: the stored log.
    file: Option<NamedTempFile>,
    ring: Option<File>,
    dir: PathBuf,
    head_cap: u64,
    tail_cap: u64,
    /// Bytes written so far, dropped ones included.
    total: u64,
}

/// What the spool kept.
#[derive(Debug)]
pub struct SpoolEnd {
    /// The log as stored.
    pub log: StoredLog,
    /// Bytes the log had in all.
    pub bytes: u64,
    /// Bytes dropped between its head and its tail.
    pub dropped: u64,
}

impl BoundedSpool {
    /// A spool keeping at most `max_bytes` of a log (at least 2) plus the marker; its files,
    /// when it needs them, are made in `dir`.
    pub fn new(dir: &Path, max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(2);
        BoundedSpool {
            memory: Vec::new(),
            file: None,
            ring: None,
            dir: dir.to_owned(),
            head_cap: max_bytes / 2,
            tail_cap: max_bytes - max_bytes / 2,
            total: 0,
        }
    }

    /// The head's file, taken out: made (with what memory held) if the log had none.
    fn take_file(&mut self) -> std::io::Result<NamedTempFile> {
        if let Some(file) = self.file.take() {
            return Ok(file);
        }
        let mut file = tempfile::Builder::new()
            .prefix("log-")
            .tempfile_in(&self.dir)?;
        file.write_all(&std::mem::take(&mut self.memory))?;
        Ok(file)
    }

    /// The head as a file, spilling memory into one first.
    fn head_file(&mut self) -> std::io::Result<&mut NamedTempFile> {
        let file = self.take_file()?;
        Ok(self.file.insert(file))
    }

    /// Appends `bytes` to the log.
    ///
    /// # Errors
    ///
    /// Writing a file failed.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if self.total < self.head_cap {
            let n = bytes.len().min((self.head_cap - self.total) as usize);
            if self.file.is_none() && self.memory.len() + n <= MEMORY_BYTES {
                self.memory.extend_from_slice(&bytes[..n]);
            } else {
                self.head_file()?.write_all(&bytes[..n])?;
            }
            self.total += n as u64;
            bytes = &bytes[n..];
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // The ring is appended to the head's file at the end.
        self.head_file()?;
        // Only the last `tail_cap` bytes of this write can survive.
        let skip = bytes.len().saturating_sub(self.tail_cap as usize);
        self.total += skip as u64;
        bytes = &bytes[skip..];
        if self.ring.is_none() {
            self.ring = Some(tempfile::tempfile_in(&self.dir)?);
        }
        let ring = self.ring.as_ref().expect("created above");
        while !bytes.is_empty() {
            let at = (self.total - self.head_cap) % self.tail_cap;
            let n = bytes.len().min((self.tail_cap - at) as usize);
            ring.write_all_at(&bytes[..n], at)?;
            self.total += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Completes the log: the marker if bytes were dropped, then the tail in order.
    ///
    /// # Errors
    ///
    /// Reading the ring or writing the log failed.
    pub fn finish(mut self) -> std::io::Result<SpoolEnd> {
        let Some(mut ring) = self.ring.take() else {
            let log = match self.file {
                None => StoredLog::Memory(self.memory),
                Some(mut file) => {
                    file.flush()?;
                    StoredLog::File(file)
                }
            };
            return Ok(SpoolEnd {
                log,
                bytes: self.total,
                dropped: 0,
            });
        };
        let mut head = self.take_file()?;
        let beyond_head = self.total - self.head_cap;
        let kept = beyond_head.min(self.tail_cap);
        let dropped = beyond_head - kept;
        if dropped > 0 {
            let marker = format!(
                "\n==> {dropped} bytes of this log were dropped here: a log is stored as its first {} and last {} bytes\n",
                self.head_cap, self.tail_cap
            );
            head.write_all(marker.as_bytes())?;
        }
        // The oldest kept byte is where the next write would have gone.
        let oldest = if beyond_head >= self.tail_cap {
            beyond_head % self.tail_cap
        } else {
            0
        };
        ring.seek(SeekFrom::Start(oldest))?;
        std::io::copy(&mut (&mut ring).take(kept), &mut head)?;
        if oldest > 0 {
            ring.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut ring.take(oldest), &mut head)?;
        }
        head.flush()?;
        Ok(SpoolEnd {
            log: StoredLog::File(head),
            bytes: self.total,
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spooled(max: u64, writes: &[&[u8]]) -> (String, SpoolEnd) {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = BoundedSpool::new(dir.path(), max);
        for w in writes {
            spool.write(w).unwrap();
        }
        let end = spool.finish().unwrap();
        let log = String::from_utf8(end.log.contents().unwrap()).unwrap();
        (log, end)
    }

    #[test]
    fn a_log_under_the_cap_is_kept_whole() {
        let (log, end) = spooled(10, &[b"abc", b"defghij"]);
        assert_eq!(log, "abcdefghij");
        assert_eq!((end.bytes, end.dropped), (10, 0));
        let (log, _) = spooled(10, &[b"abc"]);
        assert_eq!(log, "abc");
    }

    #[test]
    fn beyond_the_cap_the_head_and_tail_are_kept_around_a_marker() {
        let (log, end) = spooled(10, &[b"01234", b"5678", b"9abcdefghijk", b"lm"]);
        assert_eq!((end.bytes, end.dropped), (23, 13));
        assert!(matches!(end.log, StoredLog::File(_)));
        assert!(
            log.starts_with("01234\n==> 13 bytes of this log were dropped here"),
            "{log}"
        );
        assert!(log.ends_with("last 5 bytes\nijklm"), "{log}");
    }

    #[test]
    fn any_write_pattern_keeps_exactly_the_first_and_last_bytes() {
        let text: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for step in [1, 3, 7, 64, 999, 1000] {
            let writes: Vec<&[u8]> = text.chunks(step).collect();
            let (log, end) = spooled(100, &writes);
            assert_eq!(end.bytes, 1000);
            assert_eq!(end.dropped, 900);
            assert!(log.as_bytes().starts_with(&text[..50]), "step {step}");
            assert!(log.as_bytes().ends_with(&text[950..]), "step {step}");
        }
    }

    #[test]
    fn a_short_log_stays_in_memory_and_a_long_one_spills_whole_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut short = BoundedSpool::new(dir.path(), DEFAULT_MAX_LOG_BYTES);
        short.write(&[b'a'; MEMORY_BYTES]).unwrap();
        let end = short.finish().unwrap();
        assert!(matches!(&end.log, StoredLog::Memory(bytes) if bytes.len() == MEMORY_BYTES));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file");

        let mut long = BoundedSpool::new(dir.path(), DEFAULT_MAX_LOG_BYTES);
        long.write(&[b'a'; MEMORY_BYTES]).unwrap();
        long.write(b"and one more").unwrap();
        let end = long.finish().unwrap();
        let StoredLog::File(file) = &end.log else {
            panic!("spilled: {:?}", end.log.tail(10))
        };
        let stored = std::fs::read(file.path()).unwrap();
        assert_eq!(stored.len(), MEMORY_BYTES + 12);
        assert!(stored.ends_with(b"aand one more"));
        assert_eq!(end.log.tail(13).unwrap(), (b"aand one more".to_vec(), true));
        drop(end);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "removed");
    }
}
