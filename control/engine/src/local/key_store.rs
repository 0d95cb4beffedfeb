//! [`FileKeyStore`]: per-order private keys as files readable by their owner only.
//!
//! Layout: `<root>/<run_id>/<order_num>.key`, and the kept jobs' key `<root>/jobs.key`;
//! folders 0700, files 0600, created with those modes (never widened afterwards, so no
//! window where another user could read them).

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sluice_contract::{OrderNum, RunId};

use crate::blocking::run_blocking;
use crate::error::StoreError;
use crate::ports::KeyStore;

/// Keys as 0600 files under a 0700 folder.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    root: PathBuf,
}

impl FileKeyStore {
    /// Opens (creating, 0700) the key folder.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be created.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io(format!("resolving {}", root.display()), e))?;
        Ok(FileKeyStore { root })
    }

    fn run_dir(&self, run_id: &RunId) -> PathBuf {
        self.root.join(run_id.as_str())
    }
}

#[async_trait]
impl KeyStore for FileKeyStore {
    async fn put_key(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        secret_key: &str,
    ) -> Result<String, StoreError> {
        let dir = self.run_dir(run_id);
        let path = dir.join(format!("{order_num}.key"));
        let secret = format!("{secret_key}\n");
        run_blocking("storing a key", move || {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
            file.write_all(secret.as_bytes())
                .map_err(|e| StoreError::io(format!("writing {}", path.display()), e))?;
            Ok(path.display().to_string())
        })
        .await
    }

    async fn get_key(&self, key_path: &str) -> Result<String, StoreError> {
        let path = PathBuf::from(key_path);
        if !path.starts_with(&self.root) {
            return Err(StoreError::NotFound {
                key: key_path.to_owned(),
            });
        }
        let key = key_path.to_owned();
        run_blocking("reading a key", move || match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().to_owned()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound { key }),
            Err(e) => Err(StoreError::io(format!("reading {}", path.display()), e)),
        })
        .await
    }

    async fn delete_run_keys(&self, run_id: &RunId) -> Result<(), StoreError> {
        let dir = self.run_dir(run_id);
        run_blocking("deleting keys", move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("deleting {}", dir.display()), e)),
        })
        .await
    }

    /// Written whole to a temporary file, then linked into place unless a key is there:
    /// no reader ever finds a key half written, and of two first runs the second reads the
    /// first's.
    async fn jobs_key(&self, made: &str) -> Result<String, StoreError> {
        let root = self.root.clone();
        let made = made.to_owned();
        run_blocking("reading or storing the kept jobs' key", move || {
            let path = root.join("jobs.key");
            let failed = |what: &str| {
                let what = format!("{what} {}", path.display());
                move |e| StoreError::io(what, e)
            };
            // tempfile makes it 0600.
            let mut file = tempfile::NamedTempFile::new_in(&root).map_err(failed("writing"))?;
            file.write_all(format!("{made}\n").as_bytes())
                .map_err(failed("writing"))?;
            match file.persist_noclobber(&path) {
                Ok(_) => Ok(made),
                Err(e) if e.error.kind() == ErrorKind::AlreadyExists => fs::read_to_string(&path)
                    .map(|text| text.trim().to_owned())
                    .map_err(failed("reading")),
                Err(e) => Err(failed("storing")(e.error)),
            }
        })
        .await
    }

    /// Deletes the run's folder, after checking that every path is in it: listing it
    /// costs nothing.
    async fn delete_keys(&self, run_id: &RunId, key_paths: &[String]) -> Result<(), StoreError> {
        let dir = self.run_dir(run_id);
        if let Some(other) = key_paths
            .iter()
            .find(|p| Path::new(p).parent() != Some(dir.as_path()))
        {
            return Err(StoreError::Backend {
                what: format!("deleting keys under {}", dir.display()),
                message: format!("{other} is not one of the run's keys"),
            });
        }
        self.delete_run_keys(run_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn the_jobs_key_is_the_first_stored_private_and_outlives_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::open(&dir.path().join("keys")).unwrap();
        assert_eq!(store.jobs_key("first").await.unwrap(), "first");
        assert_eq!(store.jobs_key("second").await.unwrap(), "first");
        let path = dir.path().join("keys/jobs.key");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let run = RunId::generate();
        store
            .put_key(&run, OrderNum::from_index(0), "AGE-SECRET-KEY-1XYZ")
            .await
            .unwrap();
        store.delete_run_keys(&run).await.unwrap();
        assert_eq!(store.jobs_key("third").await.unwrap(), "first");
    }

    #[tokio::test]
    async fn keys_are_private_and_deleted_with_their_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::open(&dir.path().join("keys")).unwrap();
        let run = RunId::generate();
        let path = store
            .put_key(&run, OrderNum::from_index(0), "AGE-SECRET-KEY-1XYZ")
            .await
            .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(Path::new(&path).parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(store.get_key(&path).await.unwrap(), "AGE-SECRET-KEY-1XYZ");
        assert!(
            store
                .get_key("/etc/passwd")
                .await
                .unwrap_err()
                .is_not_found()
        );
        store.delete_run_keys(&run).await.unwrap();
        assert!(store.get_key(&path).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn keys_deleted_by_name_must_be_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::open(&dir.path().join("keys")).unwrap();
        let (run, other) = (RunId::generate(), RunId::generate());
        let first = OrderNum::from_index(0);
        let path = store
            .put_key(&run, first, "AGE-SECRET-KEY-1")
            .await
            .unwrap();
        let kept = store
            .put_key(&other, first, "AGE-SECRET-KEY-2")
            .await
            .unwrap();
        let foreign = [path.clone(), kept.clone()];
        assert!(store.delete_keys(&run, &foreign).await.is_err());
        assert_eq!(store.get_key(&path).await.unwrap(), "AGE-SECRET-KEY-1");
        store
            .delete_keys(&run, std::slice::from_ref(&path))
            .await
            .unwrap();
        assert!(store.get_key(&path).await.unwrap_err().is_not_found());
        assert_eq!(store.get_key(&kept).await.unwrap(), "AGE-SECRET-KEY-2");
        store.delete_keys(&run, &[path]).await.unwrap();
    }
}
