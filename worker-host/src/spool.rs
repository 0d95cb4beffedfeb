//! [`BoundedSpool`]: the file an order's log is written to, kept to a size cap by keeping
//! its head and its tail.
//!
//! The first half of the cap goes straight into the log file; beyond it, bytes go round a
//! ring file holding the last half. At the end the ring is appended in order after a marker
//! line saying how many bytes were dropped between the two, so a 2 GB log is stored as its
//! first and last 32 MiB (by default) with the gap visible, and disk and memory stay bounded
//! whatever the order prints.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Default cap of a stored log, bytes.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 << 20;

/// A log file with a size cap.
#[derive(Debug)]
pub struct BoundedSpool {
    head: File,
    ring: Option<File>,
    dir: std::path::PathBuf,
    head_cap: u64,
    tail_cap: u64,
    /// Bytes written so far, dropped ones included.
    total: u64,
}

/// What the spool kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolEnd {
    /// Bytes the log had in all.
    pub bytes: u64,
    /// Bytes dropped between its head and its tail.
    pub dropped: u64,
}

impl BoundedSpool {
    /// A spool writing into `file` (the stored log), keeping at most `max_bytes` of it (at
    /// least 2) plus the marker; the ring file, when needed, is made in `dir`.
    pub fn new(file: File, dir: &Path, max_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(2);
        BoundedSpool {
            head: file,
            ring: None,
            dir: dir.to_owned(),
            head_cap: max_bytes / 2,
            tail_cap: max_bytes - max_bytes / 2,
            total: 0,
        }
    }

    /// Appends `bytes` to the log.
    ///
    /// # Errors
    ///
    /// Writing a file failed.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if self.total < self.head_cap {
            let n = bytes.len().min((self.head_cap - self.total) as usize);
            self.head.write_all(&bytes[..n])?;
            self.total += n as u64;
            bytes = &bytes[n..];
        }
        if bytes.is_empty() {
            return Ok(());
        }
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

    /// Completes the log file: the marker if bytes were dropped, then the tail in order.
    ///
    /// # Errors
    ///
    /// Reading the ring or writing the log failed.
    pub fn finish(mut self) -> std::io::Result<SpoolEnd> {
        let Some(mut ring) = self.ring.take() else {
            return Ok(SpoolEnd {
                bytes: self.total,
                dropped: 0,
            });
        };
        let beyond_head = self.total - self.head_cap;
        let kept = beyond_head.min(self.tail_cap);
        let dropped = beyond_head - kept;
        if dropped > 0 {
            let marker = format!(
                "\n==> {dropped} bytes of this log were dropped here: a log is stored as its first {} and last {} bytes\n",
                self.head_cap, self.tail_cap
            );
            self.head.write_all(marker.as_bytes())?;
        }
        // The oldest kept byte is where the next write would have gone.
        let oldest = if beyond_head >= self.tail_cap {
            beyond_head % self.tail_cap
        } else {
            0
        };
        ring.seek(SeekFrom::Start(oldest))?;
        std::io::copy(&mut (&mut ring).take(kept), &mut self.head)?;
        if oldest > 0 {
            ring.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut ring.take(oldest), &mut self.head)?;
        }
        self.head.flush()?;
        Ok(SpoolEnd {
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
        let path = dir.path().join("log");
        let mut spool = BoundedSpool::new(File::create(&path).unwrap(), dir.path(), max);
        for w in writes {
            spool.write(w).unwrap();
        }
        let end = spool.finish().unwrap();
        (std::fs::read_to_string(&path).unwrap(), end)
    }

    #[test]
    fn a_log_under_the_cap_is_kept_whole() {
        let (log, end) = spooled(10, &[b"abc", b"defghij"]);
        assert_eq!(log, "abcdefghij");
        assert_eq!(
            end,
            SpoolEnd {
                bytes: 10,
                dropped: 0
            }
        );
        let (log, _) = spooled(10, &[b"abc"]);
        assert_eq!(log, "abc");
    }

    #[test]
    fn beyond_the_cap_the_head_and_tail_are_kept_around_a_marker() {
        let (log, end) = spooled(10, &[b"01234", b"5678", b"9abcdefghijk", b"lm"]);
        assert_eq!(
            end,
            SpoolEnd {
                bytes: 23,
                dropped: 13
            }
        );
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
}
