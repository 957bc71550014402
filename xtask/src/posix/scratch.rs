//! The suites' scratch directory and the mounts in it, which never outlive the run.
//!
//! Normally [`Scratch`] unmounts everything itself, newest first: on success through
//! [`Scratch::unmount_all`], on an error or a panic in its `Drop` (lazily, as a test may still
//! hold files open). A run that is killed (Ctrl-C, SIGKILL) runs no destructor, and the csd and
//! bindfs daemons live in their own sessions, so a janitor watches from outside: this same
//! binary (`cargo xtask posix-janitor DIR`, in its own process group), which waits for its
//! stdin to close, as it does when the run ends in any way, and then unmounts whatever is
//! still mounted under DIR and removes DIR.

use std::{
    io::Read,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// How long a csd daemon may take to checkpoint and exit after its unmount.
const DAEMON_EXIT: Duration = Duration::from_secs(120);

/// A temporary directory (mode 0755, so pjdfstest's other users reach the mounts) and the
/// mounts made in it.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// Taken by `Drop`, which keeps it when something could not be unmounted.
    dir: Option<tempfile::TempDir>,
    /// Newest last: unmounted from the end.
    mounts: Vec<Mounted>,
    janitor: Option<Child>,
}

#[derive(Debug)]
struct Mounted {
    point: PathBuf,
    /// The FUSE daemon to wait for after the unmount (csd's; bindfs needs no wait).
    daemon: Option<u32>,
}

/// A csd image mounted by `csd mount`.
#[derive(Debug)]
pub struct CsdMount {
    pub image: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
}

impl Scratch {
    /// A fresh directory under the system's temporary directory, watched by a janitor.
    pub fn new() -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("csd-posix-")
            .tempdir()
            .context("could not make a temporary directory")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("could not chmod {}", dir.path().display()))?;
        let exe = std::env::current_exe().context("could not find the xtask binary")?;
        let janitor = Command::new(exe)
            .arg("posix-janitor")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("could not start the janitor of the scratch directory")?;
        Ok(Scratch {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            mounts: Vec::new(),
            janitor: Some(janitor),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new empty directory `name` in the scratch directory.
    pub fn mkdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.path().join(name);
        std::fs::create_dir(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        Ok(path)
    }

    /// A tmpfs of `size_bytes` on the new directory `name`.
    pub fn tmpfs(&mut self, name: &str, size_bytes: u64) -> Result<PathBuf> {
        let point = self.mkdir(name)?;
        cmd::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_bytes},mode=0755"))
                .arg("tmpfs")
                .arg(&point),
        )
        .context("could not mount a tmpfs (the POSIX suites run as root)")?;
        self.mounts.push(Mounted {
            point: point.clone(),
            daemon: None,
        });
        Ok(point)
    }

    /// bindfs of `source` on the new directory `name`, caching neither attributes nor
    /// entries (what a peer passes must be the file system's doing, not its cache's).
    pub fn bindfs(&mut self, source: &Path, name: &str) -> Result<PathBuf> {
        let point = self.mkdir(name)?;
        cmd::run(
            Command::new("bindfs")
                .args(["-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0"])
                .arg(source)
                .arg(&point),
        )
        .context("could not mount bindfs (`cargo xtask deps` installs it)")?;
        self.mounts.push(Mounted {
            point: point.clone(),
            daemon: None,
        });
        Ok(point)
    }

    /// A fresh image (`csd mkfs`, the small preset) mounted with `--allow-other` on the new
    /// directory `name`.
    pub fn csd(&mut self, csd: &Path, name: &str) -> Result<CsdMount> {
        let image = self.path().join(format!("{name}.img"));
        let log = self.path().join(format!("{name}.log"));
        let root = self.mkdir(name)?;
        cmd::output(Command::new(csd).arg("mkfs").arg(&image))?;
        let said = cmd::output(
            Command::new(csd)
                .arg("mount")
                .arg(&image)
                .arg(&root)
                .arg("--allow-other")
                .arg("--log")
                .arg(&log),
        )?;
        eprint!("csd: {said}");
        // `mounted IMAGE on DIR (pid N, log FILE)`
        let daemon = said
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.trim().parse().ok())
            .with_context(|| format!("`csd mount` named no daemon pid: {said}"))?;
        self.mounts.push(Mounted {
            point: root.clone(),
            daemon: Some(daemon),
        });
        Ok(CsdMount { image, root, log })
    }

    /// Unmounts everything, newest first, and waits for the csd daemons to exit; fails
    /// naming what stayed (the `Drop` then detaches it lazily).
    pub fn unmount_all(&mut self) -> Result<()> {
        while let Some(m) = self.mounts.last() {
            let how = if m.daemon.is_some() {
                Command::new("fusermount3").arg("-u").arg(&m.point).output()
            } else {
                Command::new("umount").arg(&m.point).output()
            };
            let out = how.with_context(|| format!("could not unmount {}", m.point.display()))?;
            if !out.status.success() {
                bail!(
                    "could not unmount {}: {}",
                    m.point.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if let Some(pid) = m.daemon {
                if !wait_exit(pid, DAEMON_EXIT) {
                    bail!(
                        "the csd daemon {pid} did not exit within {} s of its unmount",
                        DAEMON_EXIT.as_secs()
                    );
                }
            }
            self.mounts.pop();
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            // A csd mount is FUSE: fusermount3 detaches it without root; tmpfs and bindfs need
            // umount.
            let _ = if m.daemon.is_some() {
                Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&m.point)
                    .status()
            } else {
                Command::new("umount").arg("-l").arg(&m.point).status()
            };
            if let Some(pid) = m.daemon {
                if !wait_exit(pid, DAEMON_EXIT) {
                    eprintln!("xtask: the csd daemon {pid} did not exit; killing it");
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        if let Some(mut dir) = self.dir.take() {
            let left = mounted_under(dir.path());
            if !left.is_empty() {
                // Removing it would reach into the mounts.
                dir.disable_cleanup(true);
                eprintln!(
                    "xtask: left {} in place: still mounted there: {left:?}",
                    dir.path().display()
                );
            }
        }
        // Closing its stdin lets the janitor look once more (and find nothing) and exit.
        if let Some(mut janitor) = self.janitor.take() {
            drop(janitor.stdin.take());
            let _ = janitor.wait();
        }
    }
}

/// `cargo xtask posix-janitor DIR`: waits until stdin closes, then unmounts what is mounted
/// under DIR (lazily, deepest first) and removes DIR.
pub fn janitor(dir: &Path) -> Result<()> {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    if !dir.exists() {
        return Ok(());
    }
    let mut left = mounted_under(dir);
    if left.is_empty() {
        return remove(dir);
    }
    eprintln!(
        "xtask posix-janitor: the run ended with mounts left under {}; unmounting them",
        dir.display()
    );
    left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in &left {
        let _ = Command::new("umount").arg("-l").arg(point).status();
    }
    let left = mounted_under(dir);
    if !left.is_empty() {
        bail!("still mounted under {}: {left:?}", dir.display());
    }
    remove(dir)
}

fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("could not remove {}", dir.display()))
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in a path as `\ooo` (octal).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `pid` ended within `timeout` (a zombie has ended).
fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z")
        });
        if !running {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Octal escapes of mountinfo decode; other backslashes stay.
    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/tmp/x\134y"), r"/tmp/x\y");
        assert_eq!(unescape(r"/tmp/\9"), r"/tmp/\9");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
