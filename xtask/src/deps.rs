//! `cargo xtask deps`: installs what the project needs on a bare Debian bookworm machine.
//!
//! It checks first and installs only what is missing, so on a ready machine it takes a second.
//! As root it installs; otherwise it prints the exact commands and fails. QEMU comes from the
//! bookworm-backports suite (bookworm's own 7.2 has no `mps3-an536` machine); the suite is added
//! with the mirror URI the machine's existing Debian source already names.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

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
        why: "file-system benchmarks and load tests",
    },
    Package {
        name: "clang-19",
        why: "compiles the C kernels to eBPF",
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
        why: "rust-lld, the linker of the Cortex-R builds",
    },
];

/// QEMU with the `mps3-an536` (Cortex-R52) machine: bookworm-backports only.
const QEMU: Package = Package {
    name: "qemu-system-arm",
    why: "runs the Cortex-R52 board image",
};
const BACKPORTS: &str = "bookworm-backports";
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/csd-bookworm-backports.sources";
/// The name the Debian cross toolchain is linked under in rustup.
pub const CROSS_TOOLCHAIN: &str = "debian-cross";

/// Checks and installs everything; see the module docs.
pub fn run() -> Result<()> {
    let missing: Vec<&Package> = PACKAGES.iter().filter(|p| !installed(p.name)).collect();
    let qemu_ok = qemu_has_board();
    let cross_linked = cross_toolchain_linked()?;
    if missing.is_empty() && qemu_ok && cross_linked {
        check_fuse_device()?;
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
        steps.push(Step::InstallBackports(QEMU.name));
    }
    if !cross_linked {
        steps.push(Step::LinkToolchain);
    }

    for p in &missing {
        eprintln!("deps: missing {} ({})", p.name, p.why);
    }
    if !qemu_ok {
        eprintln!(
            "deps: missing {} from {BACKPORTS} ({})",
            QEMU.name, QEMU.why
        );
    }
    if !cross_linked {
        eprintln!("deps: rustup has no `{CROSS_TOOLCHAIN}` toolchain (the Debian cross compiler)");
    }

    if !is_root() {
        let mut text = String::from("run these commands as root, then try again:\n");
        for step in &steps {
            text.push_str("    ");
            text.push_str(&step.shell());
            text.push('\n');
        }
        bail!("missing tools, and installing them needs root; {text}");
    }
    for step in &steps {
        step.apply()?;
    }
    if !qemu_has_board() {
        bail!("qemu-system-arm was installed but has no mps3-an536 machine; install it from {BACKPORTS}");
    }
    check_fuse_device()?;
    eprintln!("deps: everything is installed");
    Ok(())
}

/// One install step, runnable or printable as a shell command.
enum Step {
    AddBackports { uri: String },
    Update,
    Install(Vec<&'static str>),
    InstallBackports(&'static str),
    LinkToolchain,
}

impl Step {
    fn backports_source(uri: &str) -> String {
        format!(
            "Types: deb\nURIs: {uri}\nSuites: {BACKPORTS}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    }

    fn shell(&self) -> String {
        match self {
            Step::AddBackports { uri } => format!(
                "printf '{}' > {BACKPORTS_SOURCE}",
                Self::backports_source(uri).replace('\n', "\\n")
            ),
            Step::Update => "apt-get update".into(),
            Step::Install(names) => {
                format!(
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
                    names.join(" ")
                )
            }
            Step::InstallBackports(name) => {
                format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -t {BACKPORTS} {name}")
            }
            Step::LinkToolchain => format!("rustup toolchain link {CROSS_TOOLCHAIN} /usr"),
        }
    }

    fn apply(&self) -> Result<()> {
        match self {
            Step::AddBackports { uri } => {
                eprintln!("+ write {BACKPORTS_SOURCE} (mirror {uri})");
                fs::write(BACKPORTS_SOURCE, Self::backports_source(uri))
                    .with_context(|| format!("could not write {BACKPORTS_SOURCE}"))
            }
            Step::Update => cmd::run(Command::new("apt-get").arg("update")),
            Step::Install(names) => cmd::run(apt_install().args(names)),
            Step::InstallBackports(name) => cmd::run(apt_install().args(["-t", BACKPORTS, name])),
            Step::LinkToolchain => cmd::run(Command::new("rustup").args([
                "toolchain",
                "link",
                CROSS_TOOLCHAIN,
                "/usr",
            ])),
        }
    }
}

fn apt_install() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .stdin(Stdio::null());
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
    // A link to a /usr without the Debian compiler is as good as none.
    Ok(
        linked
            && Path::new("/usr/bin/rustc").exists()
            && Path::new("/usr/lib/rustlib/src").exists(),
    )
}

fn is_root() -> bool {
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

fn backports_configured() -> bool {
    apt_sources().iter().any(|(_, text)| {
        text.lines().any(|line| {
            let line = line.trim();
            !line.starts_with('#') && line.split_whitespace().any(|word| word == BACKPORTS)
        })
    })
}

/// The mirror URI the machine's existing source uses for the `bookworm` suite, read from the
/// deb822 `.sources` files or the one-line `sources.list` format.
fn bookworm_mirror() -> Result<String> {
    mirror_in(apt_sources().iter().map(|(_, text)| text.as_str()))
}

fn mirror_in<'a>(sources: impl Iterator<Item = &'a str>) -> Result<String> {
    for text in sources {
        // deb822: stanzas separated by blank lines.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    let l = l.trim();
                    l.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .map(str::trim)
                })
            };
            if let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) {
                let is_deb =
                    field("Types").is_none_or(|t| t.split_whitespace().any(|t| t == "deb"));
                if is_deb && suites.split_whitespace().any(|s| s == "bookworm") {
                    if let Some(uri) = uris.split_whitespace().next() {
                        return Ok(uri.to_string());
                    }
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

    /// Without any bookworm source the error says so instead of guessing a host.
    #[test]
    fn no_bookworm_source_is_an_error() {
        let text = "deb http://m.example/debian trixie main\n";
        let err = mirror_in([text].into_iter()).unwrap_err().to_string();
        assert!(err.contains("bookworm"), "{err}");
    }
}
