//! `cargo xtask deps`: installs what the project needs on a bare Debian bookworm machine.
//!
//! It checks first and installs only what is missing, so on a ready machine it takes a second.
//! As root it installs; otherwise it prints the exact commands and fails. QEMU comes from the
//! bookworm-backports suite (bookworm's own 7.2 has no `mps3-an536` machine); the suite is added
//! with the mirror URI the machine's existing Debian source already names. The POSIX suites
//! (`cargo xtask posix`) add two crates installed with `cargo install --locked` at pinned
//! versions (no root needed) and the two users pjdfstest switches to.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use nix::unistd::{Group, User};

use crate::cmd;

/// A Debian package the project needs, and what for.
struct Package {
    name: &'static str,
    why: &'static str,
}

/// Packages from the bookworm suite itself.
const PACKAGES: &[Package] = &[
    Package {
        name: "fuse3",
        why: "fusermount3, to mount the file system",
    },
    Package {
        name: "attr",
        why: "setfattr/getfattr, to offload kernels in tests",
    },
    Package {
        name: "fio",
        why: "file-system benchmarks and load tests (and, copied into the Linux guest, zoned writes over NVMe/TCP)",
    },
    Package {
        name: "nvme-cli",
        why: "nvme, copied into the Linux guest of cargo xtask guest",
    },
    Package {
        name: "busybox-static",
        why: "the Linux guest's shell and tools, and the cpio that packs its initramfs",
    },
    Package {
        name: "bindfs",
        why: "the peer FUSE file system of the benchmarks and of pjdfstest",
    },
    Package {
        name: "python3",
        why: "maps files (mmap, madvise) for the tests of what the mount's page cache holds",
    },
    Package {
        name: "llvm-22",
        why: "llc-22, which compiles the Rust kernels' LLVM bitcode to BPF objects",
    },
    Package {
        name: "python3-venv",
        why: "a fresh virtual environment to pip-install the Python client into, in its test",
    },
    Package {
        name: "clang-19",
        why: "compiles the C kernels to eBPF",
    },
    Package {
        name: "g++",
        why: "compiles libFuzzer (libfuzzer-sys) for the fuzz targets of cargo xtask reliability",
    },
    Package {
        name: "rustc-web",
        why: "the Rust compiler used for the Cortex-R builds",
    },
    Package {
        name: "cargo-web",
        why: "cargo for the Cortex-R builds",
    },
    Package {
        name: "rust-web-src",
        why: "standard library sources for -Zbuild-std",
    },
    Package {
        name: "lld-22",
        why: "the LLVM linker behind rust-lld",
    },
    // Only recommended by rustc-web, and we install without recommends.
    Package {
        name: "rust-web-llvm",
        why: "rust-lld (a link to lld-22), the linker of the board image",
    },
];

/// QEMU with the `mps3-an536` (Cortex-R52) machine, and the x86-64 QEMU of the Linux guest:
/// bookworm-backports only (both, so that they share one qemu-system-common).
const QEMU: [Package; 2] = [
    Package {
        name: "qemu-system-arm",
        why: "runs the Cortex-R52 board image",
    },
    Package {
        name: "qemu-system-x86",
        why: "runs the Linux guest of cargo xtask guest (qemu-system-x86_64)",
    },
];

/// A crate whose binary `cargo install --locked` puts in cargo's bin folder, at a pinned
/// version (the suites' results are compared run to run, so the suite must not move).
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
    why: &'static str,
}

/// The POSIX suites of `cargo xtask posix`.
pub const PJDFSTEST: Tool = Tool {
    name: "pjdfstest",
    version: "0.2.2",
    why: "the POSIX conformance suite of cargo xtask posix",
};
pub const FSX: Tool = Tool {
    name: "fsx",
    version: "0.3.2",
    why: "the file-system exerciser of cargo xtask posix",
};
const TOOLS: [&Tool; 2] = [&PJDFSTEST, &FSX];

/// The users pjdfstest runs tests as (its default `dummy_auth` entries), each with a primary
/// group that exists.
const USERS: [&str; 2] = ["nobody", "tests"];

