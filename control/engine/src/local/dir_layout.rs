//! Where a [`DirStore`](super::DirStore) keeps each key: one folder per run.
//!
//! A folder per key segment cost every order five folders (`tmp/exec/<run>/<num>`, its log's,
//! claim's and callback's, and one per attempt), and a folder is the dearest thing to create
//! on ext4: its inode is placed by a search across block groups, which without a journal
//! also steps over every inode freed in the last seconds (each order's work folder is one).
//! So the segments of a key up to and including its first run id are folders, and the rest
//! of the key is one file name in the run's folder: `tmp/logs/<run>/0001/log.txt` is the file
//! `tmp/logs/<run>/0001~~log.txt`. In that name `/` is written `~~` and `~` is written `~t`,
//! so that every name reads back to exactly one key. Keys without a run id, or ending in
//! one, are folders all the way; the done bucket's `<run>/done` is where it always was.
//!
//! Folders written before this layout keep theirs ([`Layout::Nested`]): a store records
//! [`Layout::PerRun`] in `.layout` when it starts empty; a folder holding objects and no
//! record was written by an older Sluice.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use sluice_contract::RunId;

use crate::error::StoreError;

/// The store's folder for temporary files (not a key).
pub(super) const TMP_DIR: &str = ".tmp";
/// The file recording a store's layout (not a key).
const LAYOUT_FILE: &str = ".layout";
/// What [`LAYOUT_FILE`] holds for [`Layout::PerRun`].
const PER_RUN: &str = "per-run";
/// The longest file name ext4 (and most file systems) take, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// How a store's keys map to paths under its root (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Every segment of a key a folder: stores written before the per-run layout.
    Nested,
    /// The segments up to a key's first run id folders, the rest one file name.
    PerRun,
}

impl Layout {
    /// The layout of the store rooted at `root` (whose temporary folder exists): the one
    /// recorded there; for a folder holding no object yet, [`Layout::PerRun`], recorded now.
    pub(super) fn of_root(root: &Path) -> Result<Layout, StoreError> {
        let record = root.join(LAYOUT_FILE);
        if let Some(layout) = read_record(&record)? {
            return Ok(layout);
        }
        if holds_objects(root)? {
            // A store of this version records its layout before its first object: read again,
            // in case one did both since the first read.
            return Ok(read_record(&record)?.unwrap_or(Layout::Nested));
        }
        // Written whole, then linked into place: a store opened at the same moment reads
        // either no record or all of it, and the first link wins.
        let temp = root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        // Synced before it is linked: after a crash the record is whole or absent.
        let write = || {
            let mut file = fs::File::create_new(&temp)?;
            std::io::Write::write_all(&mut file, format!("{PER_RUN}\n").as_bytes())?;
            file.sync_all()
        };
        write().map_err(|e| StoreError::io(format!("writing {}", temp.display()), e))?;
        let linked = fs::hard_link(&temp, &record);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(Layout::PerRun),
            // Another opener's record won: it is there, unless removed since.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                read_record(&record)?.ok_or_else(|| {
                    let gone = std::io::Error::from(ErrorKind::NotFound);
                    StoreError::io(format!("reading {}", record.display()), gone)
                })
            }
            Err(e) => Err(StoreError::io(format!("writing {}", record.display()), e)),
        }
    }

    /// The path of `key` (a valid key, see [`checked_key`]) relative to the root.
    pub(super) fn relative_path(self, key: &str) -> Result<String, StoreError> {
        let segments: Vec<&str> = key.split('/').collect();
        let Some(run) = self.run_folder_depth(&segments) else {
            return Ok(key.to_owned());
        };
        let name = encode_name(&segments[run + 1..].join("/"));
        if name.len() > MAX_NAME_BYTES {
            return Err(StoreError::Backend {
                what: format!("key {key:?}"),
                message: format!(
                    "the part after its run id takes {} bytes as a file name, more than the {MAX_NAME_BYTES} a file name may have",
                    name.len()
                ),
            });
        }
        Ok(format!("{}/{name}", segments[..=run].join("/")))
    }

    /// The key stored at `relative` (a path under the root, `/`-separated), if it is one.
    pub(super) fn key_of(self, relative: &str) -> Option<String> {
        let segments: Vec<&str> = relative.split('/').collect();
        let key = match self.run_folder_depth(&segments) {
            None => relative.to_owned(),
            // A file right in a run's folder: its name is the rest of the key.
            Some(run) if run + 2 == segments.len() => {
                let rest = decode_name(segments[run + 1])?;
                format!("{}/{rest}", segments[..=run].join("/"))
            }
            Some(_) => return None,
        };
        checked_key(&key).ok()?;
        Some(key)
    }

    /// The folder a listing of keys starting with `prefix` starts in, relative to the
    /// root: the deepest folder every such key's path is under; `None` when no key can
    /// start with `prefix` (its folders are not key segments: `/x/`, `a/../`).
    pub(super) fn listing_start(self, prefix: &str) -> Option<String> {
        let Some(end) = prefix.rfind('/') else {
            return Some(String::new());
        };
        let folders: Vec<&str> = prefix[..end].split('/').collect();
        if folders
            .iter()
            .any(|f| f.is_empty() || *f == "." || *f == "..")
        {
            return None;
        }
        let depth = match self.run_folder_depth(&folders) {
            // Everything after the run id is in the name of a file of the run's folder.
            Some(run) => run + 1,
            None => folders.len(),
        };
        Some(folders[..depth].join("/"))
    }

    /// Under [`Layout::PerRun`], the index of the first segment that is a run id, when
    /// segments follow it (the segments after it are one file name).
    fn run_folder_depth(self, segments: &[&str]) -> Option<usize> {
        if self == Layout::Nested {
            return None;
        }
        let run = segments.iter().position(|s| RunId::parse(s).is_some())?;
        (run + 1 < segments.len()).then_some(run)
    }
}

