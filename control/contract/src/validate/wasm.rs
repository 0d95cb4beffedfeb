//! The rules on a WebAssembly order (`wasm`).
//!
//! A module runs sandboxed, seeing only what its order gives it, so what it is given is
//! checked before it runs: its module and the folders it mounts stay inside the order's code
//! root; its variables are names an environment can hold, listed once, and never one of
//! Sluice's own `SLUICE_*`; its guest paths are absolute, normalised (`/data/./in/` is
//! `/data/in`), mounted once and clear of `/sluice`, where the events folder is; its memory
//! fits what a 32-bit module can address and its fuel, if any, is not zero. The memory
//! limit's default is applied here.

use super::{DEFAULT_WASM_MEMORY_MB, MAX_WASM_MEMORY_MB, OrderCtx, ValidationError};
use crate::job::WasmSpec;
use crate::paths::is_inside;

/// Checks a wasm order's spec; returns it with its defaults applied and its guest paths
/// normalised.
pub(super) fn validate_wasm(ctx: &OrderCtx, wasm: &WasmSpec) -> Result<WasmSpec, ValidationError> {
    if !is_inside(&wasm.module) {
        return Err(ctx.error(
            "wasm.module",
            format!(
                "{:?} must be a path inside the order's code root",
                wasm.module
            ),
        ));
    }
    if let Some(i) = wasm.args.iter().position(|a| a.contains('\0')) {
        return Err(ctx.error(&format!("wasm.args[{i}]"), "contains a NUL byte"));
    }
    for (i, name) in wasm.env.iter().enumerate() {
        let field = format!("wasm.env[{i}]");
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(ctx.error(&field, format!("{name:?} is not a valid variable name")));
        }
        if name.starts_with("SLUICE_") {
            return Err(ctx.error(
                &field,
                format!("{name} is Sluice's own; every module sees the SLUICE_* variables"),
            ));
        }
        if wasm.env[..i].contains(name) {
            return Err(ctx.error(&field, format!("{name} is listed twice")));
        }
    }
    let mut guests: Vec<String> = Vec::new();
    for (i, dir) in wasm.dirs.iter().enumerate() {
        if !is_inside(&dir.host) && dir.host != "." {
            return Err(ctx.error(
                &format!("wasm.dirs[{i}].host"),
                format!(
                    "{:?} must be a folder inside the order's code root",
                    dir.host
                ),
            ));
        }
        let field = format!("wasm.dirs[{i}].guest");
        let Some(guest) = normalise_guest_path(&dir.guest) else {
            return Err(ctx.error(
                &field,
                format!(
                    "{:?} must be an absolute path without `.` or `..` components",
                    dir.guest
                ),
            ));
        };
        if guest == "/" || guest == "/sluice" || guest.starts_with("/sluice/") {
            return Err(ctx.error(
                &field,
                format!("{guest:?} is reserved (`/sluice/events` is the events folder)"),
            ));
        }
        if guests.contains(&guest) {
            return Err(ctx.error(&field, format!("{guest:?} is mounted twice")));
        }
        guests.push(guest);
    }
    match wasm.memory_mb {
        Some(0) => return Err(ctx.error("wasm.memory_mb", "must be greater than 0")),
        Some(mb) if mb > MAX_WASM_MEMORY_MB => {
            return Err(ctx.error(
                "wasm.memory_mb",
                format!("{mb} is more than a 32-bit module can address ({MAX_WASM_MEMORY_MB})"),
            ));
        }
        _ => {}
    }
    if wasm.fuel == Some(0) {
        return Err(ctx.error("wasm.fuel", "must be greater than 0 (or left out)"));
    }
    let mut wasm = wasm.clone();
    wasm.memory_mb.get_or_insert(DEFAULT_WASM_MEMORY_MB);
    for (dir, guest) in wasm.dirs.iter_mut().zip(guests) {
        dir.guest = guest;
    }
    Ok(wasm)
}

/// `/data/./x/` → `/data/x`; `None` for a relative path or one with `..`.
fn normalise_guest_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            _ if part.contains('\0') => return None,
            _ => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Task;
    use crate::validate::{check, error_of};

    #[test]
    fn wasm_orders_are_checked_field_by_field() {
        let wasm = |spec: &str| {
            error_of(&format!(
                r#"{{"orders":[{{"wasm":{spec},"timeout":5,"code_dir":"c"}}]}}"#
            ))
        };
        let cases = [
            (
                r#"{"module":"m.wasm","env":["A","A"]}"#,
                "wasm.env[1]",
                "listed twice",
            ),
            (
                r#"{"module":"m.wasm","env":["SLUICE_RUN_ID"]}"#,
                "wasm.env[0]",
                "Sluice's own",
            ),
            (
                r#"{"module":"m.wasm","env":["A=B"]}"#,
                "wasm.env[0]",
                "not a valid",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/d/"},{"host":"b","guest":"/d/."}]}"#,
                "wasm.dirs[1].guest",
                "mounted twice",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/d/../e"}]}"#,
                "wasm.dirs[0].guest",
                "without `.` or `..`",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/sluice/events"}]}"#,
                "wasm.dirs[0].guest",
                "reserved",
            ),
            (
                r#"{"module":"m.wasm","dirs":[{"host":"a","guest":"/"}]}"#,
                "wasm.dirs[0].guest",
                "reserved",
            ),
            (
                r#"{"module":"m.wasm","memory_mb":5000}"#,
                "wasm.memory_mb",
                "32-bit",
            ),
            (
                r#"{"module":"m.wasm","fuel":0}"#,
                "wasm.fuel",
                "greater than 0",
            ),
        ];
        for (spec, field, message) in cases {
            let e = wasm(spec);
            assert!(e.contains(field) && e.contains(message), "{spec}: {e}");
        }
        let e = error_of(r#"{"orders":[{"wasm":{"module":"m.wasm"},"timeout":5}]}"#);
        assert!(e.contains("needs a code source"), "{e}");
    }

    #[test]
    fn wasm_defaults_and_normalised_mounts() {
        let valid = check(
            r#"{"orders":[{"wasm":{"module":"m.wasm","dirs":[{"host":"d","guest":"/data/./in/"}]},"timeout":5,"code_dir":"c"}]}"#,
        )
        .unwrap();
        let Task::Wasm(wasm) = &valid.orders[0].task else {
            panic!("a wasm order")
        };
        assert_eq!(wasm.memory_mb, Some(DEFAULT_WASM_MEMORY_MB));
        assert_eq!(wasm.dirs[0].guest, "/data/in");
    }

    #[test]
    fn wasm_paths_stay_inside_the_code_root() {
        let e = error_of(r#"{"orders":[{"wasm":{"module":"../x.wasm"},"timeout":5}]}"#);
        assert!(e.contains("wasm.module"), "{e}");
        let e = error_of(
            r#"{"orders":[{"wasm":{"module":"x.wasm","dirs":[{"host":"d","guest":"rel"}]},"timeout":5}]}"#,
        );
        assert!(e.contains("wasm.dirs[0].guest"), "{e}");
    }
}
