//! [`DirStore`]: an object store over a local directory.
//!
//! Keys map to paths under the root (`tmp/exec/<run>/<num>/exec.zip` is a file there).
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

use crate::blocking::run_blocking;
use crate::error::StoreError;
use crate::ports::{ObjectStore, Presigned};

const TMP_DIR: &str = ".tmp";

/// An object store over a directory (see the module docs).
#[derive(Debug, Clone)]
pub struct DirStore {
    bucket: String,
    root: PathBuf,
    listener: Option<UnboundedSender<String>>,
}

impl DirStore {
    /// Opens (creating) the store rooted at `root`, named `bucket`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be created.
    pub fn open(root: &Path, bucket: &str) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io(format!("resolving {}", root.display()), e))?;
        Ok(DirStore {
            bucket: bucket.to_owned(),
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

    /// The key a `file://` URL of this store points to, if it points inside it.
    pub fn key_for_url(&self, url: &str) -> Option<String> {
        let path = url.strip_prefix("file://")?;
        let key = Path::new(path).strip_prefix(&self.root).ok()?;
        let key = key.to_str()?.to_owned();
        checked_key(&key).ok()?;
        Some(key)
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        checked_key(key)?;
        Ok(self.root.join(key))
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
            match &content {
                Content::Bytes(bytes) => fs::write(&temp, bytes)
                    .map_err(|e| StoreError::io(format!("writing {}", temp.display()), e))?,
                Content::File(source) => {
                    fs::copy(source, &temp)
                        .map_err(|e| StoreError::io(format!("copying {}", source.display()), e))?;
                }
            }
            create_parent(&path)?;
            match landing {
                Landing::Replace => fs::rename(&temp, &path)
                    .map_err(|e| StoreError::io(format!("renaming into {}", path.display()), e)),
                Landing::IfAbsent => {
                    let linked = fs::hard_link(&temp, &path);
                    let _ = fs::remove_file(&temp);
                    match linked {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                            Err(StoreError::ConditionFailed {
                                what,
                                detail: "an object already exists".to_owned(),
                            })
                        }
                        Err(e) => Err(StoreError::io(
                            format!("linking into {}", path.display()),
                            e,
                        )),
                    }
                }
            }
        })
        .await?;
        self.notify(key);
        Ok(())
    }
}

/// Rejects keys that would leave the root or hit the temporary folder.
fn checked_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || key.split('/').next() == Some(TMP_DIR);
    if bad {
        return Err(StoreError::Backend {
            what: format!("key {key:?}"),
            message: "not a valid object key".to_owned(),
        });
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().expect("object paths have a parent");
    fs::create_dir_all(parent)
        .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))
}

fn list_under(
    dir: &Path,
    root: &Path,
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
        let path = entry.path();
        let Some(key) = path.strip_prefix(root).ok().and_then(|k| k.to_str()) else {
            continue;
        };
        if key == TMP_DIR {
            continue;
        }
        let file_type = entry
            .file_type()
            .map_err(|e| StoreError::io(format!("listing {}", path.display()), e))?;
        if file_type.is_dir() {
            // Descend only where keys under the folder can still match the prefix.
            let folder = format!("{key}/");
            if folder.starts_with(prefix) || prefix.starts_with(&folder) {
                list_under(&path, root, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(key.to_owned());
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
        // Listing walks the folders: every key is a file (in folders) to visit.
        1
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        run_blocking("listing objects", move || {
            // Start from the deepest folder the prefix names in full.
            let start = match prefix.rfind('/') {
                Some(end) => root.join(&prefix[..end]),
                None => root.clone(),
            };
            let mut keys = Vec::new();
            list_under(&start, &root, &prefix, &mut keys)?;
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

    fn object_url(&self, key: &str) -> String {
        format!("file://{}/{key}", self.root.display())
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
        checked_key(key)?;
        Ok(self.object_url(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_cannot_leave_the_root_and_urls_map_back_to_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(&dir.path().join("b"), "b").unwrap();
        for bad in ["../x", "/abs", "a//b", "a/./b", ".tmp/x", ""] {
            assert!(
                store.put(bad, b"x".to_vec()).await.is_err(),
                "{bad:?} accepted"
            );
        }
        let url = store
            .presign(
                Presigned::Put,
                "tmp/callbacks/runs/r/0001/result.json",
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(
            store.key_for_url(&url).as_deref(),
            Some("tmp/callbacks/runs/r/0001/result.json")
        );
        assert_eq!(store.key_for_url("file:///etc/passwd"), None);
        assert_eq!(
            store.key_for_url(&format!("file://{}/../x", store.root().display())),
            None
        );
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
    }
}
