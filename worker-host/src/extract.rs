//! Safe extraction of a bundle (`exec.zip`) into a work folder.
//!
//! A bundle is data from the network, and for a WASM order it is unpacked before any sandbox
//! exists: every entry is checked before anything is written. Rejected: names with `..` or
//! an absolute path ([`zip::read::ZipFile::enclosed_name`]), entries under a link, symbolic
//! links that lead outside the code folder (followed through the bundle's other links: a
//! chain like `s -> .`, `s/…/l -> ../…` is caught), more entries than the limit, and more
//! bytes than the limit (counted while writing, since a zip's declared sizes can lie).
//! Writes go through a directory handle that cannot leave the work folder, links are made
//! last, and files are created with `create_new` and get their permission bits (setuid and
//! friends stripped).

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use sluice_contract::paths::{LinkProblem, LinkTree};
use zip::ZipArchive;
use zip::read::ZipFile;

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
    /// A link whose target, followed through the bundle's other links, leaves the code
    /// folder.
    #[error("bundle entry {name:?} is a link to {target:?}, which leads outside the code folder")]
    UnsafeLink {
        /// The entry.
        name: String,
        /// Its target.
        target: String,
    },
    /// An entry under one of the bundle's links: writing it would go where the link leads.
    #[error(
        "bundle entry {name:?} lies under the link {link:?}; entries may not be written through links"
    )]
    UnderLink {
        /// The entry.
        name: String,
        /// The link among its parent folders.
        link: String,
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
/// are read with [`SmallEntries`] instead of going through the disk.
///
/// Every write goes through a handle on `dest` ([`cap_std::fs::Dir`]), which refuses any
/// path that would resolve outside it. The entries and links are checked as a whole before
/// anything is written ([`LinkTree::check`]: nothing at or under a link, every link ending
/// inside `only` through the others), and links are created last, so no file or folder is
/// ever written through one.
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
    let root = Dir::open_ambient_dir(dest, ambient_authority()).map_err(|e| ExtractError::Io {
        name: dest.display().to_string(),
        message: e.to_string(),
    })?;
    let mut links = LinkTree::default();
    // Files and folders: (index, name, path relative to `dest`).
    let mut placed = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ExtractError::NotAZip(e.to_string()))?;
        let name = entry_name(&entry, index);
        let relative = safe_path(&entry, &name)?;
        let Ok(inside) = relative.strip_prefix(only) else {
            continue;
        };
        if entry.is_symlink() {
            if inside.as_os_str().is_empty() {
                return Err(ExtractError::UnsafePath(name));
            }
            let mut target = String::new();
            entry
                .by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| io_error(&name, e))?;
            links.insert(inside, target);
        } else {
            placed.push((index, name, relative));
        }
    }
    // The whole tree is checked before anything is written.
    let under_only = |path: &Path| Path::new(only).join(path).display().to_string();
    let inside_paths = placed
        .iter()
        .filter_map(|(_, _, relative)| relative.strip_prefix(only).ok());
    links.check(inside_paths).map_err(|problem| match problem {
        LinkProblem::UnderLink { path, link } => ExtractError::UnderLink {
            name: under_only(&path),
            link: under_only(&link),
        },
        LinkProblem::Escapes { link, target } => ExtractError::UnsafeLink {
            name: under_only(&link),
            target: target.display().to_string(),
        },
    })?;
    let mut written: u64 = 0;
    for (index, name, relative) in placed {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ExtractError::NotAZip(e.to_string()))?;
        let io = |e: std::io::Error| io_error(&name, e);
        if entry.is_dir() {
            root.create_dir_all(&relative).map_err(io)?;
            continue;
        }
        if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            root.create_dir_all(parent).map_err(io)?;
        }
        let mut file = root
            .open_with(&relative, OpenOptions::new().write(true).create_new(true))
            .map_err(io)?
            .into_std();
        let remaining = limits.max_bytes - written;
        let copied =
            std::io::copy(&mut entry.by_ref().take(remaining + 1), &mut file).map_err(io)?;
        if copied > remaining {
            return Err(ExtractError::TooLarge(limits.max_bytes));
        }
        written += copied;
        file.flush().map_err(io)?;
        if let Some(mode) = entry.unix_mode() {
            file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
                .map_err(io)?;
        }
    }
    for (inside, target) in links.iter() {
        let relative = Path::new(only).join(inside);
        let io = |e: std::io::Error| io_error(&relative.display().to_string(), e);
        if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            root.create_dir_all(parent).map_err(io)?;
        }
        root.symlink(target, &relative).map_err(io)?;
    }
    Ok(())
}

fn entry_name(entry: &ZipFile<'_, Cursor<&[u8]>>, index: usize) -> String {
    entry
        .name()
        .map(|n| n.into_owned())
        .unwrap_or_else(|_| format!("entry {index}"))
}

