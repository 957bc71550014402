//! The board image in QEMU (`mps3-an536`, Cortex-R52), its UART0 on a Unix socket, and the
//! device thread's backend over it.
//!
//! QEMU's standard output is the board's defmt log (frames, in `defmt.bin` of the board's
//! temporary folder) and its standard error the board's panics and QEMU's own messages
//! (`qemu.log`). [`QemuBoard::board_log`] and [`QemuDevice::board_log`] decode the log with
//! the ELF QEMU was started with; a board that exits names its last log line in the error.

use std::{
    fs::File,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command as Process, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use common::{
    command::{Command, Completion, Submission},
    link::DeviceInfo,
    zns::IdentifyZns,
    Status,
};

use super::{BoardLog, BoardLogError, Link, LinkBackend, LinkEnd, LinkError, LinkStats, LogLine};
use crate::{device::runner::Runner, driver::Driver};

/// How to start the board.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The board's `link` ELF image.
    pub elf: PathBuf,
    /// The NAND image file the board opens (created by the board if missing); `None` keeps the
    /// NAND in board memory.
    pub image: Option<PathBuf>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Queue pairs the host side offers.
    pub queues: u16,
    /// Commands in flight per queue pair.
    pub queue_depth: usize,
}

impl QemuOptions {
    /// The board image built by `cargo xtask board build` in this source tree (or the path in
    /// `CSD_BOARD_ELF`), over the NAND image `image`.
    pub fn new(image: Option<PathBuf>) -> Self {
        let elf = std::env::var_os("CSD_BOARD_ELF")
            .map(PathBuf::from)
            .unwrap_or_else(default_elf);
        QemuOptions {
            elf,
            image,
            qemu: PathBuf::from("qemu-system-arm"),
            queues: 4,
            queue_depth: 32,
        }
    }
}

/// Where `cargo xtask board build` leaves the link image.
pub fn default_elf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../boards/mps3-an536/target/armv8r-none-eabihf/release/link")
}

/// A QEMU process running the board, and the link to it.
#[derive(Debug)]
pub struct QemuBoard {
    child: Child,
    link: Link<UnixStream>,
    dir: PathBuf,
    /// The image QEMU runs: its defmt table decodes the board's log.
    elf: PathBuf,
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// How long a failed exchange waits for QEMU to exit before taking the board for alive.
const EXIT_GRACE: Duration = Duration::from_secs(2);

impl QemuBoard {
    /// Starts QEMU (which waits for the host on the socket, so no byte is lost), connects, and
    /// opens the session.
    pub fn start(options: &QemuOptions) -> Result<Self, LinkError> {
        if !options.elf.is_file() {
            return Err(LinkError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no board image at {}: build it with `cargo xtask board build`",
                    options.elf.display()
                ),
            )));
        }
        let dir = std::env::temp_dir().join(format!(
            "csd-qemu-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("uart0.sock");
        let mut semihosting = String::from("enable=on,target=native,arg=link");
        if let Some(image) = &options.image {
            let image = std::path::absolute(image)?;
            let image = image.to_str().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "image path is not UTF-8")
            })?;
            if image.contains(',') {
                return Err(LinkError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "QEMU cannot take an image path with a comma",
                )));
            }
            semihosting.push_str(",arg=");
            semihosting.push_str(image);
        }
        let child = Process::new(&options.qemu)
            .args(["-machine", "mps3-an536", "-cpu", "cortex-r52", "-nographic"])
            .args(["-monitor", "none", "-semihosting-config", &semihosting])
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=on", socket.display()))
            .arg("-kernel")
            .arg(&options.elf)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("defmt.bin"))?)
            .stderr(File::create(dir.join("qemu.log"))?)
            .spawn()
            .map_err(|e| {
                LinkError::Io(std::io::Error::new(
                    e.kind(),
                    format!(
                        "could not start {}: {e} (install it with `cargo xtask deps`)",
                        options.qemu.display()
                    ),
                ))
            })?;
        let mut board = QemuBoard {
            child,
            link: Link::new(connect(&socket)?),
            dir,
            elf: options.elf.clone(),
        };
        board.link.hello().map_err(|e| board.explain(e))?;
        Ok(board)
    }

    /// The link.
    pub fn link(&mut self) -> &mut Link<UnixStream> {
        &mut self.link
    }

    /// QEMU's own messages and the board's panics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default()
    }

    /// The file QEMU writes the board's defmt frames to (decoded by [`Self::board_log`]).
    pub fn defmt_path(&self) -> PathBuf {
        self.dir.join("defmt.bin")
    }

    /// What the board has logged so far, decoded with the table of the image it runs.
    pub fn board_log(&self) -> Result<Vec<LogLine>, BoardLogError> {
        read_board_log(&self.elf, &self.defmt_path())
    }

    /// Turns a failure into one that says whether QEMU died: its exit status, what the board
    /// wrote on standard error (panics, start-up failures), and its last log line when that
    /// says something more.
    fn explain(&mut self, e: LinkError) -> LinkError {
        // A board that stops closes the socket a moment before QEMU exits.
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(status) => break status,
                Err(_) => break None,
            }
        };
        let Some(status) = status else {
            return e;
        };
        let stderr = self.log();
        let mut why = format!("{status}: {}", stderr.trim());
        if let Some(last) = self.board_log().ok().and_then(|mut lines| lines.pop()) {
            if !stderr.contains(&last.message) {
                why.push_str(&format!("; the board's last log line: {last}"));
            }
        }
        LinkError::Exited(why)
    }

    /// Runs `exchange` over the link; a failure says whether QEMU died (see `explain`).
    pub fn on_link<T>(
        &mut self,
        exchange: impl FnOnce(&mut Link<UnixStream>) -> Result<T, LinkError>,
    ) -> Result<T, LinkError> {
        exchange(&mut self.link).map_err(|e| self.explain(e))
    }

    /// Runs one command over the link to its end.
    pub fn call(
        &mut self,
        submission: &Submission,
        host_len: usize,
        data: &[u8],
    ) -> Result<(Completion, Vec<u8>), LinkError> {
        self.on_link(|link| link.call(submission, host_len, data))
    }

    /// Stops QEMU (the board has no shutdown command: every completed write is already on the
    /// NAND image, as after a power cut).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Decodes the frames in `frames` with the defmt table of `elf`.
