//! [`DirStore`]: an object store over a local directory.
//!
//! Keys map to paths under the root, one folder per run (see [`super::dir_layout`]:
//! `tmp/exec/<run>/<num>/exec.zip` is the file `tmp/exec/<run>/<num>~~exec.zip` there).
//! A put writes a temporary file in `<root>/.tmp` and renames it into place, so readers never
//! see a partial object; a conditional put hard-links the temporary file to the key's path,
//! which fails if the path exists, so two writers racing for the same key cannot both win.
//! File IO runs on the blocking pool ([`crate::blocking`]). After each successful write
//! the key is sent to the listener, if any: that is the local event bus's S3 notification.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;

use super::dir_layout::{Layout, TMP_DIR, checked_key};
use crate::blocking::run_blocking;
use crate::error::StoreError;
use crate::ports::{ObjectStore, Presigned};

/// An object store over a directory (see the module docs).
#[derive(Debug, Clone)]
pub struct DirStore {
    bucket: String,
    root: PathBuf,
    layout: Layout,
    listener: Option<UnboundedSender<String>>,
}

impl DirStore {
    /// Opens (creating) the store rooted at `root`, named `bucket`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be created or read;
    /// [`StoreError::Backend`] when it records a layout this version does not know.
    pub fn open(root: &Path, bucket: &str) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io(format!("resolving {}", root.display()), e))?;
        Ok(DirStore {
            bucket: bucket.to_owned(),
            layout: Layout::of_root(&root)?,
            root,
            listener: None,
        })
    }

    /// Sends every key written from now on to `listener`.
    pub fn with_listener(mut self, listener: UnboundedSender<String>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The folder holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key a `file://` URL of this store points to, if it points to one.
    pub fn key_for_url(&self, url: &str) -> Option<String> {
        let path = url.strip_prefix("file://")?;
        let relative = Path::new(path).strip_prefix(&self.root).ok()?;
        self.layout.key_of(relative.to_str()?)
    }

    /// The file holding `key`'s object.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when `key` is not a key this store can hold.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        checked_key(key)?;
        Ok(self.root.join(self.layout.relative_path(key)?))
    }

    fn notify(&self, key: &str) {
        if let Some(listener) = &self.listener {
            // A closed bus means the runtime is shutting down: nobody is left to wake.
            let _ = listener.send(key.to_owned());
        }
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(TMP_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// Where a new object's bytes come from.
enum Content {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// How a new object takes its key.
#[derive(Clone, Copy)]
enum Landing {
    /// Rename over whatever is there.
    Replace,
    /// Hard-link, which fails if something is there.
    IfAbsent,
}

impl DirStore {
    /// Writes `content` to a temporary file, then lands it at `key` (see the module docs),
    /// then tells the listener.
    async fn write(&self, key: &str, content: Content, landing: Landing) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let temp = self.temp_path();
        let what = key.to_owned();
        run_blocking("writing an object", move || {
            let written = write_and_land(&content, &temp, &path, landing, what);
            // A rename took the temporary file away; after a link or a failure it is left.
            if written.is_err() || matches!(landing, Landing::IfAbsent) {
                let _ = fs::remove_file(&temp);
            }
            written
        })
        .await?;
        self.notify(key);
        Ok(())
    }
}

/// Writes `content` to `temp`, then lands it at `path` as `landing` says (`what` names the
/// key in a refusal).
fn write_and_land(
    content: &Content,
    temp: &Path,
    path: &Path,
    landing: Landing,
    what: String,
) -> Result<(), StoreError> {
    match content {
        Content::Bytes(bytes) => fs::write(temp, bytes)
            .map_err(|e| StoreError::io(format!("writing {}", temp.display()), e))?,
        Content::File(source) => {
            fs::copy(source, temp)
                .map_err(|e| StoreError::io(format!("copying {}", source.display()), e))?;
        }
    }
    // The object's folder is made only when landing finds it missing: most writes go to a
    // run's folder that exists, and need no second system call.
    let land = || match landing {
        Landing::Replace => fs::rename(temp, path),
        Landing::IfAbsent => fs::hard_link(temp, path),
    };
    let mut landed = land();
    if matches!(&landed, Err(e) if e.kind() == ErrorKind::NotFound) {
        create_parent(path)?;
        landed = land();
    }
    landed.map_err(|e| match landing {
        Landing::IfAbsent if e.kind() == ErrorKind::AlreadyExists => StoreError::ConditionFailed {
            what,
            detail: "an object already exists".to_owned(),
        },
        Landing::IfAbsent => StoreError::io(format!("linking into {}", path.display()), e),
        Landing::Replace => StoreError::io(format!("renaming into {}", path.display()), e),
    })
}

/// The `file://` URL of `path` (absolute: under the canonical root).
fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().expect("object paths have a parent");
    fs::create_dir_all(parent)
        .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))
}