/// The entry's path relative to the work folder: no `..`, not absolute.
fn safe_path(entry: &ZipFile<'_, Cursor<&[u8]>>, name: &str) -> Result<PathBuf, ExtractError> {
    let raw_unsafe = name.starts_with('/') || name.split(['/', '\\']).any(|part| part == "..");
    entry
        .enclosed_name()
        .filter(|_| !raw_unsafe)
        .ok_or_else(|| ExtractError::UnsafePath(name.to_owned()))
}

fn io_error(name: &str, error: std::io::Error) -> ExtractError {
    ExtractError::Io {
        name: name.to_owned(),
        message: error.to_string(),
    }
}

/// A bundle's small files (manifest, env, name lists), read into memory from one parse of
/// its archive rather than one parse each.
#[derive(Debug)]
pub struct SmallEntries<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
}

impl<'a> SmallEntries<'a> {
    /// Opens `bundle`'s archive.
    ///
    /// # Errors
    ///
    /// [`ExtractError::NotAZip`] when it cannot be read.
    pub fn open(bundle: &'a [u8]) -> Result<Self, ExtractError> {
        let archive = ZipArchive::new(Cursor::new(bundle))
            .map_err(|e| ExtractError::NotAZip(e.to_string()))?;
        Ok(SmallEntries { archive })
    }

    /// Reads the file `name` into memory, refusing more than `max` bytes.
    ///
    /// # Errors
    ///
    /// [`ExtractError::NotAZip`] when the entry cannot be read (a missing entry included),
    /// [`ExtractError::TooLarge`] beyond `max`.
    pub fn read(&mut self, name: &str, max: u64) -> Result<Vec<u8>, ExtractError> {
        self.read_if_present(name, max)?.ok_or_else(|| {
            ExtractError::NotAZip(format!("{name}: specified file not found in archive"))
        })
    }

    /// The file `name`, as [`SmallEntries::read`], or `None` when the bundle has none.
    ///
    /// # Errors
    ///
    /// As [`SmallEntries::read`], but for a missing entry.
    pub fn read_if_present(
        &mut self,
        name: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, ExtractError> {
        let entry = match self.archive.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(ExtractError::NotAZip(format!("{name}: {e}"))),
        };
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
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().unix_permissions(0o4755);
        // Links first: an attack puts them before the entries meant to go through them.
        for (name, target) in links {
            zip.add_symlink(*name, *target, options).unwrap();
        }
        for (name, bytes) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
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
    fn a_chain_of_links_cannot_carry_a_write_outside() {
        // Failed before links were resolved as a whole: `x` was written two levels above
        // the work folder.
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("a/work");
        fs::create_dir_all(&dest).unwrap();
        let err = extract(
            &zip_of(
                &[("code/s/s/l/x", b"pwned")],
                &[("code/s", "."), ("code/s/s/l", "../../..")],
            ),
            &dest,
            "code",
            ExtractLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::UnderLink { .. }), "{err}");
        let err = extract(
            &zip_of(&[], &[("code/s", "."), ("code/d/l", "../s/s/../..")]),
            &dest,
            "code",
            ExtractLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::UnsafeLink { .. }), "{err}");
        let written: Vec<_> = walk(outer.path());
        assert!(
            written.iter().all(|p| !p.ends_with("x")),
            "wrote {written:?}"
        );
    }

    #[test]
    fn no_link_is_made_unless_every_link_is_sound() {
        // `b` is both a link and a folder: as a folder, `a` climbs out. Before, `a` was
        // made first and stayed while `b` failed.
        let dest = tempfile::tempdir().unwrap();
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default();
        zip.add_symlink("code/a", "b/../../..", options).unwrap();
        zip.add_symlink("code/b", "x/y/z", options).unwrap();
        zip.add_directory("code/b/", options).unwrap();
        let bundle = zip.finish().unwrap().into_inner();
        let err = extract(&bundle, dest.path(), "code", ExtractLimits::default()).unwrap_err();
        assert!(matches!(err, ExtractError::UnderLink { .. }), "{err}");
        assert!(fs::symlink_metadata(dest.path().join("code/a")).is_err());
    }

    #[test]
    fn links_are_made_after_the_files_they_point_to() {
        let dest = tempfile::tempdir().unwrap();
        extract(
            &zip_of(
                &[("code/lib/real/tool.sh", b"echo tool")],
                &[
                    ("code/bin/tool", "../lib/current/tool.sh"),
                    ("code/lib/current", "real"),
                ],
            ),
            dest.path(),
            "code",
            ExtractLimits::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read(dest.path().join("code/bin/tool")).unwrap(),
            b"echo tool"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                found.extend(walk(&path));
            }
            found.push(path);
        }
        found
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
        let mut entries = SmallEntries::open(&bundle).unwrap();
        assert_eq!(entries.read("order.json", 100).unwrap(), b"{\"a\":1}");
        assert!(matches!(
            entries.read("order.json", 3),
            Err(ExtractError::TooLarge(3))
        ));
        assert!(matches!(
            entries.read("missing", 100),
            Err(ExtractError::NotAZip(_))
        ));
        assert!(entries.read_if_present("missing", 100).unwrap().is_none());
    }
}
