//! `cargo xtask board run|test|size|build`: the firmware on the Cortex-R52 in QEMU, and its
//! self-test on a Cortex-R5F too.
//!
//! R5F: QEMU 10's `xlnx-zcu102` creates two Cortex-R5F cores (`-smp 6`, CPUs 4 and 5), and
//! `-device loader,file=ELF,cpu-num=4` loads an image and sets that core's PC, but the core
//! never executes an instruction (`-d in_asm,int` logs none): the RPU starts powered off and
//! upstream QEMU models nothing that releases it (even with
//! `-global driver=xlnx-zynqmp,property=boot-cpu,value=rpu-cpu[0]`). The `none` machine runs
//! a bare `-cpu cortex-r5f` with RAM at 0 and semihosting, which is all the self-test needs,
//! so the R5F self-test runs there (no UART: the link device stays Cortex-R52 only).

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::cmd;

/// What to do with the board image.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Build the self-test image and boot it in QEMU, showing its output.
    Run,
    /// Boot the self-test image and diff its output against tests/selftest.expected.
    Test,
    /// Report code (text + rodata) and static RAM (data + bss) of the images.
    Size,
    /// Build the images (the self-test and the link device that `--device qemu` boots).
    Build,
}

const BOARD: &str = "boards/mps3-an536";
const TARGET: &str = "armv8r-none-eabihf";
const SELFTEST: &str = "selftest";
pub const LINK: &str = "link";
const QEMU_TIMEOUT: Duration = Duration::from_secs(120);

/// A core the self-test runs on: its Rust target and how QEMU boots an image on it.
#[derive(Debug, Clone, Copy)]
pub struct Core {
    pub name: &'static str,
    target: &'static str,
    qemu: &'static [&'static str],
    /// The QEMU option that boots the ELF (`-kernel ELF`, or a loader device).
    boot: fn(&Path) -> Vec<std::ffi::OsString>,
}

/// The MPS3 AN536 board: the self-test and the link device.
pub const R52: Core = Core {
    name: "Cortex-R52",
    target: TARGET,
    qemu: &["-machine", "mps3-an536", "-cpu", "cortex-r52"],
    boot: |elf| vec!["-kernel".into(), elf.into()],
};

/// A bare Cortex-R5F (see the module docs): the self-test only.
pub const R5F: Core = Core {
    name: "Cortex-R5F",
    target: "armv7r-none-eabihf",
    qemu: &["-machine", "none", "-cpu", "cortex-r5f", "-m", "512M"],
    boot: |elf| {
        let mut loader = std::ffi::OsString::from("loader,cpu-num=0,file=");
        loader.push(elf);
        vec!["-device".into(), loader]
    },
};

/// Runs `action`.
pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Run => {
            let elf = build()?;
            let out = boot(&R52, &elf)?;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            if out.code != Some(0) {
                bail!("the board exited with {:?}", out.code);
            }
            Ok(())
        }
        Action::Test => test(),
        Action::Size => {
            let selftest = build()?;
            for elf in [elf_path(LINK), selftest] {
                let size = size(&elf)?;
                println!(
                    "{}: code {} bytes (text + rodata), static RAM {} bytes (data + bss)",
                    elf.display(),
                    size.code,
                    size.ram
                );
            }
            Ok(())
        }
        Action::Build => build().map(|_| ()),
    }
}

/// The kernels the self-test embeds, as objects under `target/kernels/` (their sources under
/// `kernels/`). Each becomes `boards/mps3-an536/target/kernels/<file name>.img`.
const SELFTEST_KERNELS: [&str; 4] = [
    "passthrough",
    "entropy",
    "tests/hostile_infinite_loop",
    "tests/hostile_wild_load",
];

/// Builds the board images (release profile: optimized for size), the self-test and the link
/// device, and returns the self-test ELF's path. The self-test's kernel images are linked
/// first.
pub fn build() -> Result<PathBuf> {
    crate::deps::require_cross_toolchain()?;
    link_kernels()?;
    let dir = crate::root().join(BOARD);
    let target_dir = dir.join("target");
    cmd::run(
        board_cargo(&dir)?
            .args(["build", "--locked", "--release", "--bins", "--target-dir"])
            .arg(&target_dir),
    )?;
    Ok(elf_path(SELFTEST))
}

