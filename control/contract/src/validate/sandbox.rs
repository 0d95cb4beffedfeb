//! The rules on a shell order's `sandbox` grants.
//!
//! A grant widens what an order sees, so each is said plainly before it is honoured: a path
//! is absolute or under the user's home (`~/…`), without `.` or `..` steps (what it names
//! is what it says), listed once, and not the whole filesystem (`--sandbox off` says that).
//! A WebAssembly order has its own grants (`wasm.dirs`, `wasm.env`): it may not have these.

use super::{OrderCtx, ValidationError};
use crate::job::{MAX_SANDBOX_PATHS, SandboxSpec};
use crate::manifest::Task;

/// Longest path a grant may name, in bytes (Linux's `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;

/// Checks an order's `sandbox`; returns it with its paths normalised (no trailing `/`).
pub(super) fn validate_sandbox(
    ctx: &OrderCtx,
    task: &Task,
    spec: &SandboxSpec,
) -> Result<SandboxSpec, ValidationError> {
    if matches!(task, Task::Wasm(_)) {
        return Err(ctx.error(
            "sandbox",
            "is for shell orders: a WebAssembly order sees only its wasm.dirs and wasm.env",
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut list = |field: &str, paths: &[String]| -> Result<Vec<String>, ValidationError> {
        if paths.len() > MAX_SANDBOX_PATHS {
            return Err(ctx.error(
                &format!("sandbox.{field}"),
                format!("lists {} paths; at most {MAX_SANDBOX_PATHS}", paths.len()),
            ));
        }
        let mut checked = Vec::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            let field = format!("sandbox.{field}[{i}]");
            let path = grant_path(path).map_err(|message| ctx.error(&field, message))?;
            if seen.contains(&path) {
                return Err(ctx.error(&field, format!("{path} is granted twice")));
            }
            seen.push(path.clone());
            checked.push(path);
        }
        Ok(checked)
    };
    let write = list("write", &spec.write)?;
    let read = list("read", &spec.read)?;
    Ok(SandboxSpec {
        network: spec.network,
        read,
        write,
    })
}

/// `path` as a grant names it, normalised; or why it cannot be granted.
fn grant_path(path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err("contains a NUL byte".to_owned());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("is longer than {MAX_PATH_BYTES} bytes"));
    }
    let rest = if path == "~" {
        ""
    } else if let Some(rest) = path.strip_prefix("~/") {
        rest
    } else if let Some(rest) = path.strip_prefix('/') {
        rest
    } else {
        return Err(format!(
            "{path:?} must be absolute (/…) or in your home (~/…)"
        ));
    };
    let steps: Vec<&str> = rest.split('/').filter(|step| !step.is_empty()).collect();
    if steps.iter().any(|step| matches!(*step, "." | "..")) {
        return Err(format!("{path:?} must not hold . or .. steps"));
    }
    let home = path.starts_with('~');
    if !home && steps.is_empty() {
        return Err("/ grants the whole filesystem: run with --sandbox off instead".to_owned());
    }
    if !home && matches!(steps[0], "proc" | "sys" | "dev") {
        return Err(format!(
            "{path:?} is the kernel's: /proc, /sys and /dev are the sandbox's own, never granted"
        ));
    }
    let root = if home { "~" } else { "" };
    if steps.is_empty() {
        return Ok(root.to_owned());
    }
    Ok(format!("{root}/{}", steps.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(grant_path("/var/cache//tofu/").unwrap(), "/var/cache/tofu");
        assert_eq!(grant_path("~/.terraform.d/").unwrap(), "~/.terraform.d");
        assert_eq!(grant_path("~").unwrap(), "~");
        assert_eq!(grant_path("~/").unwrap(), "~");
    }

    #[test]
    fn unclear_paths_are_refused() {
        for (path, says) in [
            ("relative/path", "must be absolute"),
            ("~other/x", "must be absolute"),
            ("/", "whole filesystem"),
            ("//", "whole filesystem"),
            ("/srv/../home", ". or .."),
            ("~/./x", ". or .."),
            ("/a\0b", "NUL"),
            ("/proc/sys/kernel", "the kernel's"),
            ("/sys", "the kernel's"),
            ("/dev/kvm", "the kernel's"),
        ] {
            let error = grant_path(path).unwrap_err();
            assert!(error.contains(says), "{path:?}: {error}");
        }
        assert!(grant_path(&format!("/{}", "a".repeat(5000))).is_err());
    }
}
