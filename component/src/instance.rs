//! This process among Nudge instances: the lock that keeps a second process
//! off a SQLite database, and the handover that replaces a running instance
//! without a gap.
//!
//! Why a gap matters: while no instance is connected, ejabberd deletes the
//! push registration of every user whose publish bounces, and Prosody
//! bounces with `wait` and never re-sends (`docs/answers.md`). So a restart
//! or an upgrade starts the new process first ([`OtherInstance`]): it connects
//! while the old one is still connected (ejabberd balances between the two;
//! Prosody with `component_conflict_resolve = "kick_old"` hands the domain
//! over), and only then asks the old one to stop, which answers what it has
//! read and exits. `kill -HUP` makes a running instance start its own
//! successor ([`spawn_successor`]); under systemd the successor then tells
//! the service manager that it is the service's main process
//! ([`notify_systemd`]), so `systemctl reload` is the zero-gap restart
//! (`deploy/nudge.service`).
//!
//! Why a lock: SQLite cannot tell another process what changed, so a second
//! instance on the same file would serve registrations from a stale cache.
//! An [`InstanceLock`] beside the database file (`nudge.db.lock`, holding
//! the holder's PID) refuses it. During a handover the new process runs
//! without the lock until the old one has exited, then takes it and drops
//! its cache, which the old process may have outdated while it drained.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;

/// Why the instance lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the database.
    #[error(
        "another Nudge instance ({holder}) uses the SQLite database beside {path}; \
         SQLite cannot tell other processes what changed, so only one instance may use it. \
         To restart without a gap run `nudge run --replace`; to run several instances \
         use PostgreSQL (storage.url)",
        holder = match .pid { Some(pid) => format!("PID {pid}"), None => "PID unknown".to_owned() },
        path = .path.display()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it into the file.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or written.
    #[error("instance lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// An exclusive lock on a database, held as long as this value lives (and
/// released by the kernel when the process ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock file of a database URL: beside a SQLite file; none for
    /// PostgreSQL (several instances share it) or an in-memory database.
    pub fn path_for(database_url: &str) -> Option<PathBuf> {
        let file = crate::store::sqlite_file(database_url)?;
        let mut name = file.file_name()?.to_os_string();
        name.push(".lock");
        Some(file.with_file_name(name))
    }

    /// Takes the lock now, or says who holds it.
    pub fn try_acquire(path: &Path) -> Result<InstanceLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: path.to_owned(),
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(InstanceLock {
            _file: file,
            path: path.to_owned(),
        })
    }

    /// Takes the lock once its holder has let go, trying every `every`.
    pub async fn acquire_when_free(path: &Path, every: Duration) -> Result<Self, LockError> {
        loop {
            match Self::try_acquire(path) {
                Err(LockError::Held { .. }) => tokio::time::sleep(every).await,
                taken => return taken,
            }
        }
    }

    /// The PID written into a lock file by its holder, if it can be read.
    pub fn holder(path: &Path) -> Option<u32> {
        File::open(path).ok().and_then(|mut f| read_pid(&mut f))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Another running instance: the one a new process replaces, or the one
/// that holds a SQLite database the command line just changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherInstance {
    pid: u32,
}

/// Why another instance could not be signalled.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Not a PID a process can have.
    #[error("{0} is not a process ID")]
    BadPid(u32),
    /// The kernel refused the signal.
    #[error("cannot signal PID {pid}: {source}")]
    Kill {
        /// The process.
        pid: u32,
        /// Why not.
        source: std::io::Error,
    },
}

