//! Safe extraction of a bundle (`exec.zip`) into a work folder.
//!
//! A bundle is data from the network: every entry is checked before anything is written.
//! Rejected: names with `..` or an absolute path ([`zip::read::ZipFile::enclosed_name`]),
//! symbolic links whose target leaves the work folder, more entries than the limit, and more
//! bytes than the limit (counted while writing, since a zip's declared sizes can lie). Files
//! are created with `create_new`, so an entry can never write through an existing link, and
//! get their permission bits (setuid and friends stripped).

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sluice_contract::paths::link_stays_inside;

use zip::ZipArchive;

/// How big a bundle may unpack. Defaults: 100 000 entries, 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Most entries.
    pub max_entries: usize,
    /// Most bytes written in all.
    pub max_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_entries: 100_000,
            max_bytes: 4 << 30,
        }
    }
}

/// A bundle that cannot be unpacked safely.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// Not a zip.
    #[error("the bundle is not a readable zip: {0}")]
    NotAZip(String),
    /// An entry whose name would leave the work folder.
    #[error("bundle entry {0:?} has a path outside the work folder")]
    UnsafePath(String),
    /// A link whose target would leave the work folder.
    #[error("bundle entry {name:?} is a link to {target:?}, outside the work folder")]
    UnsafeLink {
        /// The entry.
        name: String,
        /// Its target.
        target: String,
    },
    /// Too many entries.
    #[error("the bundle has {0} entries, more than the {1} allowed")]
    TooManyEntries(usize, usize),
    /// Too many bytes.
    #[error("the bundle unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// Writing failed.
    #[error("unpacking {name:?}: {message}")]
    Io {
        /// The entry.
        name: String,
        /// The cause.
        message: String,
    },
}

/// Unpacks the entries of `bundle` under the folder `only` (for example `code`) into `dest`
/// (which must exist), under `limits`. Other entries are left in the archive: small files
/// are read with [`read_entry`] instead of going through the disk.
///
/// # Errors
///
/// The first [`ExtractError`] found; `dest` may then hold part of the bundle.
pub fn extract(
    bundle: &[u8],
    dest: &Path,
    only: &str,
    limits: ExtractLimits,
) -> Result<(), ExtractError> {
    let mut archive =
        ZipArchive::new(Cursor::new(bundle)).map_err(|e| ExtractError::NotAZip(e.to_string()))?;
    if archive.len() > limits.max_entries {
        return Err(ExtractError::TooManyEntries(
            archive.len(),
            limits.max_entries,
        ));
    }
    let mut written: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ExtractError::NotAZip(e.to_string()))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("entry {index}"));
        let io = |e: std::io::Error| ExtractError::Io {
            name: name.clone(),
            message: e.to_string(),
        };
        let raw_unsafe = name.starts_with('/') || name.split(['/', '\\']).any(|part| part == "..");
        let relative = entry
            .enclosed_name()
            .filter(|_| !raw_unsafe)
            .ok_or_else(|| ExtractError::UnsafePath(name.clone()))?;
        if !relative.starts_with(only) {
            continue;
        }
        let path = dest.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(io)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        if entry.is_symlink() {
            let mut target = String::new();
            entry
                .by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(io)?;
            if !link_stays_inside(&relative, Path::new(&target)) {
                return Err(ExtractError::UnsafeLink { name, target });
            }
            std::os::unix::fs::symlink(&target, &path).map_err(io)?;
            continue;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        let remaining = limits.max_bytes - written;
        let copied =
            std::io::copy(&mut entry.by_ref().take(remaining + 1), &mut file).map_err(io)?;
        if copied > remaining {
            return Err(ExtractError::TooLarge(limits.max_bytes));
        }
        written += copied;
        file.flush().map_err(io)?;
        if let Some(mode) = entry.unix_mode() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777)).map_err(io)?;
        }
    }
    Ok(())
}

