//! Building an order's bundle (`exec.zip`): its code, its manifest and its encrypted env.
//!
//! Layout: `order.json` (the manifest, no secrets), `env.json.age` (the env as a JSON object,
//! encrypted with age; absent when the order has no variables), `env_vars.env` (variable
//! names only), `secrets.src` (names of variables that came from secret stores), and
//! `code/` (the order's code, permissions kept). Everything here is blocking (zip, age, file
//! IO): callers go through [`crate::blocking::run_blocking`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sluice_contract::manifest::{
    CODE_DIR, ENV_FILE, ENV_NAMES_FILE, MANIFEST_FILE, OrderManifest, SECRET_NAMES_FILE,
};
use sluice_contract::paths::{LinkProblem, LinkTree};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

/// Where an order's code comes from, resolved to local paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeInput {
    /// No code.
    None,
    /// A folder, copied whole.
    Dir(PathBuf),
    /// A zip, whose entries become the code.
    Zip(PathBuf),
    /// A bundle an earlier run stored (`sluice rerun`): the code under its `code/`, taken
    /// as it is, is the code (what was built then runs again).
    Bundle(PathBuf),
}

/// Everything that goes into one bundle.
#[derive(Debug)]
pub struct BundleInput {
    /// The manifest.
    pub manifest: OrderManifest,
    /// The order's variables (encrypted into `env.json.age`).
    pub env: BTreeMap<String, String>,
    /// Names of variables that came from secret stores.
    pub secret_names: Vec<String>,
    /// age recipients the env is encrypted to (`age1...`).
    pub recipients: Vec<String>,
    /// The code.
    pub code: CodeInput,
}

/// An order's age key pair (its `Debug` shows the recipient only).
pub struct OrderKey {
    /// The private key, `AGE-SECRET-KEY-1...`.
    pub secret: String,
    /// The recipient, `age1...`.
    pub recipient: String,
}

impl std::fmt::Debug for OrderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderKey")
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

impl OrderKey {
    /// Generates a key pair (as runs queued before run keys stored one per order).
    #[cfg(test)]
    pub fn generate() -> Self {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        OrderKey {
            secret: identity.to_string().expose_secret().to_owned(),
            recipient: identity.to_public().to_string(),
        }
    }
}

