//! The host end of the serial link to a board running the firmware (`common::link` frames).
//!
//! - [`Link`]: stop-and-wait exchange of frames over any byte stream, with retransmission on a
//!   `Nak`, a corrupt answer or a timeout (the device replays its last response to a repeated
//!   sequence number, so a retransmission never runs a command twice). Kernel runs go on in the
//!   background on the board; the host polls for their completions between other requests.
//! - [`qemu`]: starts the board image in QEMU with UART0 on a Unix socket, and [`QemuDevice`]
//!   puts a [`Link`] behind the device thread's [`Backend`], so the host's queues and driver
//!   work unchanged over QEMU.
//! - [`board_log`]: the board's defmt log, decoded with the table of the image it runs.

pub mod backend;
pub mod board_log;
pub mod qemu;
pub mod running;

use std::{
    io::{self, Read, Write},
    time::{Duration, Instant},
};

use common::{
    command::{Command, CommandId, Completion, Submission},
    link::{
        self, DeviceInfo, DeviceMessage, FrameReader, HostMessage, SubmissionEntry, MAX_BODY_BYTES,
        MAX_DATA_BYTES, MAX_FRAME_BYTES,
    },
    nvme,
};

pub use backend::{LinkBackend, LinkEnd};
pub use board_log::{BoardLog, BoardLogError, LogLine};
pub use qemu::{QemuDevice, QemuOptions};
pub use running::{AttachedDevice, Session};

/// Why an exchange over the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the link to the board failed: {0}")]
    Io(#[from] io::Error),
    #[error("the board did not answer within {0:?} (is QEMU running the link image?)")]
    Timeout(Duration),
    #[error("the command's {len} bytes of data exceed the link's {max} bytes per frame")]
    TooLarge { len: usize, max: u32 },
    #[error("the device speaks wire version {device}, this host {host}")]
    WireVersion { device: u16, host: u16 },
    #[error("the board's QEMU exited ({0}); see its log")]
    Exited(String),
    #[error(
        "the command has a field NVMe cannot express (a transfer of no blocks or of more than \
         65,536, a zone report of more than 4 GiB)"
    )]
    Encode,
}

/// Counters of a link, for throughput and retransmission figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames sent, retransmissions included.
    pub frames_sent: u64,
    /// Retransmissions (after a Nak, a corrupt answer or a timeout).
    pub retransmits: u64,
    /// Naks received.
    pub naks: u64,
    /// Frames received that failed the checks.
    pub bad_frames: u64,
    /// Bytes written to and read from the link.
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// The device's answer to a request or a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A completion, with the host memory the device wrote (from offset 0).
    Done(Completion, Vec<u8>),
    /// The request went on in the background (Execute Program), or a poll found no run
    /// finished; `busy`: whether runs are still in progress.
    Pending { busy: bool },
}

/// A fault to put into the next frame sent, to test the link's recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip one bit of the byte at this index (taken modulo the frame's length, skipping the
    /// delimiters).
    FlipBit(usize),
    /// Send only this many bytes of the frame.
    Truncate(usize),
}