const BACKPORTS: &str = "bookworm-backports";
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/csd-bookworm-backports.sources";
/// The name the Debian cross toolchain is linked under in rustup.
pub const CROSS_TOOLCHAIN: &str = "debian-cross";

/// Checks and installs everything; see the module docs.
pub fn run() -> Result<()> {
    check_rust_components()?;
    let missing: Vec<&Package> = PACKAGES.iter().filter(|p| !installed(p.name)).collect();
    let qemu_ok = qemu_ready();
    let missing_users: Vec<&str> = USERS.into_iter().filter(|u| !user_ready(u)).collect();
    let missing_tools: Vec<&Tool> = TOOLS.into_iter().filter(|t| !t.ready()).collect();
    if missing.is_empty()
        && qemu_ok
        && missing_users.is_empty()
        && missing_tools.is_empty()
        && cross_toolchain_linked()?
    {
        check_fuse_device()?;
        enable_fuse_uring();
        eprintln!("deps: everything is installed");
        return Ok(());
    }

    let mut steps: Vec<Step> = Vec::new();
    if !qemu_ok && !backports_configured() {
        let uri = bookworm_mirror()?;
        steps.push(Step::AddBackports { uri });
    }
    if !missing.is_empty() || !qemu_ok {
        steps.push(Step::Update);
    }
    if !missing.is_empty() {
        steps.push(Step::Install(missing.iter().map(|p| p.name).collect()));
    }
    if !qemu_ok {
        steps.push(Step::InstallBackports(
            QEMU.iter().map(|p| p.name).collect(),
        ));
    }
    for user in &missing_users {
        eprintln!("deps: missing the user {user} (pjdfstest runs tests as it)");
        steps.push(Step::AddUser {
            name: user,
            group_exists: Group::from_name(user).ok().flatten().is_some(),
        });
    }
    for p in &missing {
        eprintln!("deps: missing {} ({})", p.name, p.why);
    }
    if !qemu_ok {
        for p in &QEMU {
            eprintln!("deps: missing {} from {BACKPORTS} ({})", p.name, p.why);
        }
    }

    if !steps.is_empty() && !is_root() {
        let mut text = String::from(
            "run these commands as root (or with sudo), then run `cargo xtask deps` again:\n",
        );
        for step in &steps {
            text.push_str("    ");
            text.push_str(&step.shell());
            text.push('\n');
        }
        bail!("missing packages or users, and adding them needs root; {text}");
    }
    for step in &steps {
        step.apply()?;
    }
    if !qemu_has_board() {
        bail!("qemu-system-arm was installed but has no mps3-an536 machine; install it from {BACKPORTS}");
    }
    if let Some(user) = USERS.into_iter().find(|u| !user_ready(u)) {
        bail!("the user {user} was added but it or its primary group is still missing; check /etc/passwd and /etc/group");
    }
    // Into cargo's bin folder, like any `cargo install`, so it never needs root.
    for tool in &missing_tools {
        tool.install()?;
    }
    // Linking is per user (rustup keeps toolchains in the caller's home), so it never needs root.
    if !cross_toolchain_linked()? {
        eprintln!("deps: linking the Debian cross compiler into rustup as `{CROSS_TOOLCHAIN}`");
        cmd::run(&mut link_command())?;
        if !cross_toolchain_linked()? {
            bail!("the `{CROSS_TOOLCHAIN}` toolchain is linked but /usr has no usable rustc, rust-src or rust-lld; reinstall rustc-web rust-web-src rust-web-llvm lld-22");
        }
    }
    check_fuse_device()?;
    enable_fuse_uring();
    eprintln!("deps: everything is installed");
    Ok(())
}

/// Fails with what to do when the cross toolchain is not ready (for tasks that need it).
pub fn require_cross_toolchain() -> Result<()> {
    if !cross_toolchain_linked()? {
        bail!(
            "the `{CROSS_TOOLCHAIN}` cross toolchain is not set up: run `cargo xtask deps` first"
        );
    }
    Ok(())
}

fn link_command() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["toolchain", "link", CROSS_TOOLCHAIN, "/usr"]);
    cmd
}

