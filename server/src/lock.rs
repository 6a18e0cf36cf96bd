// SPDX-License-Identifier: GPL-2.0
//! One log server per host: an exclusive `flock` on a lock file, held for the server's life.
//!
//! Two servers in connector group 7 would both answer every request (the kernel takes one
//! answer and drops the other) and both write a disk log's bitmap, each from its own state.
//! dm-ulogd and dm-ulog-hostile take the same lock. The kernel drops a flock when its holder
//! dies, however it dies, so a server started right after a SIGKILL finds the lock free and
//! there is no stale lock to clean up. The file holds the holder's pid, for the message.
//!
//! A server killed with SIGKILL releases the lock only once it has exited, which can take a
//! moment after `kill` returns (longer while it waits for a device write), and scripts start
//! the next server right away; so a busy lock is retried for [`LOCK_GRACE`] before refusing.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::cli::Fatal;

/// Where the lock lives unless `--lock-file` says otherwise; the systemd unit's
/// `RuntimeDirectory=dm-ulogd` makes the directory writable under `ProtectSystem=strict`.
pub const DEFAULT_LOCK_FILE: &str = "/run/dm-ulogd/dm-ulogd.lock";

/// How long a busy lock is retried before a second server gives up.
pub const LOCK_GRACE: Duration = Duration::from_secs(2);
/// How often it is retried meanwhile.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
    path: PathBuf,
}

/// Who holds the lock, as its file says: `pid N`, or `pid unknown` while the holder has not
/// written it yet.
fn holder(file: &File) -> String {
    let mut buf = [0u8; 16];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    match std::str::from_utf8(&buf[..n]).map(|t| t.trim().parse::<u32>()) {
        Ok(Ok(pid)) => format!("pid {pid}"),
        _ => "pid unknown".to_string(),
    }
}

/// A failure to create or open the lock: missing privileges or a bad path.
fn open_failure(what: &str, path: &Path, e: &io::Error) -> Fatal {
    let message = format!(
        "cannot {what} {}: {e} (run the server as root, or pass --lock-file PATH)",
        path.display()
    );
    if e.kind() == io::ErrorKind::PermissionDenied {
        Fatal::permission(message)
    } else {
        Fatal::config(message)
    }
}

impl InstanceLock {
    /// Takes the lock, waiting up to [`LOCK_GRACE`] for a server that is exiting. Fails with
    /// a [`Fatal`] configuration error naming the holder's pid when another server keeps it.
    pub fn acquire(path: &Path) -> Result<Self> {
        Self::acquire_within(path, LOCK_GRACE)
    }

    /// Takes the lock, waiting up to `grace` while another process holds it.
    pub fn acquire_within(path: &Path, grace: Duration) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| open_failure("create the lock's directory", dir, &e))?;
        }
        // Only root may open it: any process that can open a file can flock it, and an
        // unprivileged one holding the lock would keep every log server from starting.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_failure("open the lock file", path, &e))?;
        let deadline = Instant::now() + grace;
        let mut file = file;
        let mut waiting = false;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((busy, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    if !waiting {
                        tracing::info!(
                            "{} is held by another log server ({}): waiting up to {} s for it \
                             to exit",
                            path.display(),
                            holder(&busy),
                            grace.as_secs_f32()
                        );
                        waiting = true;
                    }
                    std::thread::sleep(LOCK_RETRY);
                    file = busy;
                }
                Err((busy, Errno::EWOULDBLOCK)) => {
                    return Err(Fatal::config(format!(
                        "another log server is already running ({}, holding {}): two would \
                         both answer the kernel and both write disk logs; stop it first \
                         (systemctl stop dm-ulogd, or kill that pid)",
                        holder(&busy),
                        path.display()
                    ))
                    .into());
                }
                Err((_, e)) => {
                    return Err(Fatal::config(format!(
                        "cannot lock {}: {e} (pass --lock-file with a path on a local file \
                         system)",
                        path.display()
                    ))
                    .into());
                }
            }
        };
        // The pid, for the next server's message; the lock works without it.
        let pid = format!("{}\n", std::process::id());
        if let Err(e) = lock
            .set_len(0)
            .and_then(|()| lock.write_all_at(pid.as_bytes(), 0))
        {
            tracing::warn!("cannot write the pid to {}: {e}", path.display());
        }
        Ok(Self {
            _file: lock,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{exit_status, EXIT_CONFIG};

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        // The directory is made if missing, as /run/dm-ulogd is outside systemd.
        let path = dir.path().join("run/dm-ulogd.lock");
        let first = InstanceLock::acquire(&path).unwrap();
        assert_eq!(first.path(), path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock conflicts between open files, even within one process.
        let started = Instant::now();
        let err = InstanceLock::acquire_within(&path, Duration::from_millis(100)).unwrap_err();
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "no grace given"
        );
        assert_eq!(exit_status(&err), EXIT_CONFIG);
        let msg = err.to_string();
        assert!(
            msg.contains("already running")
                && msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains(path.to_str().unwrap()),
            "{msg}"
        );
        // Released with its holder, within the grace the next server gives it.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        InstanceLock::acquire(&path).unwrap();
        release.join().unwrap();
    }

    #[test]
    fn lock_file_is_for_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let _lock = InstanceLock::acquire(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unusable_paths_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        // A directory where the lock should be, and a file where its directory should be.
        for bad in [dir.path().to_path_buf(), file.join("lock")] {
            let err = InstanceLock::acquire(&bad).unwrap_err();
            assert_eq!(exit_status(&err), EXIT_CONFIG, "{err}");
            assert!(err.to_string().contains("--lock-file"), "{err}");
        }
    }
}
