//! Starting a background daemon (`csd mount`, `csd device start`): this binary again, with
//! `--foreground`, the global flags this process was given, stdin and stdout on /dev/null and
//! stderr appended to a log; then waiting until it is ready, or saying why it is not.

use std::{
    ffi::OsString,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};

use super::open;

/// How long a daemon may take to become ready (a large image, or the board in QEMU, takes a
/// while).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A daemon starting.
pub(crate) struct Daemon {
    child: Child,
    log: PathBuf,
    log_start: u64,
    what: &'static str,
}

/// `IMAGE.log`, or `log`.
pub(crate) fn log_path(image: &Path, log: Option<&Path>) -> PathBuf {
    log.map(Path::to_path_buf).unwrap_or_else(|| {
        let mut p = image.as_os_str().to_owned();
        p.push(".log");
        PathBuf::from(p)
    })
}

impl Daemon {
    /// Starts `csd [global flags] ARGS` in its own process group, its stderr appended to `log`;
    /// `what` names it in errors (`the mount daemon`).
    pub(crate) fn spawn(
        what: &'static str,
        args: &[OsString],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("could not open the log {}", log.display()))?;
        let log_start = file.metadata().map(|m| m.len()).unwrap_or(0);
        let exe = std::env::current_exe().context("could not find the csd binary")?;
        let mut command = Command::new(exe);
        if open::selected() == open::DeviceKind::Qemu {
            command.args(["--device", "qemu"]);
        }
        if open::board_log_shown() {
            command.arg("--board-log");
        }
        if open::timing_selected() == open::TimingSwitch::Off {
            command.args(["--timing", "off"]);
        }
        match open::executor_selected() {
            Some(open::ExecutorSwitch::Jit) => command.args(["--executor", "jit"]),
            Some(open::ExecutorSwitch::Interp) => command.args(["--executor", "interp"]),
            None => &mut command,
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .process_group(0)
            .spawn()
            .with_context(|| format!("could not start {what}"))?;
        Ok(Daemon {
            child,
            log,
            log_start,
            what,
        })
    }

    /// The daemon's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Waits until `ready` says so; an error if the daemon exits first (its last log line says
    /// why) or takes too long (it is killed).
    pub(crate) fn wait(&mut self, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("could not watch {}", self.what))?
            {
                let text = std::fs::read(&self.log).unwrap_or_default();
                let tail = String::from_utf8_lossy(
                    text.get(self.log_start as usize..).unwrap_or_default(),
                );
                let last = tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim_start_matches("csd: ").to_string())
                    .unwrap_or_else(|| format!("it exited with {status}"));
                return Err(anyhow!("{} failed: {last}", self.what));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = self.child.kill();
                return Err(anyhow!(
                    "{} was not ready within {} s; see {}",
                    self.what,
                    START_TIMEOUT.as_secs(),
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