/// rustfmt and clippy come with the rustup toolchain and cannot be downloaded here.
fn check_rust_components() -> Result<()> {
    for (tool, args) in [
        ("rustfmt", ["fmt", "--version"]),
        ("clippy", ["clippy", "--version"]),
    ] {
        let ok = Command::new("cargo")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "cargo {} is not available: add it with `rustup component add {tool}`",
                args[0]
            );
        }
    }
    Ok(())
}

/// One install step, runnable or printable as a shell command.
enum Step {
    AddBackports {
        uri: String,
    },
    Update,
    Install(Vec<&'static str>),
    InstallBackports(Vec<&'static str>),
    /// A user without a home; its group is the one of the same name (made if missing).
    AddUser {
        name: &'static str,
        group_exists: bool,
    },
}

impl Step {
    fn backports_source(uri: &str) -> String {
        format!(
            "Types: deb\nURIs: {uri}\nSuites: {BACKPORTS}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    }

    fn command(&self) -> Option<Command> {
        match self {
            Step::AddBackports { .. } => None,
            Step::Update => {
                let mut cmd = apt();
                cmd.arg("update");
                Some(cmd)
            }
            Step::Install(names) => {
                let mut cmd = apt_install();
                cmd.args(names);
                Some(cmd)
            }
            Step::InstallBackports(names) => {
                let mut cmd = apt_install();
                cmd.args(["-t", BACKPORTS]).args(names);
                Some(cmd)
            }
            Step::AddUser { name, group_exists } => {
                let mut cmd = Command::new("useradd");
                cmd.args(["--no-create-home", "--shell", "/usr/sbin/nologin"]);
                if *group_exists {
                    cmd.args(["--gid", name]);
                } else {
                    cmd.arg("--user-group");
                }
                cmd.arg(name).stdin(Stdio::null());
                Some(cmd)
            }
        }
    }

    /// The step as a line to paste into a root shell.
    fn shell(&self) -> String {
        match (self, self.command()) {
            (Step::AddBackports { uri }, _) => format!(
                "printf '{}' | tee {BACKPORTS_SOURCE}",
                Self::backports_source(uri).replace('\n', "\\n")
            ),
            (Step::AddUser { .. }, Some(cmd)) => cmd::show(&cmd),
            (_, Some(cmd)) => format!("DEBIAN_FRONTEND=noninteractive {}", cmd::show(&cmd)),
            (_, None) => String::new(),
        }
    }

    fn apply(&self) -> Result<()> {
        match (self, self.command()) {
            (Step::AddBackports { uri }, _) => {
                eprintln!("+ write {BACKPORTS_SOURCE} (mirror {uri})");
                fs::write(BACKPORTS_SOURCE, Self::backports_source(uri))
                    .with_context(|| format!("could not write {BACKPORTS_SOURCE}"))
            }
            (_, Some(mut cmd)) => cmd::run(&mut cmd),
            (_, None) => Ok(()),
        }
    }
}

/// apt-get, quiet, waiting for a lock held by the machine's own boot-time apt runs.
fn apt() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-o", "DPkg::Lock::Timeout=300"])
        .stdin(Stdio::null());
    cmd
}

fn apt_install() -> Command {
    let mut cmd = apt();
    cmd.args(["install", "-y", "--no-install-recommends"]);
    cmd
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|out| out.status.success() && out.stdout == b"installed")
        .unwrap_or(false)
}

/// Whether `name` exists and so does its primary group (pjdfstest looks both up).
fn user_ready(name: &str) -> bool {
    User::from_name(name)
        .ok()
        .flatten()
        .is_some_and(|u| Group::from_gid(u.gid).ok().flatten().is_some())
}

impl Tool {
    /// Whether `NAME --version` answers with the pinned version (so it is on the PATH too).
    fn ready(&self) -> bool {
        Command::new(self.name)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).trim()
                        == format!("{} {}", self.name, self.version)
            })
    }

    /// `cargo install --locked NAME@VERSION` (replacing another installed version), in a
    /// throwaway target directory rather than the project's.
    fn install(&self) -> Result<()> {
        eprintln!(
            "deps: missing {} {} ({})",
            self.name, self.version, self.why
        );
        let mut cargo = Command::new("cargo");
        cargo
            .args(["install", "--locked"])
            .arg(format!("{}@{}", self.name, self.version))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .stdin(Stdio::null());
        cmd::run(&mut cargo)?;
        if !self.ready() {
            bail!(
                "{} {} is installed but `{} --version` does not answer with that version: \
                 put cargo's bin folder (usually ~/.cargo/bin) first on the PATH",
                self.name,
                self.version,
                self.name
            );
        }
        Ok(())
    }
}