/// Links the self-test's kernels into program images with the host loader (`csd kernel link`),
/// building the kernel objects first when one is missing or older than its source. xtask does
/// not link the loader in (it stays free of the product crates, so it builds on a bare
/// machine); it runs the `csd` binary through cargo instead.
fn link_kernels() -> Result<()> {
    let root = crate::root();
    let objects = root.join("target/kernels");
    let stale = SELFTEST_KERNELS.iter().any(|name| {
        let modified = |p: PathBuf| fs::metadata(p).and_then(|m| m.modified()).ok();
        let obj = modified(objects.join(format!("{name}.o")));
        let src = modified(root.join("kernels").join(format!("{name}.c")));
        obj.is_none() || src > obj
    });
    if stale {
        crate::kernels::build()?;
    }
    let images = root.join(BOARD).join("target/kernels");
    fs::create_dir_all(&images)
        .with_context(|| format!("could not create {}", images.display()))?;
    for name in SELFTEST_KERNELS {
        let file = Path::new(name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(name);
        cmd::run(
            cmd::cargo(&root)
                .args([
                    "run",
                    "--quiet",
                    "--locked",
                    "-p",
                    "host-shell",
                    "--bin",
                    "csd",
                ])
                .args(["--", "kernel", "link"])
                .arg(objects.join(format!("{name}.o")))
                .arg("-o")
                .arg(images.join(format!("{file}.img"))),
        )?;
    }
    Ok(())
}

/// [`cmd::cross_cargo`] for the board's images, with source paths named from fixed prefixes:
/// `/csd` for this checkout, `/cargo` for the crates' sources and `/rust` for the standard
/// library's. Panic locations carry their file's path, so without this the images' size (and
/// their bytes) would depend on where those directories are: a clone at a longer path once
/// made the link device 24 bytes bigger.
fn board_cargo(dir: &Path) -> Result<Command> {
    let sysroot = cmd::output(
        Command::new("rustc")
            .arg(format!("+{}", crate::deps::CROSS_TOOLCHAIN))
            .args(["--print", "sysroot"]),
    )?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let remaps = [
        (
            PathBuf::from(sysroot.trim()).join("lib/rustlib/src/rust"),
            "/rust",
        ),
        (cargo_home, "/cargo"),
        (crate::root(), "/csd"),
    ];
    let flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect();
    let mut cargo = cmd::cross_cargo(dir);
    // The board's link scripts come from its build script, not from rustflags, so these flags
    // replace nothing.
    cargo.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    Ok(cargo)
}

/// Builds the self-test for the Cortex-R5F (after [`build`], which links its kernels); returns
/// its ELF's path.
pub fn build_r5f() -> Result<PathBuf> {
    let dir = crate::root().join(BOARD);
    let target_dir = dir.join("target");
    cmd::run(
        board_cargo(&dir)?
            .args(["build", "--locked", "--release", "--bin", SELFTEST])
            .args(["--target", R5F.target, "--target-dir"])
            .arg(&target_dir),
    )?;
    Ok(target_dir.join(R5F.target).join("release").join(SELFTEST))
}

/// Where the release build leaves binary `name`.
pub fn elf_path(name: &str) -> PathBuf {
    crate::root()
        .join(BOARD)
        .join("target")
        .join(TARGET)
        .join("release")
        .join(name)
}

/// Builds the self-test, boots it on the Cortex-R52 and on the Cortex-R5F, and compares each
/// output with the one reference file.
pub fn test() -> Result<()> {
    let r52 = build()?;
    let r5f = build_r5f()?;
    check_selftest(&R52, &r52)?;
    check_selftest(&R5F, &r5f)
}

fn check_selftest(core: &Core, elf: &Path) -> Result<()> {
    let out = boot(core, elf)?;
    let expected_path = crate::root().join(BOARD).join("tests/selftest.expected");
    let expected = fs::read_to_string(&expected_path)
        .with_context(|| format!("could not read {}", expected_path.display()))?;
    if out.stdout != expected {
        eprintln!("--- expected ({})\n{expected}", expected_path.display());
        eprintln!("--- got\n{}", out.stdout);
        eprintln!("--- stderr\n{}", out.stderr);
        bail!(
            "the {} self-test output differs from {}",
            core.name,
            expected_path.display()
        );
    }
    if out.code != Some(0) {
        bail!(
            "the {} self-test exited with {:?}: {}",
            core.name,
            out.code,
            out.stderr.trim()
        );
    }
    eprintln!(
        "board: {} self-test output matches {} ({} lines); QEMU ran {:.1} s",
        core.name,
        expected_path.display(),
        expected.lines().count(),
        out.took.as_secs_f64()
    );
    // Timings the board measured (never part of the golden text).
    for line in out.stderr.lines().filter(|l| l.starts_with("perf: ")) {
        eprintln!("board: {}: {line}", core.name);
    }
    Ok(())
}

/// What a QEMU run printed and how it ended.
pub struct Boot {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
    /// Wall time from starting QEMU to its exit.
    pub took: Duration,
}

/// Boots `elf` on `core` in QEMU with semihosting, ending it after a time limit. Its output is
/// read while it runs, so a chatty board never blocks on a full pipe.
pub fn boot(core: &Core, elf: &Path) -> Result<Boot> {
    let mut qemu = Command::new("qemu-system-arm");
    qemu.args(core.qemu)
        .args(["-semihosting", "-nographic"])
        .args(["-monitor", "none", "-serial", "null"])
        .args((core.boot)(elf))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = qemu
        .spawn()
        .context("could not start qemu-system-arm: run `cargo xtask deps`")?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > QEMU_TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        bail!(
            "the board did not finish within {} s (`{}`); it printed:\n{stdout}{stderr}",
            QEMU_TIMEOUT.as_secs(),
            cmd::show(&qemu)
        );
    };
    Ok(Boot {
        stdout,
        stderr,
        code: status.code(),
        took: started.elapsed(),
    })
}

/// Code and static RAM of an image, in bytes.
pub struct Size {
    pub code: u64,
    pub ram: u64,
}

/// Sums the allocated sections of `elf`: read-only ones are code, writable ones static RAM.
pub fn size(elf: &Path) -> Result<Size> {
    use object::{Object, ObjectSection, SectionFlags};
    let bytes = fs::read(elf).with_context(|| format!("could not read {}", elf.display()))?;
    let file = object::File::parse(&*bytes).context("the board image is not an ELF file")?;
    let mut size = Size { code: 0, ram: 0 };
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags, .. } = section.flags() else {
            continue;
        };
        if !sh_flags.contains(object::elf::SHF_ALLOC) {
            continue;
        }
        let name = section.name().unwrap_or("");
        // The stacks are reserved RAM, not static data of the firmware.
        if name == ".stacks" || name.starts_with(".filler") {
            continue;
        }
        if sh_flags.contains(object::elf::SHF_WRITE) {
            size.ram += section.size();
        } else {
            size.code += section.size();
        }
    }
    Ok(size)
}
