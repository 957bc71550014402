//! A real FUSE mount of a fresh image for the end-to-end tests: `csd mkfs`, `csd mount` (the
//! real binary, in the background), and a guard that always unmounts (`fusermount3 -u`) and
//! waits for the daemon to finish its checkpoint, also when a test panics. [`Mount::kill`]
//! ends the daemon with SIGKILL instead, for crash tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{csd, csd_ok};

/// How long a daemon may take to finish after its mount went away.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A device image with a file system, mounted (or not) in a temporary directory.
#[derive(Debug)]
pub struct Mount {
    dir: TempDir,
    /// The image file.
    pub image: PathBuf,
    /// The mount point.
    pub root: PathBuf,
    /// Extra `csd mount` options.
    options: Vec<String>,
    /// The daemon's pid while mounted.
    daemon: Option<u32>,
    /// Unmounts so far (each must leave a "clean" line in the log).
    unmounts: usize,
    /// A killed daemon's mount is still attached.
    dead: bool,
}

fn pid_is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has finished; only its parent has not looked yet.
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

impl Mount {
    /// A fresh image (`csd mkfs IMAGE` with `mkfs_args`, e.g. `["--capacity", "16M"]`), mounted
    /// with `mount_args` (e.g. `["--allow-other"]`).
    pub fn new(mkfs_args: &[&str], mount_args: &[&str]) -> Mount {
        Mount::with_image(None, mkfs_args, mount_args)
    }

    /// [`Mount::new`] with the image at `image` (made there by `csd mkfs`) instead of in the
    /// mount's temporary directory: on a file system a test controls.
    pub fn with_image(image: Option<PathBuf>, mkfs_args: &[&str], mount_args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let image = image.unwrap_or_else(|| dir.path().join("device.img"));
        let root = dir.path().join("mnt");
        std::fs::create_dir(&root).expect("the mount point");
        let mut args = vec!["mkfs".to_string(), image.display().to_string()];
        args.extend(mkfs_args.iter().map(|s| s.to_string()));
        csd_ok(&args);
        let mut mount = Mount {
            dir,
            image,
            root,
            options: mount_args.iter().map(|s| s.to_string()).collect(),
            daemon: None,
            unmounts: 0,
            dead: false,
        };
        mount.mount();
        mount
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `path` inside the mount (`"a/b"`).
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Mounts with the real `csd mount` in the background.
    ///
    /// # Panics
    /// If it is mounted already or `csd mount` fails.
    pub fn mount(&mut self) {
        if let Err(e) = self.try_mount() {
            panic!("{e}");
        }
    }

    /// Mounts with the real `csd mount` in the background; `Err` says why `csd mount` failed.
    ///
    /// # Panics
    /// If it is mounted already.
    pub fn try_mount(&mut self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "already mounted");
        self.detach();
        let mut args = vec![
            "mount".to_string(),
            self.image.display().to_string(),
            self.root.display().to_string(),
            "--log".to_string(),
            self.log_path().display().to_string(),
        ];
        args.extend(self.options.iter().cloned());
        let out = csd(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "csd mount failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let pid = stdout
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.trim().parse().ok())
            .ok_or_else(|| format!("csd mount names no pid: {stdout}"))?;
        self.daemon = Some(pid);
        Ok(())
    }

    /// The mount daemon's pid while mounted.
    pub fn daemon(&self) -> Option<u32> {
        self.daemon
    }

    /// Kills the daemon with SIGKILL (nothing it buffered reaches the image; what it wrote
    /// stays, as when the device's host loses power) and waits until it is gone. The dead
    /// mount stays in place, failing every call with ENOTCONN, until [`Mount::detach`] or the
    /// next mount: a process still working on it must see it dead, never the directory under
    /// it.
    ///
    /// # Panics
    /// If it is not mounted or the daemon outlives the kill.
    pub fn kill(&mut self) {
        let pid = self.daemon.take().expect("mounted");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {pid} failed: {status}");
        wait_exit(pid);
        self.dead = true;
    }

    /// Detaches the mount of a killed daemon (`fusermount3 -u -z`), if there is one.
    ///
    /// # Panics
    /// If fusermount3 fails.
    pub fn detach(&mut self) {
        if !std::mem::take(&mut self.dead) {
            return;
        }
        let status = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.root)
            .status()
            .expect("fusermount3 runs");
        assert!(status.success(), "fusermount3 -u -z failed: {status}");
    }

    /// `csd fsck` on the image (which must not be mounted): `Err` holds its report when it
    /// found problems or could not run.
    pub fn fsck(&self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "fsck of a mounted image");
        let out = csd(["fsck", &self.image.display().to_string()]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "fsck found problems: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Unmounts with `fusermount3 -u` and waits until the daemon has checkpointed and exited.
    ///
    /// # Panics
    /// If fusermount3 fails or the daemon does not exit in time.
    pub fn unmount(&mut self) {
        if self.unmount_as_is() {
            self.unmounts += 1;
            assert!(
                self.log().matches(": clean").count() >= self.unmounts,
                "the daemon did not report a clean unmount: {}",
                self.log()
            );
        }
    }

    /// Unmounts with `fusermount3 -u` and waits until the daemon exited, whether or not it
    /// could unmount the file system cleanly (a test of a failing host). False if it was not
    /// mounted.
    ///
    /// # Panics
    /// If fusermount3 fails or the daemon does not exit in time.
    pub fn unmount_as_is(&mut self) -> bool {
        let Some(pid) = self.daemon.take() else {
            return false;
        };
        // A process another test forked while a file here was open may hold it for a moment
        // (the mount is then busy): try again for a while before calling it a failure.
        let started = Instant::now();
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.root)
                .output()
                .expect("fusermount3 runs");
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("busy") && started.elapsed() < Duration::from_secs(20),
                "fusermount3 -u failed: {}: {err}",
                out.status
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_exit(pid);
        true
    }

    /// The `csd mount` options of the next mount.
    pub fn set_options(&mut self, mount_args: &[&str]) {
        self.options = mount_args.iter().map(|s| s.to_string()).collect();
    }

    /// Unmounts and mounts again: everything must come back from the media.
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Unmounts (if mounted) and runs `csd fsck`, which must find nothing.
    pub fn unmount_and_fsck(&mut self) {
        self.unmount();
        if let Err(report) = self.fsck() {
            panic!("{report}");
        }
    }

    /// The image's directory (for files kept outside the mount).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn wait_exit(pid: u32) {
    let started = Instant::now();
    while pid_is_running(pid) {
        assert!(
            started.elapsed() < EXIT_TIMEOUT,
            "the mount daemon {pid} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.dead {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.root)
                .status();
        }
        if let Some(pid) = self.daemon.take() {
            // Lazy: a test that panicked may still hold files open in the mount.
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.root)
                .status();
            let started = Instant::now();
            while pid_is_running(pid) && started.elapsed() < EXIT_TIMEOUT {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
