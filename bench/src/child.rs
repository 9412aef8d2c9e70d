//! The `nudge` child process of the external mode: start it, read what it
//! costs from `/proc/PID/{stat,status}`, reset its peak RSS between phases,
//! and stop it (SIGTERM, then kill after a grace period).
//!
//! Only Linux's `/proc` is read; the harness is meant for the project's
//! benchmark machine, not for portability.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Why the child could not be started, read or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("starting {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} of the nudge process: {source}")]
    Proc {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("unexpected /proc/PID/{file} contents")]
    Parse { file: &'static str },
    #[error("`nudge {command}` failed ({status}); its output:\n{log}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        log: String,
    },
}

/// What the child costs at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// User + system CPU time of all its threads so far.
    pub cpu: Duration,
    /// Resident set now (`VmRSS`), kB.
    pub rss_kb: u64,
    /// Peak resident set since start or the last [`NudgeChild::reset_peak`]
    /// (`VmHWM`), kB.
    pub hwm_kb: u64,
}

/// A running `nudge run`.
#[derive(Debug)]
pub struct NudgeChild {
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// Runs `nudge ARGS --config CONFIG` to completion (e.g. `migrate`), its
/// output going to `log`.
pub async fn run_to_end(
    nudge: &Path,
    config: &Path,
    args: &[&str],
    log: &Path,
) -> Result<(), ChildError> {
    let status = command(nudge, config, args, log)?
        .status()
        .await
        .map_err(|source| ChildError::Spawn {
            path: nudge.to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(ChildError::Failed {
            command: args.join(" "),
            status,
            log: read_log(log),
        })
    }
}

fn command(nudge: &Path, config: &Path, args: &[&str], log: &Path) -> Result<Command, ChildError> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ChildError::Spawn {
                path: log.to_owned(),
                source,
            })
    };
    let mut cmd = Command::new(nudge);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .kill_on_drop(true);
    Ok(cmd)
}

fn read_log(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // The end tells why; a long log would drown the message.
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

impl NudgeChild {
    /// Starts `nudge run --config CONFIG`, output to `log`.
    pub fn spawn(nudge: &Path, config: &Path, log: &Path) -> Result<Self, ChildError> {
        let child = command(nudge, config, &["run"], log)?
            .spawn()
            .map_err(|source| ChildError::Spawn {
                path: nudge.to_owned(),
                source,
            })?;
        let pid = child.id().ok_or(ChildError::Parse { file: "pid" })?;
        Ok(Self {
            child,
            pid,
            log: log.to_owned(),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The end of the child's log (for an error message).
    pub fn log_tail(&self) -> String {
        read_log(&self.log)
    }

    /// CPU time and memory now.
    pub fn sample(&self) -> Result<Sample, ChildError> {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_err(|source| {
                ChildError::Proc {
                    what: "stat",
                    source,
                }
            })?;
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).map_err(|source| {
                ChildError::Proc {
                    what: "status",
                    source,
                }
            })?;
        Ok(Sample {
            cpu: cpu_time(&stat).ok_or(ChildError::Parse { file: "stat" })?,
            rss_kb: status_kb(&status, "VmRSS:").ok_or(ChildError::Parse { file: "status" })?,
            hwm_kb: status_kb(&status, "VmHWM:").ok_or(ChildError::Parse { file: "status" })?,
        })
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS, so that the next
    /// [`sample`](Self::sample) shows the peak of the phase in between
    /// (`echo 5 > /proc/PID/clear_refs`, allowed on one's own child).
    pub fn reset_peak(&self) -> Result<(), ChildError> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").map_err(|source| {
            ChildError::Proc {
                what: "clear_refs",
                source,
            }
        })
    }

    /// Whether the child has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`, counted after the
/// parenthesised command name, which may contain spaces).
fn cpu_time(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // Field 3 (state) is the first after the name; utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz as f64))
}

/// A `kB` line of `/proc/PID/status`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (nudge (x) y) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0 20 0 4 0 99";
        let hz = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(cpu_time(stat), Some(Duration::from_secs_f64(500.0 / hz)));
        let status = "Name:\tnudge\nVmHWM:\t   12345 kB\nVmRSS:\t    2345 kB\n";
        assert_eq!(status_kb(status, "VmHWM:"), Some(12345));
        assert_eq!(status_kb(status, "VmRSS:"), Some(2345));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }
}