/// Both QEMUs: the ARM one with the board's machine, and the x86-64 one.
fn qemu_ready() -> bool {
    qemu_has_board() && cmd::on_path("qemu-system-x86_64")
}

/// Whether the installed QEMU has the Cortex-R52 board.
fn qemu_has_board() -> bool {
    Command::new("qemu-system-arm")
        .args(["-machine", "help"])
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("mps3-an536"))
        .unwrap_or(false)
}

fn cross_toolchain_linked() -> Result<bool> {
    if !cmd::on_path("rustup") {
        bail!("rustup is not on the PATH: the project builds with rustup's toolchains");
    }
    let list = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
    let linked = list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(CROSS_TOOLCHAIN));
    // A link to a /usr without the Debian compiler is as good as none; `exists` follows
    // rust-lld's link, so a dangling one (lld-22 missing) counts as missing too.
    Ok(linked
        && Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/lib/rustlib/src").exists()
        && Path::new("/usr/bin/rust-lld").exists())
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn check_fuse_device() -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse does not exist: load the fuse kernel module (modprobe fuse) or give the container the device");
    }
    Ok(())
}

/// The `fuse` module's switch for FUSE over io_uring (Linux 6.14 and later).
const FUSE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Turns on FUSE over io_uring, which the mount then takes its requests through (a kernel
/// setting: it lasts until the next boot). Without it, or on an older kernel, mounts take
/// them through `/dev/fuse`, only slower: so this only says what it could not do.
fn enable_fuse_uring() {
    match fs::read_to_string(FUSE_URING) {
        Ok(on) if on.trim() == "Y" => {}
        Ok(_) if is_root() => match fs::write(FUSE_URING, "Y") {
            Ok(()) => eprintln!("deps: turned on FUSE over io_uring ({FUSE_URING})"),
            Err(e) => eprintln!("deps: could not turn on FUSE over io_uring ({FUSE_URING}: {e}); mounts use /dev/fuse"),
        },
        Ok(_) => eprintln!("deps: FUSE over io_uring is off; as root, `echo Y > {FUSE_URING}` turns it on (mounts use /dev/fuse meanwhile)"),
        Err(_) => eprintln!("deps: this kernel has no FUSE over io_uring (Linux 6.14 and later); mounts use /dev/fuse"),
    }
}

/// Every apt source file, as (path, text).
fn apt_sources() -> Vec<(String, String)> {
    let mut files = vec!["/etc/apt/sources.list".to_string()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext == "list" || ext == "sources" {
                files.push(path.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|path| fs::read_to_string(&path).ok().map(|text| (path, text)))
        .collect()
}

/// Whether an enabled `deb` source already names bookworm-backports.
fn backports_configured() -> bool {
    apt_sources().iter().any(|(_, text)| {
        stanzas(text).any(|st| {
            st.is_deb()
                && st.enabled()
                && st.field("Suites").is_some_and(|s| has_word(s, BACKPORTS))
        }) || text
            .lines()
            .map(str::trim)
            .any(|l| l.starts_with("deb ") && has_word(l, BACKPORTS))
    })
}

fn has_word(text: &str, word: &str) -> bool {
    text.split_whitespace().any(|w| w == word)
}

/// One deb822 stanza.
struct Stanza<'a> {
    lines: Vec<&'a str>,
}

impl Stanza<'_> {
    /// A field's value; field names are case-insensitive in deb822.
    fn field(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn is_deb(&self) -> bool {
        self.field("Types").is_none_or(|t| has_word(t, "deb"))
    }

    fn enabled(&self) -> bool {
        !self
            .field("Enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
    }
}

/// The deb822 stanzas of `text` (separated by blank lines; comments skipped).
fn stanzas(text: &str) -> impl Iterator<Item = Stanza<'_>> {
    let mut all = Vec::new();
    let mut current = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            if !current.is_empty() {
                all.push(Stanza {
                    lines: std::mem::take(&mut current),
                });
            }
        } else if !trimmed.starts_with('#') {
            current.push(trimmed);
        }
    }
    if !current.is_empty() {
        all.push(Stanza { lines: current });
    }
    all.into_iter()
}

