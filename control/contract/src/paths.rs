//! Path rules shared by whoever packs a bundle and whoever unpacks or runs it: what stays
//! inside a root folder. The packager (init_job) and the extractor (worker) apply the same
//! rule, so a bundle that one accepts the other does too.

use std::path::{Component, Path};

/// Whether `relative` (a `/`-separated path written in a job) names something inside its
/// root: not empty, not absolute, no `..` component, no NUL.
pub fn is_inside(relative: &str) -> bool {
    !relative.is_empty()
        && !relative.starts_with('/')
        && !relative.contains('\0')
        && relative.split('/').all(|part| part != "..")
}

/// Whether a symbolic link at `link` (relative to the root) pointing to `target` resolves
/// inside the root. Absolute targets never do; `..` may climb only as far as the root.
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() || target.is_absolute() {
        return false;
    }
    let parent = link.parent().unwrap_or(Path::new(""));
    let mut depth: usize = 0;
    for component in parent.components().chain(target.components()) {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside_unless_they_climb_out() {
        assert!(is_inside("bin/tool.wasm"));
        assert!(!is_inside("../tool.wasm"));
        assert!(!is_inside("a/../../b"));
        assert!(!is_inside("/etc/passwd"));
        assert!(!is_inside(""));
    }

    #[test]
    fn links_may_climb_only_to_the_root() {
        assert!(link_stays_inside(Path::new("a/l"), Path::new("../b")));
        assert!(link_stays_inside(
            Path::new("a/b/l"),
            Path::new("./../../c")
        ));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../b")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/etc")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("")));
    }
}
