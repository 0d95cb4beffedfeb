//! The workspace's other binaries, which some tests run: cargo builds a test's own crate's
//! binaries for it, not another crate's, so a binary beside the test may be missing or
//! older than its sources; the test then stops and says how to build it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The binary `name` beside this test executable, checked to exist and to be newer than
/// every `.rs` and `Cargo.toml` at or under `sources` (paths from the repository's root).
/// `build` says how to build it.
pub fn built_binary(name: &str, sources: &[&str], build: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "no {name} binary at {}: run {build} first",
        binary.display()
    );
    let built = modified(&binary);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    for source in sources {
        if let Some((_, newer)) = newest_source(&root.join(source)).filter(|(at, _)| *at > built) {
            panic!(
                "the {name} binary at {} is older than {}: run {build} first",
                binary.display(),
                newer.display()
            );
        }
    }
    binary
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The most recently changed `.rs` or `Cargo.toml` at or under `path`, and when.
fn newest_source(path: &Path) -> Option<(SystemTime, PathBuf)> {
    if path.is_file() {
        return Some((modified(path), path.to_owned()));
    }
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs")
            || path.file_name().is_some_and(|n| n == "Cargo.toml")
        {
            Some((modified(&path), path))
        } else {
            None
        };
        if let Some(candidate) = candidate
            && newest.as_ref().is_none_or(|n| candidate.0 > n.0)
        {
            newest = Some(candidate);
        }
    }
    newest
}
