//! What tests of compilers share (feature `test-support`): a compiler that never finishes,
//! to check a deadline kills it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A "compiler" (for `CompileIn::Child`) that writes its pid and sleeps for ten minutes.
#[derive(Debug)]
pub struct StuckCompiler {
    /// The script to run as the compiler.
    pub path: PathBuf,
    pid_file: PathBuf,
}

impl StuckCompiler {
    /// The script, written into `dir`.
    ///
    /// # Panics
    ///
    /// When it cannot be written.
    pub fn in_folder(dir: &Path) -> Self {
        let (path, pid_file) = (dir.join("compiler"), dir.join("compiler.pid"));
        let script = format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pid_file.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        StuckCompiler { path, pid_file }
    }

    /// Waits up to five seconds for the compiler process to stop running (killed; a zombie
    /// not yet reaped no longer runs).
    ///
    /// # Panics
    ///
    /// When it never started, or still runs.
    pub async fn assert_stopped(&self) {
        let pid = std::fs::read_to_string(&self.pid_file).expect("the compiler started");
        let stat = format!("/proc/{}/stat", pid.trim());
        let running = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
        };
        for _ in 0..100 {
            if !running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the compiler {} is still running", pid.trim());
    }
}