impl OtherInstance {
    /// The instance running as `pid`.
    pub fn new(pid: u32) -> Self {
        OtherInstance { pid }
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn rustix_pid(&self) -> Result<rustix::process::Pid, SignalError> {
        i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or(SignalError::BadPid(self.pid))
    }

    /// Asks it to stop (SIGTERM): it answers what it has read, closes its
    /// stream and exits.
    pub fn stop(&self) -> Result<(), SignalError> {
        self.signal(rustix::process::Signal::TERM)
    }

    /// Tells it to forget its cached registrations (SIGUSR1): the command
    /// line changed the SQLite database, which cannot notify it.
    pub fn forget_cache(&self) -> Result<(), SignalError> {
        self.signal(rustix::process::Signal::USR1)
    }

    fn signal(&self, signal: rustix::process::Signal) -> Result<(), SignalError> {
        let pid = self.rustix_pid()?;
        match rustix::process::kill_process(pid, signal) {
            Ok(()) => Ok(()),
            // Gone already (Prosody's kick_old may have stopped it first).
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(SignalError::Kill {
                pid: self.pid,
                source: e.into(),
            }),
        }
    }

    /// Whether it still runs (a zombie, exited but not yet reaped by its
    /// parent, does not).
    pub fn is_running(&self) -> bool {
        let Ok(pid) = self.rustix_pid() else {
            return false;
        };
        if rustix::process::test_kill_process(pid).is_err() {
            return false;
        }
        // The third field of /proc/PID/stat is the state; the second, the
        // command name, is in parentheses and may hold spaces.
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state != "Z" && state != "X"),
            Err(_) => true,
        }
    }

    /// Whether the process is a `nudge` (its program's file name starts
    /// so), as far as `/proc` tells.
    pub fn is_nudge(&self) -> bool {
        std::fs::read(format!("/proc/{}/cmdline", self.pid)).is_ok_and(|cmdline| {
            cmdline
                .split(|b| *b == 0)
                .next()
                .and_then(|program| std::str::from_utf8(program).ok())
                .and_then(|program| Path::new(program).file_name())
                .is_some_and(|name| name.to_string_lossy().starts_with("nudge"))
        })
    }

    /// Resolves once it has exited, warning every `warn_every` while not.
    pub async fn exited(&self, warn_every: Duration) {
        let started = tokio::time::Instant::now();
        let mut warned = started;
        while self.is_running() {
            if warned.elapsed() >= warn_every {
                warned = tokio::time::Instant::now();
                warn!(pid = self.pid, waited = ?started.elapsed(), "handover: the replaced instance has not exited yet");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts this program again as `nudge --config CONFIG run --replace PID`
/// (PID: this process), with the same environment and output; the new
/// process takes over and stops this one. The program is found as this
/// process was started (so that after an upgrade the new binary runs), or
/// through `/proc/self/exe`.
pub fn spawn_successor(config: &Path) -> std::io::Result<tokio::process::Child> {
    let program = std::env::args_os()
        .next()
        .filter(|p| Path::new(p).components().count() > 1 || which_in_path(p))
        .map(PathBuf::from)
        .map_or_else(std::env::current_exe, Ok)?;
    tokio::process::Command::new(program)
        .arg("--config")
        .arg(config)
        .arg("run")
        .arg("--replace")
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
}

/// Whether a bare program name resolves through `PATH`.
fn which_in_path(name: &std::ffi::OsStr) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) that the service
/// is ready, and with `main_pid` that this process is now its main process
/// (the unit needs `NotifyAccess=all`, `deploy/nudge.service`). Without
/// systemd, nothing happens.
pub fn notify_systemd(main_pid: bool) {
    use sd_notify::NotifyState;
    let pid = std::process::id();
    let result = if main_pid {
        sd_notify::notify(&[NotifyState::MainPid(pid), NotifyState::Ready])
    } else {
        sd_notify::notify(&[NotifyState::Ready])
    };
    if let Err(e) = result {
        warn!(error = %e, "could not notify systemd");
    }
}

/// Tells systemd that `pid` (our successor) is the service's main process
/// now; sent by a replaced instance just before it exits. Without systemd,
/// nothing happens.
pub fn notify_systemd_main_pid(pid: u32) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::MainPid(pid)]) {
        warn!(error = %e, "could not notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_is_beside_the_sqlite_file() {
        assert_eq!(
            InstanceLock::path_for("sqlite://data/nudge.db"),
            Some(PathBuf::from("data/nudge.db.lock"))
        );
        assert_eq!(
            InstanceLock::path_for("sqlite:///var/lib/nudge/x.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/nudge/x.db.lock"))
        );
        assert_eq!(InstanceLock::path_for("sqlite::memory:"), None);
        assert_eq!(InstanceLock::path_for("postgres://u@h/db"), None);
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nudge.db.lock");
        let held = InstanceLock::try_acquire(&path).unwrap();
        // flock is per open file: a second open in this process is refused
        // just like another process would be.
        match InstanceLock::try_acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(InstanceLock::holder(&path), Some(std::process::id()));
        let message = InstanceLock::try_acquire(&path).unwrap_err().to_string();
        assert!(message.contains("another Nudge instance"), "{message}");
        assert!(message.contains("--replace"), "{message}");
        drop(held);
        // Released at once, unless a child another test forks right now
        // holds a copy of the descriptor until its exec closes it (close on
        // exec): then a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Err(e) = InstanceLock::try_acquire(&path) {
            assert!(std::time::Instant::now() < deadline, "still held: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn this_process_runs_and_a_reaped_child_does_not() {
        assert!(OtherInstance::new(std::process::id()).is_running());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not reaped yet: a zombie.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!OtherInstance::new(pid).is_running());
        child.wait().unwrap();
        assert!(!OtherInstance::new(pid).is_running());
        assert!(!OtherInstance::new(u32::MAX).is_running());
    }
}
