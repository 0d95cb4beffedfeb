//! The sandbox's filesystem, hostname and loopback, built by its first process in its new
//! namespaces (what it shows: the parent module).
//!
//! The steps are bubblewrap's: a scratch `tmpfs` becomes the root for a moment, with the
//! host's tree at `/oldroot`; the new root is a recursive bind of that tree at `/newroot`,
//! made read-only, without set-user-id programs or devices, all at once (`mount_setattr`
//! with `AT_RECURSIVE`, Linux 5.12); hidden folders are covered by empty `tmpfs` (and
//! hidden files by `/dev/null`), `/tmp`,
//! `/dev` and `/proc` are replaced, the order's folders and grants are bound in from
//! `/oldroot` (shallower paths first, so a grant inside another lands on top of it); then
//! the new root becomes `/` and the host's tree is detached. Every path in the view is a real
//! path (the worker resolved its links), so no link is followed from a root where its
//! target is not.
//!
//! Mounts copied from the host into a namespace of a less privileged user are locked by the
//! kernel: nothing in the sandbox can unmount a hidden folder's cover to see beneath it, nor
//! make the read-only tree writable, even from a user namespace of its own.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::View;

/// Why the sandbox could not be built: the step, and the system's answer.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub(super) struct ViewError {
    step: String,
    #[source]
    source: std::io::Error,
}

/// `result`, its error said as `step`.
fn step<T, E: Into<std::io::Error>>(
    step: impl FnOnce() -> String,
    result: Result<T, E>,
) -> Result<T, ViewError> {
    result.map_err(|source| ViewError {
        step: step(),
        source: source.into(),
    })
}

/// Where the scratch root is mounted: a folder every system has.
const SCRATCH: &str = "/tmp";
/// The host's tree, under the scratch root.
const OLD: &str = "/oldroot";
/// The sandbox's tree, under the scratch root.
const NEW: &str = "/newroot";
/// Devices a program expects in `/dev`, bound from the host's.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// `/dev`'s links.
const DEVICE_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];
/// Parts of `/proc` that act on the whole machine: read-only.
const PROC_READ_ONLY: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];

/// Builds the view and makes it this process's root, its working folder `view.cwd`.
pub(super) fn enter(view: &View) -> Result<(), ViewError> {
    let none: Option<&str> = None;
    step(
        || "making the mounts private".into(),
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
    )?;
    tmpfs(Path::new(SCRATCH), "0700")?;
    for folder in [OLD, NEW] {
        let path = Path::new(SCRATCH).join(&folder[1..]);
        step(
            || format!("making {}", path.display()),
            std::fs::create_dir(&path),
        )?;
    }
    let old_in_scratch = Path::new(SCRATCH).join(&OLD[1..]);
    step(
        || "entering the scratch root".into(),
        nix::unistd::pivot_root(SCRATCH, &old_in_scratch).and_then(|()| nix::unistd::chdir("/")),
    )?;
    let (old, new) = (Path::new(OLD), Path::new(NEW));
    bind(old, new)?;
    restrict(new, Access::ReadOnly)?;
    for hidden in &view.hide {
        cover(old, &inside(new, hidden))?;
    }
    tmpfs(&inside(new, Path::new("/tmp")), "1777")?;
    devices(old, new)?;
    process_view(new)?;
    // The order's folders and grants, and the hidden paths a grant's folder holds covered
    // again, shallower paths first: a grant inside a hidden folder inside another grant
    // lands on the cover.
    let mut layers: Vec<(&PathBuf, Option<Access>)> = (view.write.iter())
        .map(|path| (path, Some(Access::Write)))
        .chain(view.read.iter().map(|path| (path, Some(Access::ReadOnly))))
        .chain(view.hide_within.iter().map(|path| (path, None)))
        .collect();
    layers.sort_by_key(|(path, _)| path.components().count());
    for (path, layer) in layers {
        let (source, target) = (inside(old, path), inside(new, path));
        let Some(access) = layer else {
            cover(old, &target)?;
            continue;
        };
        // Opened through no link: one planted since the worker checked the path (by an
        // order with a grant around it) does not redirect the bind.
        let opened = step(
            || format!("opening {}", path.display()),
            open_without_links(&source),
        )?;
        mount_point(&source, &target)?;
        let by_descriptor = old.join(format!("proc/self/fd/{}", opened.as_raw_fd()));
        bind(&by_descriptor, &target)?;
        restrict(&target, access)?;
    }
    step(
        || "naming the host".into(),
        nix::unistd::sethostname("sluice"),
    )?;
    if !view.network {
        step(|| "starting the loopback".into(), loopback_up())?;
    }
    step(
        || "leaving the host's tree".into(),
        umount2(old, MntFlags::MNT_DETACH)
            .and_then(|()| nix::unistd::chdir(new))
            .and_then(|()| nix::unistd::pivot_root(".", "."))
            .and_then(|()| umount2(".", MntFlags::MNT_DETACH))
            .and_then(|()| nix::unistd::chdir("/")),
    )?;
    step(
        || format!("entering {}", view.cwd.display()),
        nix::unistd::chdir(&view.cwd),
    )
}

