//! Building an order's bundle (`exec.zip`): its code, its manifest and its encrypted env.
//!
//! Layout: `order.json` (the manifest, no secrets), `env.json.age` (the env as a JSON object,
//! encrypted with age), `env_vars.env` (variable names only), `secrets.src` (names of
//! variables that came from secret stores), and `code/` (the order's code, permissions
//! kept). Everything here is blocking (zip, age, file IO): callers go through
//! [`crate::blocking::run_blocking`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use age::secrecy::ExposeSecret;
use sluice_contract::manifest::{
    CODE_DIR, ENV_FILE, ENV_NAMES_FILE, MANIFEST_FILE, OrderManifest, SECRET_NAMES_FILE,
};
use sluice_contract::paths::{LinkProblem, LinkTree};
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

/// A freshly generated per-order age key pair.
#[derive(Debug)]
pub struct OrderKey {
    /// The private key, `AGE-SECRET-KEY-1...`.
    pub secret: String,
    /// The recipient, `age1...`.
    pub recipient: String,
}

impl OrderKey {
    /// Generates a key pair.
    pub fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        OrderKey {
            secret: identity.to_string().expose_secret().to_owned(),
            recipient: identity.to_public().to_string(),
        }
    }
}

/// Encrypts `plaintext` to every recipient in `recipients` (age X25519).
///
/// # Errors
///
/// A message naming the recipient that does not parse, or the age failure.
fn encrypt(plaintext: &[u8], recipients: &[String]) -> Result<Vec<u8>, String> {
    let parsed: Vec<age::x25519::Recipient> = recipients
        .iter()
        .map(|r| r.parse().map_err(|e| format!("age recipient {r:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| format!("age encryption: {e}"))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| format!("age encryption: {e}"))?;
    writer
        .write_all(plaintext)
        .map_err(|e| format!("age encryption: {e}"))?;
    writer
        .finish()
        .map_err(|e| format!("age encryption: {e}"))?;
    Ok(out)
}

/// Builds the bundle's bytes.
///
/// # Errors
///
/// A message naming the path or entry that could not be packaged.
pub fn build(input: &BundleInput) -> Result<Vec<u8>, String> {
    build_bundle(input, true)
}

/// Builds the stripped copy of the bundle (`stripped_copy`), for inspection and audit:
/// everything but the encrypted env (no bundle holds a URL: a worker's come with its
/// dispatch).
///
/// # Errors
///
/// A message naming the path or entry that could not be packaged.
pub fn build_stripped(input: &BundleInput) -> Result<Vec<u8>, String> {
    build_bundle(input, false)
}

fn build_bundle(input: &BundleInput, whole: bool) -> Result<Vec<u8>, String> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let file = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let private = file.unix_permissions(0o600);

    let manifest =
        serde_json::to_vec_pretty(&input.manifest).map_err(|e| format!("order.json: {e}"))?;
    add_bytes(&mut zip, MANIFEST_FILE, &manifest, private)?;
    if whole {
        let env_json = serde_json::to_vec(&input.env).map_err(|e| format!("env: {e}"))?;
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
        .map_err(|e| format!("{CODE_DIR}/: {e}"))?;
    match &input.code {
        CodeInput::None => {}
        CodeInput::Dir(dir) => {
            let mut links = LinkTree::default();
            add_dir(&mut zip, dir, dir, file, &mut links)?;
            check_links(&links, [], dir)?;
        }
        CodeInput::Zip(path) => add_zip(&mut zip, path)?,
    }
    let cursor = zip
        .finish()
        .map_err(|e| format!("finishing exec.zip: {e}"))?;
    Ok(cursor.into_inner())
}

fn add_bytes(
    zip: &mut ZipWriter<Cursor<Vec<u8>>>,
    name: &str,
    bytes: &[u8],
    options: SimpleFileOptions,
) -> Result<(), String> {
    zip.start_file(name, options)
        .map_err(|e| format!("{name}: {e}"))?;
    zip.write_all(bytes).map_err(|e| format!("{name}: {e}"))
}

/// The `/`-joined name of `path` relative to `root`, under `code/`.
fn entry_name(root: &Path, path: &Path) -> Result<String, String> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?;
    let mut name = String::from(CODE_DIR);
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return Err(format!("{}: unexpected path component", path.display()));
        };
        let part = part
            .to_str()
            .ok_or_else(|| format!("{}: file name is not UTF-8", path.display()))?;
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
) -> Result<(), String> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading {}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry_name(root, &path)?;
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Ok(relative) = path.strip_prefix(root) {
                links.insert(relative, &target);
            }
            let target = target
                .to_str()
                .ok_or_else(|| format!("{}: link target is not UTF-8", path.display()))?;
            zip.add_symlink(name.as_str(), target, options)
                .map_err(|e| format!("{name}: {e}"))?;
        } else if meta.is_dir() {
            zip.add_directory(format!("{name}/"), options.unix_permissions(mode))
                .map_err(|e| format!("{name}: {e}"))?;
            add_dir(zip, root, &path, options, links)?;
        } else if meta.is_file() {
            zip.start_file(
                name.as_str(),
                options
                    .unix_permissions(mode)
                    .large_file(meta.len() >= u32::MAX as u64),
            )
            .map_err(|e| format!("{name}: {e}"))?;
            let mut source =
                fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            std::io::copy(&mut source, zip).map_err(|e| format!("{}: {e}", path.display()))?;
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
) -> Result<(), String> {
    links.check(entries).map_err(|problem| match problem {
        LinkProblem::UnderLink { path, link } => format!(
            "{}: lies under the link {}; code may not be placed through links",
            origin.join(path).display(),
            origin.join(link).display()
        ),
        LinkProblem::Escapes { link, target } => format!(
            "{} is a symbolic link to {}, which leads outside the code folder",
            origin.join(link).display(),
            target.display()
        ),
    })
}