/// Appends to `out` the keys starting with `prefix` stored under `dir` (`relative` to the
/// root, `""` for the root itself).
fn list_under(
    layout: Layout,
    dir: &Path,
    relative: &str,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        let file_type = entry
            .file_type()
            .map_err(|e| StoreError::io(format!("listing {}", entry.path().display()), e))?;
        if file_type.is_dir() {
            // Folders are key segments in every layout: descend only where keys under the
            // folder can still match the prefix.
            let folder = format!("{path}/");
            if path != TMP_DIR && (folder.starts_with(prefix) || prefix.starts_with(&folder)) {
                list_under(layout, &entry.path(), &path, prefix, out)?;
            }
        } else if let Some(key) = layout.key_of(&path)
            && key.starts_with(prefix)
        {
            out.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for DirStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(key)?;
        let key = key.to_owned();
        run_blocking("reading an object", move || match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound { key }),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        })
        .await
    }

    async fn get_prefix(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, StoreError> {
        use std::io::Read;
        let path = self.path_of(key)?;
        let key = key.to_owned();
        run_blocking("reading an object", move || {
            let file = match fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(StoreError::NotFound { key });
                }
                Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
            };
            let mut bytes = Vec::new();
            file.take(max_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
            Ok(bytes)
        })
        .await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.write(key, Content::Bytes(bytes), Landing::Replace)
            .await
    }

    /// The tag is the content's sha256: locally nothing is pinned to it (a presigned URL
    /// is the file's), but it changes whenever the object does, as an `ETag`.
    async fn put_tagged(&self, key: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        use sha2::Digest as _;
        let etag = format!("\"{:x}\"", sha2::Sha256::digest(&bytes));
        self.put(key, bytes).await?;
        Ok(etag)
    }

    async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.write(key, Content::Bytes(bytes), Landing::IfAbsent)
            .await
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<(), StoreError> {
        self.write(key, Content::File(source.to_owned()), Landing::Replace)
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path_of(key)?;
        run_blocking("checking an object", move || match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(format!("checking {}", path.display()), e)),
        })
        .await
    }

    fn keys_per_listing(&self) -> usize {
        // Listing reads folders: every key is an entry to read (a run's keys, one folder's).
        1
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let layout = self.layout;
        let prefix = prefix.to_owned();
        run_blocking("listing objects", move || {
            let Some(start) = layout.listing_start(&prefix) else {
                return Ok(Vec::new());
            };
            let mut keys = Vec::new();
            list_under(layout, &root.join(&start), &start, &prefix, &mut keys)?;
            // Sorted by key, not by path (a run's keys are names in one folder).
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        run_blocking("deleting an object", move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("deleting {}", path.display()), e)),
        })
        .await
    }

    /// A key this store cannot hold (see [`Self::presign`], which checks) has the URL of
    /// its nested path, where no object is.
    fn object_url(&self, key: &str) -> String {
        match self.path_of(key) {
            Ok(path) => file_url(&path),
            Err(_) => format!("file://{}/{key}", self.root.display()),
        }
    }

    /// Locally a "presigned URL" is the object's `file://` URL, whatever the operation: the
    /// local worker reads and writes through the store, which fires the event bus. Expiry is
    /// not enforced on one machine.
    async fn presign(
        &self,
        _operation: Presigned,
        key: &str,
        _expiry: Duration,
    ) -> Result<String, StoreError> {
        self.path_of(key).map(|path| file_url(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "2778a02f-79d5-4488-b289-a488f18524b4";

    #[tokio::test]
    async fn keys_cannot_leave_the_root_and_urls_map_back_to_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(&dir.path().join("b"), "b").unwrap();
        for bad in ["../x", "/abs", "a//b", "a/./b", ".tmp/x", ".layout", ""] {
            assert!(
                store.put(bad, b"x".to_vec()).await.is_err(),
                "{bad:?} accepted"
            );
        }
        for key in [
            format!("tmp/callbacks/runs/{RUN}/0001/a-l1/result.json"),
            "idempotency/abc".to_owned(),
        ] {
            let url = (store.presign(Presigned::Put, &key, Duration::from_secs(1)))
                .await
                .unwrap();
            assert_eq!(store.key_for_url(&url), Some(key.clone()));
            assert_eq!(url, store.object_url(&key));
        }
        assert_eq!(store.key_for_url("file:///etc/passwd"), None);
        assert_eq!(
            store.key_for_url(&format!("file://{}/../x", store.root().display())),
            None
        );
        let nested = format!(
            "file://{}/tmp/logs/{RUN}/0001/log.txt",
            store.root().display()
        );
        assert_eq!(
            store.key_for_url(&nested),
            None,
            "not where that key is kept"
        );
    }

    #[tokio::test]
    async fn a_runs_objects_are_files_of_one_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(&dir.path().join("b"), "b").unwrap();
        for num in ["0001", "0002"] {
            for key in [
                format!("tmp/logs/{RUN}/{num}/log.txt"),
                format!("tmp/claims/{RUN}/{num}/a-l1"),
            ] {
                store.put_if_absent(&key, b"x".to_vec()).await.unwrap();
                assert!(store.path_of(&key).unwrap().is_file());
            }
        }
        let run_folder = store.root().join("tmp/logs").join(RUN);
        let names: Vec<_> = fs::read_dir(&run_folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"0001~~log.txt".to_owned()), "{names:?}");
    }

    #[tokio::test]
    async fn a_folder_from_an_older_sluice_keeps_its_nested_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        let key = format!("tmp/logs/{RUN}/0001/log.txt");
        fs::create_dir_all(root.join(format!("tmp/logs/{RUN}/0001"))).unwrap();
        fs::write(root.join(&key), b"old").unwrap();
        let store = DirStore::open(&root, "b").unwrap();
        assert_eq!(store.get(&key).await.unwrap(), b"old");
        assert_eq!(store.list("tmp/").await.unwrap(), vec![key.clone()]);
        let claim = format!("tmp/claims/{RUN}/0001/a");
        store.put(&claim, b"new".to_vec()).await.unwrap();
        assert!(root.join(&claim).is_file(), "written nested too");
        // Reopened, it is still the same folder.
        let store = DirStore::open(&root, "b").unwrap();
        assert_eq!(store.list("tmp/").await.unwrap(), vec![claim, key]);
    }

    #[tokio::test]
    async fn every_write_is_announced_to_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let store = DirStore::open(&dir.path().join("b"), "b")
            .unwrap()
            .with_listener(tx);
        store.put("a/one", b"1".to_vec()).await.unwrap();
        store.put_if_absent("a/two", b"2".to_vec()).await.unwrap();
        assert!(store.put_if_absent("a/two", b"2".to_vec()).await.is_err());
        assert_eq!(rx.recv().await.as_deref(), Some("a/one"));
        assert_eq!(rx.recv().await.as_deref(), Some("a/two"));
        assert!(rx.try_recv().is_err(), "a refused write is not announced");
        let left = fs::read_dir(store.root().join(TMP_DIR)).unwrap().count();
        assert_eq!(left, 0, "temporary files are removed, after a refusal too");
    }
}