/// Why a bundle could not be built: a recipient the env cannot be encrypted to, age
/// failing, or a path or entry of the order's code that could not be packaged. Every
/// message names the recipient, file, folder or entry (a code zip's entries after the
/// zip's path), and includes its cause, which is also the error's
/// [`source`](std::error::Error::source) where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A recipient the env is to be encrypted to is not an age X25519 recipient
    /// (`age1...`).
    #[error("age recipient {recipient:?}: {reason}")]
    Recipient {
        /// The recipient as given.
        recipient: String,
        /// Why age does not read it.
        reason: &'static str,
    },
    /// age could not encrypt the env (boxed: age's error is large).
    #[error("age encryption: {0}")]
    Encrypt(#[source] Box<age::EncryptError>),
    /// The manifest (`order.json`) or the env could not be written as JSON.
    #[error("{what}: {source}")]
    Json {
        /// `order.json` or `env`.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An entry could not be started in the bundle.
    #[error("{entry}: {source}")]
    AddEntry {
        /// The entry, as named in the bundle (`code/run.sh`, `order.json`).
        entry: String,
        /// The cause.
        #[source]
        source: ZipError,
    },
    /// An entry's bytes could not be written into the bundle.
    #[error("{entry}: {source}")]
    WriteEntry {
        /// The entry, as named in the bundle.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The bundle could not be finished (its central directory written).
    #[error("finishing exec.zip: {0}")]
    Finish(#[source] ZipError),
    /// A folder of the code could not be listed.
    #[error("reading {dir}: {source}")]
    ReadDir {
        /// The folder.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or link of the code could not be read (its metadata, target or bytes).
    #[error("{path}: {source}")]
    Read {
        /// The file or link.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path listed from the code folder is not under it.
    #[error("{path} is outside {root}")]
    Outside {
        /// The path.
        path: PathBuf,
        /// The code folder.
        root: PathBuf,
    },
    /// A path has a component other than a plain name (`..`, `/`).
    #[error("{path}: unexpected path component")]
    UnexpectedComponent {
        /// The path.
        path: PathBuf,
    },
    /// A file name is not UTF-8 (an entry's name in the bundle must be).
    #[error("{path}: file name is not UTF-8")]
    NonUtf8Name {
        /// The file.
        path: PathBuf,
    },
    /// A symbolic link's target is not UTF-8.
    #[error("{path}: link target is not UTF-8")]
    NonUtf8Link {
        /// The link.
        path: PathBuf,
    },
    /// Something of the code lies at or under a symbolic link of it: unpacking would write
    /// it where the link leads.
    #[error("{path}: lies under the link {link}; code may not be placed through links")]
    UnderLink {
        /// The file, folder or link, under the code folder or zip.
        path: PathBuf,
        /// The link at or above it, under the code folder or zip.
        link: PathBuf,
    },
    /// A symbolic link of the code, followed through the code's links, leads out of the
    /// code folder.
    #[error("{link} is a symbolic link to {target}, which leads outside the code folder")]
    LinkEscapes {
        /// The link, under the code folder or zip.
        link: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// The code zip could not be opened.
    #[error("opening {path}: {source}")]
    OpenZip {
        /// The zip.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The code zip is not a zip archive zip can read.
    #[error("{path} is not a readable zip: {source}")]
    NotAZip {
        /// The zip.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ZipError,
    },
    /// An entry of the code zip could not be read.
    #[error("{path}: entry {index}: {source}")]
    ZipEntry {
        /// The zip.
        path: PathBuf,
        /// The entry's index in the zip.
        index: usize,
        /// The cause.
        #[source]
        source: ZipError,
    },
    /// A symbolic link entry's target could not be read from the code zip.
    #[error("{path}: {entry}: {source}")]
    ZipLinkTarget {
        /// The zip.
        path: PathBuf,
        /// The link entry.
        entry: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry's name leads out of the archive (`../x`, `/etc/x`).
    #[error("{path}: entry {entry:?} escapes the archive")]
    ZipEntryEscapes {
        /// The zip.
        path: PathBuf,
        /// The entry's name as stored (`entry N` when it cannot be read).
        entry: String,
    },
    /// An entry of the code zip could not be copied into the bundle.
    #[error("{path}: {entry}: {source}")]
    CopyZipEntry {
        /// The zip.
        path: PathBuf,
        /// The entry's name as stored (`entry N` when it cannot be read).
        entry: String,
        /// The cause.
        #[source]
        source: ZipError,
    },
}

/// Encrypts `plaintext` to every recipient in `recipients` (age X25519).
///
/// # Errors
///
/// [`BundleError::Recipient`] naming the recipient that does not parse, or
/// [`BundleError::Encrypt`] with age's failure.
pub(crate) fn encrypt(plaintext: &[u8], recipients: &[String]) -> Result<Vec<u8>, BundleError> {
    let parsed: Vec<age::x25519::Recipient> = recipients
        .iter()
        .map(|r| {
            r.parse::<age::x25519::Recipient>()
                .map_err(|reason| BundleError::Recipient {
                    recipient: r.clone(),
                    reason,
                })
        })
        .collect::<Result<_, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| BundleError::Encrypt(Box::new(e)))?;
    let io_failed = |e: io::Error| BundleError::Encrypt(Box::new(age::EncryptError::Io(e)));
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor.wrap_output(&mut out).map_err(io_failed)?;
    writer.write_all(plaintext).map_err(io_failed)?;
    writer.finish().map_err(io_failed)?;
    Ok(out)
}

/// Builds the bundle's bytes.
///
/// # Errors
///
/// A [`BundleError`] naming the recipient, path or entry that could not be packaged.
pub fn build(input: &BundleInput) -> Result<Vec<u8>, BundleError> {
    build_bundle(input, true)
}

/// Builds the stripped copy of the bundle (`stripped_copy`), for inspection and audit:
/// everything but the encrypted env (no bundle holds a URL: a worker's come with its
/// dispatch).
///
/// # Errors
///
/// A [`BundleError`] naming the path or entry that could not be packaged.
pub fn build_stripped(input: &BundleInput) -> Result<Vec<u8>, BundleError> {
    build_bundle(input, false)
}

/// The sha256 (hex) and size of the regular file `path` (relative to the code folder) in
/// the built `bundle`: what a worker reads as a WebAssembly order's module. `None` when the
/// bundle holds no such file (a link, a folder, a path naming a parent, nothing).
pub fn code_file_sha256(bundle: &[u8], path: &str) -> Option<(String, u64)> {
    use sha2::{Digest, Sha256};
    read_code_file(bundle, path, |entry| {
        let mut hasher = Sha256::new();
        let size = io::copy(entry, &mut hasher).ok()?;
        Some((data_encoding::HEXLOWER.encode(&hasher.finalize()), size))
    })
}

/// The bytes of the regular file `path` in the built `bundle`, as [`code_file_sha256`]
/// finds it.
pub fn code_file(bundle: &[u8], path: &str) -> Option<Vec<u8>> {
    read_code_file(bundle, path, |entry| {
        let mut file = Vec::new();
        entry.read_to_end(&mut file).ok()?;
        Some(file)
    })
}

/// What `read` makes of the regular file `path` (relative to the code folder) in `bundle`.
fn read_code_file<T>(
    bundle: &[u8],
    path: &str,
    read: impl FnOnce(&mut dyn Read) -> Option<T>,
) -> Option<T> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let name = format!("{CODE_DIR}/{}", parts.join("/"));
    let mut archive = ZipArchive::new(Cursor::new(bundle)).ok()?;
    let mut entry = archive.by_name(&name).ok()?;
    if !entry.is_file() || entry.is_symlink() {
        return None;
    }
    read(&mut entry)
}

fn build_bundle(input: &BundleInput, whole: bool) -> Result<Vec<u8>, BundleError> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let file = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    // The bundle's own entries are stored as they are: a few hundred bytes each (the env is
    // ciphertext, which does not compress), where starting a deflate stream for each cost
    // more than the rest of packaging an order without code.
    let private = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .unix_permissions(0o600);

    let manifest =
        serde_json::to_vec_pretty(&input.manifest).map_err(|source| BundleError::Json {
            what: "order.json",
            source,
        })?;
    add_bytes(&mut zip, MANIFEST_FILE, &manifest, private)?;
    // An order without variables has no env to encrypt (nor a key to make for it).
    if whole && !input.env.is_empty() {
        let env_json = serde_json::to_vec(&input.env).map_err(|source| BundleError::Json {
            what: "env",
            source,
        })?;
        add_bytes(
            &mut zip,
            ENV_FILE,
            &encrypt(&env_json, &input.recipients)?,
            private,
        )?;
    }
    let names: String = input.env.keys().map(|k| format!("{k}\n")).collect();
    add_bytes(&mut zip, ENV_NAMES_FILE, names.as_bytes(), private)?;
    let secret_names: String = input
        .secret_names
        .iter()
        .map(|k| format!("{k}\n"))
        .collect();
    add_bytes(
        &mut zip,
        SECRET_NAMES_FILE,
        secret_names.as_bytes(),
        private,
    )?;

    zip.add_directory(format!("{CODE_DIR}/"), file.unix_permissions(0o755))
        .map_err(|source| BundleError::AddEntry {
            entry: format!("{CODE_DIR}/"),
            source,
        })?;
    match &input.code {
        CodeInput::None => {}
        CodeInput::Dir(dir) => {
            let mut links = LinkTree::default();
            add_dir(&mut zip, dir, dir, file, &mut links)?;
            check_links(&links, [], dir)?;
        }
        CodeInput::Zip(path) => add_zip(&mut zip, path, Path::new(""))?,
        CodeInput::Bundle(path) => add_zip(&mut zip, path, Path::new(CODE_DIR))?,
    }
    let cursor = zip.finish().map_err(BundleError::Finish)?;
    Ok(cursor.into_inner())
}

fn add_bytes(
    zip: &mut ZipWriter<Cursor<Vec<u8>>>,
    name: &str,
    bytes: &[u8],
    options: SimpleFileOptions,
) -> Result<(), BundleError> {
    zip.start_file(name, options)
        .map_err(|source| BundleError::AddEntry {
            entry: name.to_owned(),
            source,
        })?;
    zip.write_all(bytes)
        .map_err(|source| BundleError::WriteEntry {
            entry: name.to_owned(),
            source,
        })
}

/// The `/`-joined name of `path` relative to `root`, under `code/`.
fn entry_name(root: &Path, path: &Path) -> Result<String, BundleError> {
    let relative = path.strip_prefix(root).map_err(|_| BundleError::Outside {
        path: path.to_owned(),
        root: root.to_owned(),
    })?;
    let mut name = String::from(CODE_DIR);
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return Err(BundleError::UnexpectedComponent {
                path: path.to_owned(),
            });
        };
        let part = part.to_str().ok_or_else(|| BundleError::NonUtf8Name {
            path: path.to_owned(),
        })?;
        name.push('/');
        name.push_str(part);
    }
    Ok(name)
}

fn add_dir(
    zip: &mut ZipWriter<Cursor<Vec<u8>>>,
    root: &Path,
    dir: &Path,
    options: SimpleFileOptions,
    links: &mut LinkTree,
) -> Result<(), BundleError> {
    let unlisted = |source| BundleError::ReadDir {
        dir: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(unlisted)?
        .collect::<Result<_, _>>()
        .map_err(unlisted)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry_name(root, &path)?;
        let unread = |source| BundleError::Read {
            path: path.clone(),
            source,
        };
        let not_added = |source| BundleError::AddEntry {
            entry: name.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&path).map_err(unread)?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(unread)?;
            if let Ok(relative) = path.strip_prefix(root) {
                links.insert(relative, &target);
            }
            let target = target
                .to_str()
                .ok_or_else(|| BundleError::NonUtf8Link { path: path.clone() })?;
            zip.add_symlink(name.as_str(), target, options)
                .map_err(not_added)?;
        } else if meta.is_dir() {
            zip.add_directory(format!("{name}/"), options.unix_permissions(mode))
                .map_err(not_added)?;
            add_dir(zip, root, &path, options, links)?;
        } else if meta.is_file() {
            zip.start_file(
                name.as_str(),
                options
                    .unix_permissions(mode)
                    .large_file(meta.len() >= u32::MAX as u64),
            )
            .map_err(not_added)?;
            let mut source = fs::File::open(&path).map_err(unread)?;
            std::io::copy(&mut source, zip).map_err(unread)?;
        }
        // Sockets, fifos and devices are not code: skipped.
    }
    Ok(())
}

/// Refuses a tree breaking the link rule the worker's extraction applies ([`LinkTree::check`]:
/// nothing at or under a link, every link ending inside the code folder), said with the
/// path under `origin` a user can fix.
fn check_links<'a>(
    links: &LinkTree,
    entries: impl IntoIterator<Item = &'a Path>,
    origin: &Path,
) -> Result<(), BundleError> {
    links.check(entries).map_err(|problem| match problem {
        LinkProblem::UnderLink { path, link } => BundleError::UnderLink {
            path: origin.join(path),
            link: origin.join(link),
        },
        LinkProblem::Escapes { link, target } => BundleError::LinkEscapes {
            link: origin.join(link),
            target,
        },
    })
}

/// Adds the entries of the zip at `path` under its folder `within` (`""`: all of them) as
/// the code, checked as a worker will unpack them.
fn add_zip(
    zip: &mut ZipWriter<Cursor<Vec<u8>>>,
    path: &Path,
    within: &Path,
) -> Result<(), BundleError> {
    // An entry's path under `within`; `None` for `within` itself and for what is not under
    // it.
    let code_path = |safe: PathBuf| {
        let relative = safe.strip_prefix(within).ok()?;
        (!relative.as_os_str().is_empty()).then(|| relative.to_owned())
    };
    let file = fs::File::open(path).map_err(|source| BundleError::OpenZip {
        path: path.to_owned(),
        source,
    })?;
    let mut archive = ZipArchive::new(file).map_err(|source| BundleError::NotAZip {
        path: path.to_owned(),
        source,
    })?;
    let unreadable = |index: usize| {
        move |source| BundleError::ZipEntry {
            path: path.to_owned(),
            index,
            source,
        }
    };
    let mut links = LinkTree::default();
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(unreadable(index))?;
        if let Some(safe) = entry.enclosed_name().and_then(code_path) {
            if entry.is_symlink() {
                let mut target = String::new();
                if let Err(source) = entry.by_ref().take(4096).read_to_string(&mut target) {
                    return Err(BundleError::ZipLinkTarget {
                        path: path.to_owned(),
                        entry: safe,
                        source,
                    });
                }
                links.insert(safe, target);
            } else {
                entries.push(safe);
            }
        }
    }
    check_links(&links, entries.iter().map(PathBuf::as_path), path)?;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(unreadable(index))?;
        let raw_name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("entry {index}"));
        let Some(safe) = entry.enclosed_name() else {
            return Err(BundleError::ZipEntryEscapes {
                path: path.to_owned(),
                entry: raw_name,
            });
        };
        let Some(safe) = code_path(safe) else {
            continue;
        };
        let name = entry_name(Path::new(""), &safe)?;
        let name = if entry.is_dir() {
            format!("{name}/")
        } else {
            name
        };
        zip.raw_copy_file_rename(entry, name)
            .map_err(|source| BundleError::CopyZipEntry {
                path: path.to_owned(),
                entry: raw_name,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_entry(bundle: &[u8], name: &str) -> zip::result::ZipResult<Vec<u8>> {
        let mut archive = ZipArchive::new(Cursor::new(bundle))?;
        let mut entry = archive.by_name(name)?;
        let mut out = Vec::new();
        entry.read_to_end(&mut out)?;
        Ok(out)
    }
    use sluice_contract::manifest::Task;
    use sluice_contract::{OrderNum, RunId, TraceId};

    fn manifest() -> OrderManifest {
        OrderManifest {
            schema_version: "v1".into(),
            run_id: RunId::generate(),
            trace_id: TraceId::generate(),
            flow_id: "u:t-exec".into(),
            order_num: OrderNum::from_index(0),
            order_name: "a".into(),
            timeout: 5,
            task: Task::Cmds(vec!["true".into()]),
            log_key: "tmp/logs/x".into(),
            sandbox: None,
        }
    }

    #[test]
    fn env_is_encrypted_and_only_names_are_plain() {
        let key = OrderKey::generate();
        let input = BundleInput {
            manifest: manifest(),
            env: BTreeMap::from([("API_TOKEN".to_owned(), "hunter2-very-secret".to_owned())]),
            secret_names: vec![],
            recipients: vec![key.recipient.clone()],
            code: CodeInput::None,
        };
        let bundle = build(&input).unwrap();
        let haystack = String::from_utf8_lossy(&bundle);
        assert!(!haystack.contains("hunter2-very-secret"));
        assert_eq!(read_entry(&bundle, ENV_NAMES_FILE).unwrap(), b"API_TOKEN\n");
        let encrypted = read_entry(&bundle, ENV_FILE).unwrap();
        let identity: age::x25519::Identity = key.secret.parse().unwrap();
        let decryptor = age::Decryptor::new(&encrypted[..]).unwrap();
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap();
        let mut plain = String::new();
        reader.read_to_string(&mut plain).unwrap();
        assert_eq!(plain, r#"{"API_TOKEN":"hunter2-very-secret"}"#);
    }

    /// Nothing to encrypt, no key to make: an order without variables has no
    /// `env.json.age`, and needs no recipient.
    #[test]
    fn an_order_without_variables_has_no_env_file() {
        let input = BundleInput {
            manifest: manifest(),
            env: BTreeMap::new(),
            secret_names: vec![],
            recipients: vec![],
            code: CodeInput::None,
        };
        let bundle = build(&input).unwrap();
        assert!(matches!(
            read_entry(&bundle, ENV_FILE),
            Err(zip::result::ZipError::FileNotFound)
        ));
        assert_eq!(read_entry(&bundle, ENV_NAMES_FILE).unwrap(), b"");
    }

    /// A code folder: an executable `run.sh`, and `sub/link` to it.
    fn code_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("../run.sh", dir.path().join("sub/link")).unwrap();
        dir
    }

    #[test]
    fn code_dir_keeps_modes_and_rejects_escaping_links() {
        let dir = code_tree();
        let key = OrderKey::generate();
        let mut input = BundleInput {
            manifest: manifest(),
            env: BTreeMap::new(),
            secret_names: vec![],
            recipients: vec![key.recipient],
            code: CodeInput::Dir(dir.path().to_owned()),
        };
        let bundle = build(&input).unwrap();
        let mut archive = ZipArchive::new(Cursor::new(&bundle)).unwrap();
        assert_eq!(
            archive.by_name("code/run.sh").unwrap().unix_mode().unwrap() & 0o777,
            0o755
        );
        assert!(archive.by_name("code/sub/link").unwrap().is_symlink());

        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).unwrap();
        input.code = CodeInput::Dir(dir.path().to_owned());
        let err = build(&input).unwrap_err().to_string();
        assert!(err.contains("outside the code folder"), "{err}");
    }

    /// A rerun's bundle takes the code of the bundle stored before, modes and links as
    /// they were, and none of its other entries (its manifest and env are made anew).
    #[test]
    fn a_stored_bundles_code_is_the_code_again() {
        let dir = code_tree();
        let key = OrderKey::generate();
        let first = build(&BundleInput {
            manifest: manifest(),
            env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            secret_names: vec![],
            recipients: vec![key.recipient],
            code: CodeInput::Dir(dir.path().to_owned()),
        })
        .unwrap();
        let stored = dir.path().join("exec.zip");
        fs::write(&stored, &first).unwrap();

        let again = build(&BundleInput {
            manifest: manifest(),
            env: BTreeMap::new(),
            secret_names: vec![],
            recipients: vec![],
            code: CodeInput::Bundle(stored),
        })
        .unwrap();
        let mut archive = ZipArchive::new(Cursor::new(&again)).unwrap();
        let mut names: Vec<String> = (archive.file_names())
            .map(|name| name.unwrap().into_owned())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "code/",
                "code/run.sh",
                "code/sub/",
                "code/sub/link",
                ENV_NAMES_FILE,
                MANIFEST_FILE,
                SECRET_NAMES_FILE
            ]
        );
        assert_eq!(
            archive.by_name("code/run.sh").unwrap().unix_mode().unwrap() & 0o777,
            0o755
        );
        assert!(archive.by_name("code/sub/link").unwrap().is_symlink());
        assert_eq!(
            read_entry(&again, "code/run.sh").unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
    }

    #[test]
    fn a_module_is_the_file_the_worker_reads() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("bin/m.wasm"), b"\0asm module").unwrap();
        std::os::unix::fs::symlink("m.wasm", dir.path().join("bin/link.wasm")).unwrap();
        let input = BundleInput {
            manifest: manifest(),
            env: BTreeMap::new(),
            secret_names: vec![],
            recipients: vec![OrderKey::generate().recipient],
            code: CodeInput::Dir(dir.path().to_owned()),
        };
        let bundle = build(&input).unwrap();
        let expected = data_encoding::HEXLOWER.encode(&Sha256::digest(b"\0asm module"));
        for path in ["bin/m.wasm", "./bin/m.wasm", "bin/./m.wasm"] {
            assert_eq!(
                code_file(&bundle, path).as_deref(),
                Some(&b"\0asm module"[..])
            );
            assert_eq!(
                code_file_sha256(&bundle, path),
                Some((expected.clone(), 11))
            );
        }
        // Nothing the worker would not read as that very file.
        for path in [
            "bin/link.wasm",
            "bin",
            "missing.wasm",
            "bin/../bin/m.wasm",
            "/bin/m.wasm",
        ] {
            assert_eq!(code_file(&bundle, path), None, "{path}");
            assert_eq!(code_file_sha256(&bundle, path), None, "{path}");
        }
    }

    #[test]
    fn a_chain_of_links_out_of_the_code_folder_is_refused() {
        // Accepted before links were followed through each other: `s` is the folder
        // itself, so `d/l` climbs one level out of it.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("s")).unwrap();
        std::os::unix::fs::symlink("../s/s/../..", dir.path().join("d/l")).unwrap();
        let key = OrderKey::generate();
        let input = BundleInput {
            manifest: manifest(),
            env: BTreeMap::new(),
            secret_names: vec![],
            recipients: vec![key.recipient],
            code: CodeInput::Dir(dir.path().to_owned()),
        };
        let err = build(&input).unwrap_err().to_string();
        assert!(err.contains("d/l is a symbolic link"), "{err}");
        assert!(err.contains("outside the code folder"), "{err}");
    }
}