fn read_board_log(elf: &Path, frames: &Path) -> Result<Vec<LogLine>, BoardLogError> {
    BoardLog::from_elf(elf)?.decode_file(frames)
}

/// Connects to QEMU's socket, waiting for QEMU to create it.
fn connect(socket: &Path) -> Result<UnixStream, LinkError> {
    let started = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if started.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The device thread's backend over the board's link.
pub type QemuBackend = LinkBackend<QemuBoard>;

impl LinkEnd for QemuBoard {
    fn on_link<T>(
        &mut self,
        exchange: impl FnOnce(&mut Link<UnixStream>) -> Result<T, LinkError>,
    ) -> Result<T, LinkError> {
        QemuBoard::on_link(self, exchange)
    }
}

/// A device running in QEMU behind the host's queue pairs: the same driver as in-process.
#[derive(Debug)]
pub struct QemuDevice {
    runner: Runner<QemuBackend>,
    identify: IdentifyZns,
    info: DeviceInfo,
    /// The board's image and the file of its defmt frames (the board is in the device thread).
    elf: PathBuf,
    frames: PathBuf,
}

impl QemuDevice {
    /// Starts QEMU with the board image and the device thread in front of it.
    pub fn start(options: &QemuOptions) -> Result<Self, LinkError> {
        let mut board = QemuBoard::start(options)?;
        let info = board.link().info().unwrap_or(DeviceInfo {
            wire_version: common::WIRE_VERSION,
            max_data_bytes: common::link::MAX_DATA_BYTES,
        });
        let identify = identify(&mut board)?;
        let (elf, frames) = (board.elf.clone(), board.defmt_path());
        let runner = Runner::start(QemuBackend::new(board), options.queues, options.queue_depth)?;
        Ok(QemuDevice {
            runner,
            identify,
            info,
            elf,
            frames,
        })
    }

    /// A driver over every queue pair: each thread that uses it submits on its own (see
    /// [`Driver`]).
    pub fn driver(&self) -> Driver {
        let queues = (0..self.runner.queues()).map(|q| self.runner.queue(q));
        Driver::new(queues.collect(), self.identify)
    }

    /// A driver on queue pair `qid` (modulo the number of queues).
    pub fn driver_on(&self, qid: u16) -> Driver {
        Driver::new(vec![self.runner.queue(qid)], self.identify)
    }

    /// What the device said when it started.
    pub fn identify(&self) -> IdentifyZns {
        self.identify
    }

    /// What the board said when the link opened.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// What the board has logged so far, decoded with the table of the image it runs (read it
    /// before [`Self::stop`], which removes the board's files).
    pub fn board_log(&self) -> Result<Vec<LogLine>, BoardLogError> {
        read_board_log(&self.elf, &self.frames)
    }

    /// Stops the device thread and QEMU; returns the link's counters.
    pub fn stop(self) -> Option<LinkStats> {
        let backend = self.runner.stop()?;
        let mut board = backend.into_end();
        let stats = board.link().stats();
        board.stop();
        Some(stats)
    }
}

/// Asks the board to identify itself.
fn identify(board: &mut QemuBoard) -> Result<IdentifyZns, LinkError> {
    let sub = Submission::new(common::command::CommandId(0), Command::Identify);
    let (done, bytes) = board.call(&sub, 4096, &[])?;
    if done.status != Status::Success {
        return Err(LinkError::Io(std::io::Error::other(format!(
            "the board refused Identify: {}",
            done.status
        ))));
    }
    postcard::from_bytes(&bytes).map_err(|_| {
        LinkError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the board's Identify reply is malformed",
        ))
    })
}