/// Covers `target`: a folder with an empty `tmpfs`, anything else (the secrets file, a
/// socket) with an empty file; nothing when it is not there (inside a folder covered
/// before).
fn cover(old: &Path, target: &Path) -> Result<(), ViewError> {
    let Ok(found) = target.symlink_metadata() else {
        return Ok(());
    };
    if found.is_dir() {
        return tmpfs(target, "0755");
    }
    let empty = old.join("dev/null");
    bind(&empty, target)?;
    // Read-only; devices allowed, so that reading it reads nothing rather than failing.
    restrict_as(target, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID)
}

/// `path` opened as a place (`O_PATH`), refusing any symbolic link on the way
/// (`RESOLVE_NO_SYMLINKS`, Linux 5.6).
#[expect(
    unsafe_code,
    reason = "openat2(2) has no wrapper in libc or nix; see SAFETY"
)]
fn open_without_links(path: &Path) -> std::io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a zeroed open_how is a valid one; its fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: a NUL-terminated path and an open_how of the size given, alive for the call;
    // the descriptor returned is new and owned from here on.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &raw const how,
            std::mem::size_of::<libc::open_how>(),
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as libc::c_int))
    }
}

/// `path` (absolute) under `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Mounts an empty `tmpfs` with `mode` on `target`.
fn tmpfs(target: &Path, mode: &str) -> Result<(), ViewError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    step(
        || format!("covering {}", target.display()),
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            flags,
            Some(format!("mode={mode}").as_str()),
        ),
    )
}

/// Binds `source`, and everything mounted below it, on `target`.
fn bind(source: &Path, target: &Path) -> Result<(), ViewError> {
    let none: Option<&str> = None;
    step(
        || format!("binding {}", target.display()),
        mount(
            Some(source),
            target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ),
    )
}

/// What a bound tree allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    Write,
}

/// Makes the tree mounted at `target` read-only (or not) and without set-user-id programs or
/// devices, every mount below it included, in one call.
fn restrict(target: &Path, access: Access) -> Result<(), ViewError> {
    let mut attr_set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if access == Access::ReadOnly {
        attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    restrict_as(target, attr_set)
}

/// Sets `attr_set` on the tree mounted at `target`, every mount below it included.
#[expect(unsafe_code, reason = "mount_setattr(2) has no wrapper in libc or nix")]
fn restrict_as(target: &Path, attr_set: u64) -> Result<(), ViewError> {
    let attributes = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = step(
        || format!("restricting {}", target.display()),
        CString::new(target.as_os_str().as_bytes()).map_err(std::io::Error::other),
    )?;
    // SAFETY: a NUL-terminated path and a `mount_attr` of the size given, both alive for
    // the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &raw const attributes,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    step(
        || format!("restricting {}", target.display()),
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    )
}

/// Makes `target` a place `source` can be bound on: a folder for a folder, a file for
/// anything else. Only needed inside a covered folder (the host's tree has them).
fn mount_point(source: &Path, target: &Path) -> Result<(), ViewError> {
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    let made = if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        (target.parent().map_or(Ok(()), std::fs::create_dir_all))
            .and_then(|()| std::fs::File::create(target).map(drop))
    };
    step(|| format!("making {}", target.display()), made)
}

/// `/dev` of its own: a few devices, its links, a private `/dev/shm` and, where the kernel
/// allows one in a user namespace, its own pseudo-terminals.
fn devices(old: &Path, new: &Path) -> Result<(), ViewError> {
    let dev = inside(new, Path::new("/dev"));
    tmpfs(&dev, "0755")?;
    for device in DEVICES {
        let source = old.join("dev").join(device);
        if source.exists() {
            let target = dev.join(device);
            mount_point(&source, &target)?;
            bind(&source, &target)?;
        }
    }
    for (link, to) in DEVICE_LINKS {
        step(
            || format!("linking /dev/{link}"),
            std::os::unix::fs::symlink(to, dev.join(link)),
        )?;
    }
    let shm = dev.join("shm");
    step(|| "making /dev/shm".into(), std::fs::create_dir(&shm))?;
    tmpfs(&shm, "1777")?;
    let pts = dev.join("pts");
    step(|| "making /dev/pts".into(), std::fs::create_dir(&pts))?;
    // Older kernels refuse devpts in a user namespace: no pseudo-terminals then.
    let _ = mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    );
    Ok(())
}

/// `/proc` of the sandbox's PID namespace, its parts that act on the machine read-only.
fn process_view(new: &Path) -> Result<(), ViewError> {
    let proc = inside(new, Path::new("/proc"));
    step(
        || "mounting /proc".into(),
        mount(
            Some("proc"),
            &proc,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;
    for part in PROC_READ_ONLY {
        let path = proc.join(part);
        if path.exists() {
            bind(&path, &path)?;
            restrict(&path, Access::ReadOnly)?;
        }
    }
    Ok(())
}

/// `SIOCGIFFLAGS` and `SIOCSIFFLAGS` (linux/sockios.h), which libc lists for few targets.
const GET_FLAGS: libc::c_ulong = 0x8913;
const SET_FLAGS: libc::c_ulong = 0x8914;

/// Brings the network namespace's loopback up: a server an order starts answers it on
/// 127.0.0.1, as on any machine.
#[expect(unsafe_code, reason = "ioctl(2) on an ifreq; see SAFETY")]
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) returns a new descriptor, owned from here on.
    let socket = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: a zeroed ifreq is a valid one; the name fits with its NUL; the kernel reads
    // and writes the struct, alive on this stack, for each call.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        if libc::ioctl(socket.as_raw_fd(), GET_FLAGS as _, &mut request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), SET_FLAGS as _, &request) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