/// A stream that can wait for bytes with a time limit (a socket).
pub trait Port: Read + Write + Send {
    /// Sets how long a read may wait; `None` waits for ever.
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Port for std::os::unix::net::UnixStream {
    fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

/// Stop-and-wait frames over `P`. See the module docs.
#[derive(Debug)]
pub struct Link<P: Port> {
    port: P,
    reader: FrameReader<Vec<u8>>,
    body: Vec<u8>,
    frame: Vec<u8>,
    seq: u32,
    info: Option<DeviceInfo>,
    /// Wait for an answer before the first retransmission; doubles up to `max_wait`.
    first_wait: Duration,
    max_wait: Duration,
    /// Give up after this long without the answer.
    deadline: Duration,
    fault: Option<Fault>,
    stats: LinkStats,
}

impl<P: Port + std::fmt::Debug> Link<P> {
    /// A link over `port`; call [`Link::hello`] before anything else.
    pub fn new(port: P) -> Self {
        Link {
            port,
            reader: FrameReader::new(vec![0; MAX_FRAME_BYTES]),
            body: vec![0; MAX_BODY_BYTES],
            frame: vec![0; MAX_FRAME_BYTES],
            seq: 0,
            info: None,
            first_wait: Duration::from_secs(2),
            max_wait: Duration::from_secs(30),
            deadline: Duration::from_secs(600),
            fault: None,
            stats: LinkStats::default(),
        }
    }

    /// Sets the first retransmission timeout and the overall deadline of one exchange.
    pub fn set_timeouts(&mut self, first_wait: Duration, deadline: Duration) {
        self.first_wait = first_wait;
        self.deadline = deadline;
    }

    /// Opens the session: the device forgets its remembered response and says who it is.
    pub fn hello(&mut self) -> Result<DeviceInfo, LinkError> {
        self.seq = self.seq.wrapping_add(1);
        let info = self.exchange(&HostMessage::Hello, |msg| match msg {
            DeviceMessage::Hello(info) => Some(info),
            _ => None,
        })?;
        if info.wire_version != common::WIRE_VERSION {
            return Err(LinkError::WireVersion {
                device: info.wire_version,
                host: common::WIRE_VERSION,
            });
        }
        self.info = Some(info);
        Ok(info)
    }

    /// Sends one command: `submission` with the host memory the device may read (`data`) and
    /// the size of the command's host memory. The answer is its completion with the host memory
    /// the device wrote, or `Pending` for a command that goes on in the background (see
    /// [`Link::poll`]).
    pub fn request(
        &mut self,
        submission: &Submission,
        host_len: usize,
        data: &[u8],
    ) -> Result<Answer, LinkError> {
        let entry = SubmissionEntry::of(submission, host_len).map_err(|_| LinkError::Encode)?;
        // Execute Program's parameter data goes first in its host memory.
        let prefixed;
        let (host_len, data) = match nvme::parameter_data(&submission.command) {
            Some(parameters) => {
                prefixed = [&parameters[..], data].concat();
                (host_len + parameters.len(), &prefixed[..])
            }
            None => (host_len, data),
        };
        let max = self.info.map_or(MAX_DATA_BYTES, |i| i.max_data_bytes);
        if host_len > max as usize || data.len() > max as usize {
            return Err(LinkError::TooLarge {
                len: host_len.max(data.len()),
                max,
            });
        }
        self.seq = self.seq.wrapping_add(1);
        let msg = HostMessage::Request {
            submission: entry,
            host_len: host_len as u32,
            data,
        };
        let command = submission.command;
        self.exchange(&msg, |msg| answer(msg, Some(&command)))
    }

    /// Lets the device run its background work (kernel slices) for a while: the answer is the
    /// completion of a run that finished, or `Pending`.
    pub fn poll(&mut self) -> Result<Answer, LinkError> {
        self.seq = self.seq.wrapping_add(1);
        self.exchange(&HostMessage::Poll, |msg| answer(msg, None))
    }

    /// Runs one command to its end: [`Link::request`], then polls a command that went to the
    /// background until it completes (nothing else may be in the background).
    pub fn call(
        &mut self,
        submission: &Submission,
        host_len: usize,
        data: &[u8],
    ) -> Result<(Completion, Vec<u8>), LinkError> {
        let mut answer = self.request(submission, host_len, data)?;
        loop {
            match answer {
                Answer::Done(completion, data) => return Ok((completion, data)),
                Answer::Pending { busy: false } => {
                    return Ok((
                        Completion::status(submission.cid, common::Status::InternalError),
                        Vec::new(),
                    ))
                }
                Answer::Pending { busy: true } => answer = self.poll()?,
            }
        }
    }

    /// Makes the next frame sent carry `fault` (once; the retransmission is clean).
    pub fn inject(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Writes raw bytes to the link (garbage, for tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.port.write_all(bytes)?;
        self.port.flush()?;
        self.stats.bytes_out += bytes.len() as u64;
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// What the device said at [`Link::hello`].
    pub fn info(&self) -> Option<DeviceInfo> {
        self.info
    }

    fn send_frame(&mut self, len: usize) -> Result<(), LinkError> {
        let mut bytes = &self.frame[..len];
        let mut flipped;
        match self.fault.take() {
            Some(Fault::FlipBit(at)) => {
                flipped = bytes.to_vec();
                let i = 1 + at % (len - 2);
                flipped[i] ^= 1 << (at % 8);
                bytes = &flipped[..];
                self.port.write_all(bytes)?;
            }
            Some(Fault::Truncate(keep)) => {
                flipped = bytes[..keep.min(len - 1)].to_vec();
                self.port.write_all(&flipped)?;
                bytes = &flipped[..];
            }
            None => self.port.write_all(bytes)?,
        }
        self.port.flush()?;
        self.stats.frames_sent += 1;
        self.stats.bytes_out += bytes.len() as u64;
        Ok(())
    }

    /// Sends `msg` with the current sequence number until an answer `pick` accepts arrives.
    fn exchange<T>(
        &mut self,
        msg: &HostMessage<'_>,
        mut pick: impl FnMut(DeviceMessage<'_>) -> Option<T>,
    ) -> Result<T, LinkError> {
        let len = link::encode(self.seq, msg, &mut self.body, &mut self.frame).map_err(|_| {
            LinkError::TooLarge {
                len: MAX_BODY_BYTES,
                max: MAX_DATA_BYTES,
            }
        })?;
        let started = Instant::now();
        // The emulated UART moves host-to-board bytes at some KiB/s: give a large frame time to
        // arrive (about 150 us per byte) before calling it lost.
        let mut wait = self.first_wait + Duration::from_micros(150 * len as u64);
        let mut chunk = vec![0u8; 64 * 1024];
        self.send_frame(len)?;
        loop {
            let attempt_end = Instant::now() + wait;
            let mut resend = false;
            while !resend {
                let now = Instant::now();
                if now >= attempt_end {
                    break;
                }
                self.port.set_timeout(Some(attempt_end - now))?;
                let n = match self.port.read(&mut chunk) {
                    Ok(0) => {
                        return Err(LinkError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the board closed the link",
                        )))
                    }
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                self.stats.bytes_in += n as u64;
                let mut found = None;
                for &b in &chunk[..n] {
                    match self.reader.push(b) {
                        None => {}
                        Some(Err(_)) => {
                            self.stats.bad_frames += 1;
                            resend = true;
                        }
                        Some(Ok(frame)) => match frame.decode::<DeviceMessage<'_>>() {
                            Err(_) => {
                                self.stats.bad_frames += 1;
                                resend = true;
                            }
                            Ok(DeviceMessage::Nak(_)) => {
                                self.stats.naks += 1;
                                resend = true;
                            }
                            // An answer to an earlier request (a replay after a
                            // retransmission) is not ours.
                            Ok(_) if frame.seq != self.seq => {}
                            Ok(answer) => {
                                if found.is_none() {
                                    found = pick(answer);
                                }
                            }
                        },
                    }
                }
                if let Some(t) = found {
                    return Ok(t);
                }
            }
            if started.elapsed() >= self.deadline {
                return Err(LinkError::Timeout(self.deadline));
            }
            if !resend {
                wait = (wait * 2).min(self.max_wait);
            }
            self.stats.retransmits += 1;
            self.send_frame(len)?;
        }
    }
}

/// The answers a request (of `command`) or a poll takes.
fn answer(msg: DeviceMessage<'_>, command: Option<&Command>) -> Option<Answer> {
    match msg {
        DeviceMessage::Response { completion, data } => {
            let done = completion.completion(command).unwrap_or_else(|| {
                eprintln!(
                    "csd: the device completed command {} with status {:03X}h, which it does not send",
                    completion.cqe.cid, completion.cqe.status
                );
                Completion::status(CommandId(completion.cqe.cid), common::Status::InternalError)
            });
            Some(Answer::Done(done, data.to_vec()))
        }
        DeviceMessage::Pending { busy } => Some(Answer::Pending { busy }),
        _ => None,
    }
}

/// Whether the device reads the command's host memory (so the request must carry it).
/// Unknown commands carry it, to be safe.
pub fn reads_host_memory(command: &Command) -> bool {
    !matches!(
        command,
        Command::Identify
            | Command::IdentifyStructure { .. }
            | Command::Read { .. }
            | Command::ZoneManagementReceive { .. }
            | Command::ReadOutput(_)
            | Command::ReadLog(_)
            | Command::GetHealth
            | Command::Flush
    )
}
