//! Path rules shared by whoever packs a bundle and whoever unpacks or runs it: what stays
//! inside a root folder. The packager (init_job) and the extractor (worker) apply the same
//! rule, so a bundle that one accepts the other does too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Whether `relative` (a `/`-separated path written in a job) names something inside its
/// root: not empty, not absolute, no `..` component, no NUL.
pub fn is_inside(relative: &str) -> bool {
    !relative.is_empty()
        && !relative.starts_with('/')
        && !relative.contains('\0')
        && relative.split('/').all(|part| part != "..")
}

/// How many links one resolution may pass through, as Linux allows (`ELOOP` beyond).
const MAX_LINK_HOPS: u32 = 40;
/// How many path components one resolution may walk, links followed included: a crafted
/// tree of deep targets must not cost more than this per link.
const MAX_STEPS: u32 = 4096;

/// What one resolution has used.
#[derive(Default)]
struct Walked {
    hops: u32,
    steps: u32,
}

/// What breaks a [`LinkTree`]'s rule (paths relative to its root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkProblem {
    /// `path` (an entry, or another link) is at or under the link `link`: writing it would
    /// go where the link leads.
    UnderLink {
        /// The entry or link.
        path: PathBuf,
        /// The link at or above it.
        link: PathBuf,
    },
    /// The link `link`, followed through the tree's links, leaves the root.
    Escapes {
        /// The link.
        link: PathBuf,
        /// Its target.
        target: PathBuf,
    },
}

/// The symbolic links of a tree being packed or unpacked — each link's path relative to the
/// root, and its target — resolved the way the kernel resolves them.
///
/// Checking each link on its own text is not enough: with `s -> .`, the link
/// `d/l -> ../s/s/../..` looks as if it stays inside but climbs out, and an entry written
/// under `s/s/…` goes wherever the links lead. So a tree's rule ([`LinkTree::check`]) is: no
/// entry sits at or under a link, and every link, followed through every other link of the
/// tree, ends inside the root.
#[derive(Debug, Default, Clone)]
pub struct LinkTree {
    links: HashMap<PathBuf, PathBuf>,
}

impl LinkTree {
    /// Records the link at `link` (relative to the root) pointing to `target`.
    pub fn insert(&mut self, link: impl Into<PathBuf>, target: impl Into<PathBuf>) {
        self.links.insert(link.into(), target.into());
    }