/// Reads the file `name` of `bundle` into memory, refusing more than `max` bytes.
///
/// # Errors
///
/// [`ExtractError::NotAZip`] when the bundle or the entry cannot be read (a missing entry
/// included), [`ExtractError::TooLarge`] beyond `max`.
pub fn read_entry(bundle: &[u8], name: &str, max: u64) -> Result<Vec<u8>, ExtractError> {
    let mut archive =
        ZipArchive::new(Cursor::new(bundle)).map_err(|e| ExtractError::NotAZip(e.to_string()))?;
    let entry = archive
        .by_name(name)
        .map_err(|e| ExtractError::NotAZip(format!("{name}: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ExtractError::Io {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
    if bytes.len() as u64 > max {
        return Err(ExtractError::TooLarge(max));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().unix_permissions(0o4755);
        for (name, bytes) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        for (name, target) in links {
            zip.add_symlink(*name, *target, options).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn plain_bundles_unpack_with_modes_but_no_setuid() {
        let dest = tempfile::tempdir().unwrap();
        extract(
            &zip_of(
                &[("code/run.sh", b"echo hi"), ("order.json", b"{}")],
                &[("code/l", "run.sh")],
            ),
            dest.path(),
            "code",
            ExtractLimits::default(),
        )
        .unwrap();
        let path = dest.path().join("code/run.sh");
        assert_eq!(fs::read(&path).unwrap(), b"echo hi");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::read(dest.path().join("code/l")).unwrap(), b"echo hi");
        assert!(
            !dest.path().join("order.json").exists(),
            "only code/ is unpacked"
        );
    }

    #[test]
    fn parent_and_absolute_paths_are_rejected() {
        let dest = tempfile::tempdir().unwrap();
        for name in [
            "../evil",
            "/etc/evil",
            "code/../../evil",
            "code/../../code/evil",
        ] {
            let err = extract(
                &zip_of(&[(name, b"x")], &[]),
                dest.path(),
                "code",
                ExtractLimits::default(),
            )
            .unwrap_err();
            assert!(matches!(err, ExtractError::UnsafePath(_)), "{name}: {err}");
            assert!(
                std::fs::read_dir(dest.path()).unwrap().next().is_none(),
                "{name} wrote something"
            );
        }
    }

    #[test]
    fn links_leaving_the_work_folder_are_rejected() {
        let dest = tempfile::tempdir().unwrap();
        for target in ["/etc/passwd", "../../x", "../.."] {
            let err = extract(
                &zip_of(&[], &[("code/l", target)]),
                dest.path(),
                "code",
                ExtractLimits::default(),
            )
            .unwrap_err();
            assert!(
                matches!(err, ExtractError::UnsafeLink { .. }),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let dest = tempfile::tempdir().unwrap();
        let limits = ExtractLimits {
            max_entries: 1,
            max_bytes: 1 << 20,
        };
        let err = extract(
            &zip_of(&[("code/a", b"1"), ("code/b", b"2")], &[]),
            dest.path(),
            "code",
            limits,
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::TooManyEntries(2, 1)), "{err}");
        let limits = ExtractLimits {
            max_entries: 10,
            max_bytes: 4,
        };
        let err = extract(
            &zip_of(&[("code/a", b"12345")], &[]),
            dest.path(),
            "code",
            limits,
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::TooLarge(4)), "{err}");
    }

    #[test]
    fn small_entries_are_read_in_memory_with_a_limit() {
        let bundle = zip_of(&[("order.json", b"{\"a\":1}")], &[]);
        assert_eq!(
            read_entry(&bundle, "order.json", 100).unwrap(),
            b"{\"a\":1}"
        );
        assert!(matches!(
            read_entry(&bundle, "order.json", 3),
            Err(ExtractError::TooLarge(3))
        ));
        assert!(matches!(
            read_entry(&bundle, "missing", 100),
            Err(ExtractError::NotAZip(_))
        ));
    }
}