/// The layout recorded in `record`, `None` when there is no record.
fn read_record(record: &Path) -> Result<Option<Layout>, StoreError> {
    let text = match fs::read_to_string(record) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("reading {}", record.display()), e)),
    };
    match text.trim() {
        PER_RUN => Ok(Some(Layout::PerRun)),
        other => Err(StoreError::Backend {
            what: format!("reading {}", record.display()),
            message: format!(
                "unknown layout {other:?} (written by a newer Sluice? use that version with this state folder)"
            ),
        }),
    }
}

/// Whether anything but the store's own files is in `root`.
fn holds_objects(root: &Path) -> Result<bool, StoreError> {
    let listing = |e| StoreError::io(format!("listing {}", root.display()), e);
    for entry in fs::read_dir(root).map_err(listing)? {
        let name = entry.map_err(listing)?.file_name();
        if name != TMP_DIR && name != LAYOUT_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Rejects keys that would leave the root or hit the store's own files.
pub(super) fn checked_key(key: &str) -> Result<(), StoreError> {
    let first = key.split('/').next();
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || first == Some(TMP_DIR)
        || first == Some(LAYOUT_FILE);
    if bad {
        return Err(StoreError::Backend {
            what: format!("key {key:?}"),
            message: "not a valid object key".to_owned(),
        });
    }
    Ok(())
}

/// `rest` as one file name: `~` → `~t`, `/` → `~~`.
fn encode_name(rest: &str) -> String {
    let mut name = String::with_capacity(rest.len() + 8);
    for c in rest.chars() {
        match c {
            '~' => name.push_str("~t"),
            '/' => name.push_str("~~"),
            c => name.push(c),
        }
    }
    name
}

/// The inverse of [`encode_name`]; `None` for a name it cannot have made.
fn decode_name(name: &str) -> Option<String> {
    let mut rest = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                't' => rest.push('~'),
                '~' => rest.push('/'),
                _ => return None,
            },
            c => rest.push(c),
        }
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "2778a02f-79d5-4488-b289-a488f18524b4";

    #[test]
    fn a_runs_keys_are_files_of_its_folder_and_read_back() {
        let cases = [
            (
                format!("tmp/logs/{RUN}/0001/log.txt"),
                format!("tmp/logs/{RUN}/0001~~log.txt"),
            ),
            (
                format!("tmp/callbacks/runs/{RUN}/0001/abc-l3/result.json"),
                format!("tmp/callbacks/runs/{RUN}/0001~~abc-l3~~result.json"),
            ),
            (format!("done/{RUN}/done"), format!("done/{RUN}/done")),
            (
                format!("a/{RUN}/x~y/~/z~"),
                format!("a/{RUN}/x~ty~~~t~~z~t"),
            ),
            // Only the first run id makes a folder.
            (format!("{RUN}/{RUN}/b"), format!("{RUN}/{RUN}~~b")),
            (format!("watch/{RUN}"), format!("watch/{RUN}")),
            (
                "idempotency/abc/def".to_owned(),
                "idempotency/abc/def".to_owned(),
            ),
        ];
        for (key, path) in &cases {
            assert_eq!(&Layout::PerRun.relative_path(key).unwrap(), path, "{key}");
            assert_eq!(Layout::PerRun.key_of(path).as_ref(), Some(key), "{path}");
            assert_eq!(&Layout::Nested.relative_path(key).unwrap(), key);
            assert_eq!(Layout::Nested.key_of(key).as_ref(), Some(key));
        }
        // Every name reads back to one key: these differ only in where `/` and `~` fall.
        let a = Layout::PerRun
            .relative_path(&format!("a/{RUN}/x/~y"))
            .unwrap();
        let b = Layout::PerRun
            .relative_path(&format!("a/{RUN}/x~/y"))
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn paths_no_key_could_have_are_not_keys() {
        for path in [
            format!("a/{RUN}/x~"),
            format!("a/{RUN}/x~zy"),
            format!("a/{RUN}/sub/file"),
            format!("a/{RUN}/x~~~~y"),
            format!("a/{RUN}/~~x"),
            ".tmp/x".to_owned(),
            ".layout".to_owned(),
        ] {
            assert_eq!(Layout::PerRun.key_of(&path), None, "{path}");
        }
        let long = format!("a/{RUN}/{}", "x/".repeat(100));
        assert!(
            Layout::PerRun
                .relative_path(long.trim_end_matches('/'))
                .is_err()
        );
    }

    #[test]
    fn a_listing_starts_in_the_deepest_folder_its_prefix_names() {
        let starts = [
            ("", ""),
            ("tmp/lo", "tmp"),
            (&format!("tmp/logs/{}", &RUN[..8]) as &str, "tmp/logs"),
            (&format!("tmp/logs/{RUN}"), "tmp/logs"),
            (&format!("tmp/logs/{RUN}/"), &format!("tmp/logs/{RUN}")),
            (&format!("tmp/logs/{RUN}/0001/"), &format!("tmp/logs/{RUN}")),
        ];
        for (prefix, start) in starts {
            let found = Layout::PerRun.listing_start(prefix);
            assert_eq!(found.as_deref(), Some(start), "{prefix}");
        }
        let nested = Layout::Nested.listing_start(&format!("tmp/logs/{RUN}/0001/"));
        assert_eq!(nested, Some(format!("tmp/logs/{RUN}/0001")));
        for outside in ["/etc/", "a/../", "./a/", "a//b/"] {
            assert_eq!(Layout::PerRun.listing_start(outside), None, "{outside}");
        }
    }

    #[test]
    fn an_empty_folder_records_the_per_run_layout_and_an_old_one_stays_nested() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        fs::create_dir_all(fresh.join(TMP_DIR)).unwrap();
        assert_eq!(Layout::of_root(&fresh).unwrap(), Layout::PerRun);
        fs::create_dir_all(fresh.join("tmp/logs")).unwrap();
        assert_eq!(Layout::of_root(&fresh).unwrap(), Layout::PerRun);

        let old = dir.path().join("old");
        fs::create_dir_all(old.join(TMP_DIR)).unwrap();
        fs::create_dir_all(old.join("tmp/logs")).unwrap();
        assert_eq!(Layout::of_root(&old).unwrap(), Layout::Nested);
        assert!(!old.join(LAYOUT_FILE).exists());

        fs::write(fresh.join(LAYOUT_FILE), "sharded\n").unwrap();
        let error = Layout::of_root(&fresh).unwrap_err().to_string();
        assert!(error.contains("unknown layout \"sharded\""), "{error}");
    }
}