    /// The links, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Path)> {
        self.links.iter().map(|(l, t)| (l.as_path(), t.as_path()))
    }

    /// The outermost of `path`'s parent folders that is a link, if any: writing `path` would
    /// go through it.
    pub fn link_above<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.ancestors()
            .skip(1)
            .filter(|a| self.links.contains_key(*a))
            .last()
    }

    /// Checks the tree's rule over its links and the `entries` (files and folders) placed
    /// beside them: no entry at or under a link, no link under another, every link ending
    /// inside the root. Links are checked in order of their paths, so the same tree always
    /// reports the same problem.
    ///
    /// # Errors
    ///
    /// The first [`LinkProblem`] found.
    pub fn check<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a Path>,
    ) -> Result<(), LinkProblem> {
        for entry in entries {
            let link = if self.links.contains_key(entry) {
                Some(entry)
            } else {
                self.link_above(entry)
            };
            if let Some(link) = link {
                return Err(LinkProblem::UnderLink {
                    path: entry.to_owned(),
                    link: link.to_owned(),
                });
            }
        }
        let mut ordered: Vec<_> = self.iter().collect();
        ordered.sort();
        for (link, target) in ordered {
            if let Some(above) = self.link_above(link) {
                return Err(LinkProblem::UnderLink {
                    path: link.to_owned(),
                    link: above.to_owned(),
                });
            }
            if !self.resolves_inside(link) {
                return Err(LinkProblem::Escapes {
                    link: link.to_owned(),
                    target: target.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether the link at `link`, followed through every link of the tree, ends inside the
    /// root. Absolute and empty targets never do; `..` may climb only as far as the root; a
    /// chain longer than the kernel follows, or a walk longer than 4096 components, does not
    /// resolve.
    pub fn resolves_inside(&self, link: &Path) -> bool {
        let Some(target) = self.links.get(link) else {
            return false;
        };
        let parent: Vec<OsString> = match link.parent() {
            Some(parent) => parent
                .components()
                .map(|c| c.as_os_str().to_owned())
                .collect(),
            None => Vec::new(),
        };
        self.resolve(parent, target, &mut Walked::default())
            .is_some()
    }

    /// Walks `target` from the folder `at` (root-relative components), following links;
    /// the folder reached, or `None` when the walk leaves the root.
    fn resolve(
        &self,
        mut at: Vec<OsString>,
        target: &Path,
        walked: &mut Walked,
    ) -> Option<Vec<OsString>> {
        if target.as_os_str().is_empty() {
            return None;
        }
        for component in target.components() {
            walked.steps += 1;
            if walked.steps > MAX_STEPS {
                return None;
            }
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    at.pop()?;
                }
                Component::Normal(name) => {
                    at.push(name.to_owned());
                    let here: PathBuf = at.iter().collect();
                    if let Some(next) = self.links.get(&here) {
                        walked.hops += 1;
                        if walked.hops > MAX_LINK_HOPS {
                            return None;
                        }
                        at.pop();
                        at = self.resolve(at, next, walked)?;
                    }
                }
                Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        Some(at)
    }
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

    fn tree(links: &[(&str, &str)]) -> LinkTree {
        let mut tree = LinkTree::default();
        for (link, target) in links {
            tree.insert(*link, *target);
        }
        tree
    }

    #[test]
    fn links_may_climb_only_to_the_root() {
        let inside =
            |link: &str, target: &str| tree(&[(link, target)]).resolves_inside(Path::new(link));
        assert!(inside("a/l", "../b"));
        assert!(inside("a/b/l", "./../../c"));
        assert!(!inside("a/l", "../../b"));
        assert!(!inside("l", "/etc"));
        assert!(!inside("l", ""));
    }

    #[test]
    fn chains_of_links_are_followed_as_the_kernel_does() {
        // `s` is the root itself, so `../s/s/../..` from `d` climbs one level out.
        let chain = tree(&[("s", "."), ("d/l", "../s/s/../..")]);
        assert!(chain.resolves_inside(Path::new("s")));
        assert!(!chain.resolves_inside(Path::new("d/l")));
        // `..` after a link goes to the parent of where the link leads, not back.
        let deep = tree(&[("up", "a/b/c"), ("l", "up/../../..")]);
        assert!(deep.resolves_inside(Path::new("l")));
        let out = tree(&[("up", "a/b"), ("l", "up/../../..")]);
        assert!(!out.resolves_inside(Path::new("l")));
        // Links to links that stay inside are fine; loops do not resolve.
        assert!(tree(&[("a", "b"), ("b", "c")]).resolves_inside(Path::new("a")));
        assert!(!tree(&[("a", "b"), ("b", "a")]).resolves_inside(Path::new("a")));
    }

    #[test]
    fn an_entry_under_a_link_is_found() {
        let links = tree(&[("s", "."), ("x/y", "z")]);
        assert_eq!(
            links.link_above(Path::new("s/s/s/l/f")),
            Some(Path::new("s"))
        );
        assert_eq!(links.link_above(Path::new("x/y/f")), Some(Path::new("x/y")));
        assert_eq!(links.link_above(Path::new("x/y")), None);
        assert_eq!(links.link_above(Path::new("x/f")), None);
        // An entry named like a link is at it.
        assert_eq!(
            links.check([Path::new("x/y")]),
            Err(LinkProblem::UnderLink {
                path: "x/y".into(),
                link: "x/y".into()
            })
        );
        assert_eq!(links.check([Path::new("x/f")]), Ok(()));
    }
}