fn add_zip(zip: &mut ZipWriter<Cursor<Vec<u8>>>, path: &Path) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut archive = ZipArchive::new(file)
        .map_err(|e| format!("{} is not a readable zip: {e}", path.display()))?;
    let mut links = LinkTree::default();
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| format!("{}: entry {index}: {e}", path.display()))?;
        if let Some(safe) = entry.enclosed_name() {
            if entry.is_symlink() {
                let mut target = String::new();
                entry
                    .by_ref()
                    .take(4096)
                    .read_to_string(&mut target)
                    .map_err(|e| format!("{}: {}: {e}", path.display(), safe.display()))?;
                links.insert(safe, target);
            } else {
                entries.push(safe);
            }
        }
    }
    check_links(&links, entries.iter().map(PathBuf::as_path), path)?;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| format!("{}: entry {index}: {e}", path.display()))?;
        let raw_name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("entry {index}"));
        let Some(safe) = entry.enclosed_name() else {
            return Err(format!(
                "{}: entry {raw_name:?} escapes the archive",
                path.display()
            ));
        };
        let name = entry_name(Path::new(""), &safe)?;
        let name = if entry.is_dir() {
            format!("{name}/")
        } else {
            name
        };
        zip.raw_copy_file_rename(entry, name)
            .map_err(|e| format!("{}: {raw_name}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_entry(bundle: &[u8], name: &str) -> Result<Vec<u8>, String> {
        let mut archive =
            ZipArchive::new(Cursor::new(bundle)).map_err(|e| format!("bundle: {e}"))?;
        let mut entry = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        let mut out = Vec::new();
        entry
            .read_to_end(&mut out)
            .map_err(|e| format!("{name}: {e}"))?;
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

    #[test]
    fn code_dir_keeps_modes_and_rejects_escaping_links() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("../run.sh", dir.path().join("sub/link")).unwrap();
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
        let err = build(&input).unwrap_err();
        assert!(err.contains("outside the code folder"), "{err}");
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
        let err = build(&input).unwrap_err();
        assert!(err.contains("d/l is a symbolic link"), "{err}");
        assert!(err.contains("outside the code folder"), "{err}");
    }
}