/// The mirror URI the machine's existing source uses for the `bookworm` suite, read from the
/// deb822 `.sources` files or the one-line `sources.list` format.
fn bookworm_mirror() -> Result<String> {
    mirror_in(apt_sources().iter().map(|(_, text)| text.as_str()))
}

fn mirror_in<'a>(sources: impl Iterator<Item = &'a str>) -> Result<String> {
    for text in sources {
        for st in stanzas(text) {
            let suites = st.field("Suites").unwrap_or("");
            if st.is_deb() && st.enabled() && has_word(suites, "bookworm") {
                if let Some(uri) = st.field("URIs").and_then(|u| u.split_whitespace().next()) {
                    return Ok(uri.to_string());
                }
            }
        }
        // One-line format: deb [options] URI suite components...
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("deb ") else {
                continue;
            };
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(opts) => opts.split_once(']').map_or("", |(_, after)| after),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some("bookworm")) = (words.next(), words.next()) {
                return Ok(uri.to_string());
            }
        }
    }
    bail!("no apt source names the Debian `bookworm` suite, so the mirror for {BACKPORTS} is unknown; add a bookworm source first")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirror is read from a deb822 stanza whose suites include bookworm, skipping security.
    #[test]
    fn mirror_from_deb822() {
        let text = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_in([text].into_iter()).unwrap(),
            "http://mirror.example/debian"
        );
    }

    /// The machine's own deb822 file, verbatim (comments between fields included).
    #[test]
    fn mirror_from_the_machines_debian_sources() {
        let text = "Types: deb\n# http://snapshot.example/archive/debian/20250520T000000Z\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\n# http://snapshot.example/archive/debian-security/20250520T000000Z\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        assert_eq!(
            mirror_in([text].into_iter()).unwrap(),
            "http://deb.example/debian"
        );
    }

    /// A disabled stanza is not a mirror, and blank lines with spaces still separate stanzas.
    #[test]
    fn disabled_stanzas_are_skipped() {
        let text = "Types: deb\nURIs: http://old.example/debian\nSuites: bookworm\nEnabled: no\n  \nTypes: deb\nuris: http://new.example/debian\nsuites: bookworm\n";
        assert_eq!(
            mirror_in([text].into_iter()).unwrap(),
            "http://new.example/debian"
        );
    }

    /// The one-line format works with and without options in brackets.
    #[test]
    fn mirror_from_one_line_format() {
        let plain = "# comment\ndeb http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_in([plain].into_iter()).unwrap(),
            "http://m.example/debian"
        );
        let opts = "deb [arch=amd64 signed-by=/k.gpg] http://o.example/debian bookworm main\n";
        assert_eq!(
            mirror_in([opts].into_iter()).unwrap(),
            "http://o.example/debian"
        );
    }

    /// A missing user is added without a home, with a group of its name unless one exists.
    #[test]
    fn add_user_commands() {
        let fresh = Step::AddUser {
            name: "tests",
            group_exists: false,
        };
        assert_eq!(
            fresh.shell(),
            "useradd --no-create-home --shell /usr/sbin/nologin --user-group tests"
        );
        let grouped = Step::AddUser {
            name: "tests",
            group_exists: true,
        };
        assert_eq!(
            grouped.shell(),
            "useradd --no-create-home --shell /usr/sbin/nologin --gid tests tests"
        );
    }

    /// Without any bookworm source the error says so instead of guessing a host.
    #[test]
    fn no_bookworm_source_is_an_error() {
        let text = "deb http://m.example/debian trixie main\n";
        let err = mirror_in([text].into_iter()).unwrap_err().to_string();
        assert!(err.contains("bookworm"), "{err}");
    }
}
