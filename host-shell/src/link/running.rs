//! A running device: one device kept powered on (`csd device start`) and shared by every `csd`
//! process that names its image, over a Unix socket next to the image (`IMAGE.sock`).
//!
//! A connection is a session. It opens with one line of JSON each way: the client says what it
//! is ([`Session`]: raw commands, a file system, or a request to stop), the server answers
//! ([`Welcome`]). After that it speaks the board's link protocol (`common::link` frames:
//! Hello, Request, Poll, with Execute Program in the background), so a command attaches to a
//! running device exactly as it attaches to the board in QEMU: [`AttachedDevice`] is the same
//! device thread over a [`LinkBackend`].
//!
//! The server ([`Server`]) keeps what sessions share apart:
//! - One file-system session at a time. While it holds the device, other sessions may read,
//!   report zones and run kernels, but a command that changes a zone (Write, Zone Append, Zone
//!   Management Send) completes with Access Denied: the file system owns every zone.
//! - Program slots and range sets are the session's own: each session numbers them from 0, as
//!   Identify reports, and the server maps them onto free ones of the device at first use
//!   (a mount's offloads and a `csd kernel run` beside it never load into each other's slots).
//!   A session's slots are deactivated when it ends.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{
    command::{Command, CommandId, Completion, Submission},
    link::{self, CompletionEntry, DeviceInfo, DeviceMessage, FrameReader, HostMessage, NakReason},
    nvme,
    program::{ActivateProgram, ProgramSlot, RangeSetId},
    zns::IdentifyZns,
    Status, LBA_BYTES,
};
use serde::{Deserialize, Serialize};

use super::{reads_host_memory, Link, LinkBackend, LinkEnd, LinkError};
use crate::{
    device::{queue::Done, runner::Runner},
    driver::Driver,
};

/// The socket of the device running over `image`: `IMAGE.sock`.
pub fn socket_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".sock");
    PathBuf::from(p)
}

/// What a connection is for (its first line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Session {
    /// Raw commands: zone reports, reads and writes, kernel runs.
    Raw,
    /// A file system on the device's zones; `holder` says who, for others' error messages
    /// (for example `csd mount on /mnt (pid 42)`).
    FileSystem { holder: String },
    /// Power the device off (refused while a file system holds it).
    Stop,
}

/// The server's answer to a session's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// Attached: link frames follow. `file_system`: who holds the file system, if anyone.
    Attached {
        pid: u32,
        file_system: Option<String>,
    },
    /// Not attached, and why.
    Refused(String),
    /// The device is powering off.
    Stopping,
}

/// Why attaching to a running device failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the running device at {path} did not answer: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the running device at {path} said something this csd does not understand")]
    Protocol { path: PathBuf },
    #[error("the running device refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Connects to the device running over `image` and opens `session`: `Ok(None)` when no device
/// runs there (no socket, or a socket nobody listens on any more).
pub fn connect(
    image: &Path,
    session: &Session,
) -> Result<Option<(UnixStream, Welcome)>, AttachError> {
    let path = socket_path(image);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => return Err(AttachError::Io { path, source }),
    };
    let io = |source| AttachError::Io {
        path: path.clone(),
        source,
    };
    write_line(&mut stream, session).map_err(io)?;
    let welcome = read_line(&mut stream)
        .map_err(io)?
        .ok_or_else(|| AttachError::Protocol { path: path.clone() })?;
    Ok(Some((stream, welcome)))
}

/// Writes `value` as one line of JSON.
fn write_line<T: Serialize>(stream: &mut UnixStream, value: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads one line of JSON (byte by byte: link frames follow it on the same stream); `None`
/// if it does not parse.
fn read_line<T: for<'de> Deserialize<'de>>(stream: &mut UnixStream) -> io::Result<Option<T>> {
    const MAX_LINE: usize = 4096;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(serde_json::from_slice(&line).ok());
        }
        if line.len() == MAX_LINE {
            return Ok(None);
        }
        line.push(byte[0]);
    }
}

/// A link to a running device, as the device thread's far end.
#[derive(Debug)]
pub struct Attachment {
    link: Link<UnixStream>,
    /// The same socket, to say goodbye on.
    socket: UnixStream,
}

impl Attachment {
    /// Ends the session and waits until the server has let go of what it held (its file
    /// system, its slots): it closes its side after that.
    fn goodbye(mut self) {
        if self.socket.shutdown(std::net::Shutdown::Write).is_ok() {
            let _ = self.socket.set_read_timeout(Some(Duration::from_secs(10)));
            let mut rest = [0u8; 256];
            while matches!(self.socket.read(&mut rest), Ok(n) if n > 0) {}
        }
    }
}

impl LinkEnd for Attachment {
    fn on_link<T>(
        &mut self,
        exchange: impl FnOnce(&mut Link<UnixStream>) -> Result<T, LinkError>,
    ) -> Result<T, LinkError> {
        exchange(&mut self.link)
    }
}

/// A running device this process attached to: the same queues and driver as a device of its
/// own.
#[derive(Debug)]
pub struct AttachedDevice {
    runner: Runner<LinkBackend<Attachment>>,
    identify: IdentifyZns,
    file_system: Option<String>,
    pid: u32,
}

impl AttachedDevice {
    /// Attaches to the device running over `image` as `session` (not [`Session::Stop`]):
    /// `Ok(None)` when none runs there.
    pub fn attach(image: &Path, session: &Session) -> Result<Option<Self>, AttachError> {
        let Some((stream, welcome)) = connect(image, session)? else {
            return Ok(None);
        };
        let (pid, file_system) = match welcome {
            Welcome::Attached { pid, file_system } => (pid, file_system),
            Welcome::Refused(why) => return Err(AttachError::Refused(why)),
            Welcome::Stopping => return Err(AttachError::Refused("it is powering off".into())),
        };
        let socket = stream.try_clone().map_err(|source| AttachError::Io {
            path: socket_path(image),
            source,
        })?;
        let mut link = Link::new(stream);
        // A socket loses nothing: a slow answer is a slow command, not a lost frame.
        link.set_timeouts(Duration::from_secs(3600), Duration::from_secs(24 * 3600));
        link.hello()?;
        let sub = Submission::new(CommandId(0), Command::Identify);
        let (done, bytes) = link.call(&sub, IDENTIFY_BYTES, &[])?;
        let identify = match done.status {
            Status::Success => postcard::from_bytes(&bytes).ok(),
            _ => None,
        }
        .ok_or_else(|| AttachError::Protocol {
            path: socket_path(image),
        })?;
        let runner = Runner::start(LinkBackend::new(Attachment { link, socket }), 4, 64).map_err(
            |source| AttachError::Io {
                path: socket_path(image),
                source,
            },
        )?;
        Ok(Some(AttachedDevice {
            runner,
            identify,
            file_system,
            pid,
        }))
    }

    /// A driver over every queue pair.
    pub fn driver(&self) -> Driver {
        let queues = (0..self.runner.queues()).map(|q| self.runner.queue(q));
        Driver::new(queues.collect(), self.identify)
    }

    /// Who holds the running device's file system (when this session is not that one).
    pub fn file_system(&self) -> Option<&str> {
        self.file_system.as_deref()
    }

    /// The pid of the process that runs the device.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Detaches (the device keeps running), once the server has ended the session.
    pub fn detach(self) {
        if let Some(backend) = self.runner.stop() {
            backend.into_end().goodbye();
        }
    }
}

/// Bytes of an Identify reply.
const IDENTIFY_BYTES: usize = 4096;

/// Serves a device to sessions over a socket. See the module docs.
#[derive(Debug)]
pub struct Server {
    driver: Driver,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// The file-system session and its holder.
    file_system: Option<(u64, String)>,
    /// The session that owns each program slot and range set of the device.
    slots: Vec<Option<u64>>,
    range_sets: Vec<Option<u64>>,
    next_session: u64,
    sessions: usize,
}

impl Server {
    /// A server of the device behind `driver`.
    pub fn new(driver: Driver) -> Self {
        let programs = driver.info().programs;
        Server {
            driver,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: vec![None; usize::from(programs.slots)],
                    range_sets: vec![None; usize::from(programs.range_sets)],
                    ..State::default()
                }),
                stop: AtomicBool::new(false),
            }),
        }
    }

    /// Whether a file-system session holds the device now (others may then not change zones):
    /// for the device's other front ends, such as the NVMe/TCP target.
    pub fn file_system_held(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.lock().file_system.is_some()
    }

    /// A flag that ends [`Server::run`] when set (a stop signal).
    pub fn stopper(&self) -> impl Fn() + Send + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.stop.store(true, Ordering::SeqCst)
    }

    /// Serves sessions on `listener` until a [`Session::Stop`] is accepted or the stopper is
    /// called, then waits up to `linger` for the sessions still attached to end.
    pub fn run(&self, listener: UnixListener, linger: Duration) -> io::Result<()> {
        self.run_then(listener, linger, || {})
    }

    /// [`Server::run`], calling `stopping` once it stops accepting sessions and before it
    /// waits for those still attached (to detach this process's own).
    pub fn run_then(
        &self,
        listener: UnixListener,
        linger: Duration,
        stopping: impl FnOnce(),
    ) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        while !self.shared.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    let driver = self.driver.clone();
                    let shared = Arc::clone(&self.shared);
                    shared.lock().sessions += 1;
                    std::thread::Builder::new()
                        .name("csd-session".into())
                        .spawn(move || {
                            let mut stream = stream;
                            let mut session = SessionServer::new(driver, Arc::clone(&shared));
                            if let Err(e) = session.serve(&mut stream) {
                                if e.kind() != io::ErrorKind::UnexpectedEof {
                                    crate::daemon::log(format_args!("a session ended: {e}"));
                                }
                            }
                            session.end();
                            shared.lock().sessions -= 1;
                            // Closed last: the client waits for it (see `Attachment::goodbye`).
                            drop(stream);
                        })?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        stopping();
        let started = Instant::now();
        while self.shared.lock().sessions > 0 && started.elapsed() < linger {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A run in the background: the link's command id and how it ended.
type Finished = (CommandId, Result<Done, String>);

/// The device's number for a session's number `ours` (of a program slot or a range set): the
/// one the session was given, or the first free one, now owned by `session`. A number past
/// the device's count is left as it is, for the device to refuse.
fn claim(
    given: &mut HashMap<u16, u16>,
    owners: &mut [Option<u64>],
    session: u64,
    ours: u16,
    none_free: Status,
) -> Result<u16, Status> {
    if let Some(&theirs) = given.get(&ours) {
        return Ok(theirs);
    }
    if usize::from(ours) >= owners.len() {
        return Ok(ours);
    }
    let free = owners.iter().position(Option::is_none).ok_or(none_free)?;
    owners[free] = Some(session);
    let theirs = free as u16;
    given.insert(ours, theirs);
    Ok(theirs)
}

/// One session's end of the link.
struct SessionServer {
    driver: Driver,
    shared: Arc<Shared>,
    id: u64,
    file_system: bool,
    /// This session's program slots and range sets, onto the device's.
    slots: HashMap<u16, u16>,
    range_sets: HashMap<u16, u16>,
    /// Runs in the background and where they report.
    running: usize,
    finished: (mpsc::Sender<Finished>, mpsc::Receiver<Finished>),
}

impl SessionServer {
    fn new(driver: Driver, shared: Arc<Shared>) -> Self {
        let id = {
            let mut state = shared.lock();
            state.next_session += 1;
            state.next_session
        };
        SessionServer {
            driver,
            shared,
            id,
            file_system: false,
            slots: HashMap::new(),
            range_sets: HashMap::new(),
            running: 0,
            finished: mpsc::channel(),
        }
    }

    fn serve(&mut self, stream: &mut UnixStream) -> io::Result<()> {
        let welcome = match read_line::<Session>(stream)? {
            None => Welcome::Refused("the first line is not a session".into()),
            Some(session) => self.welcome(session),
        };
        write_line(stream, &welcome)?;
        if !matches!(welcome, Welcome::Attached { .. }) {
            return Ok(());
        }
        let mut reader = FrameReader::new(vec![0u8; link::MAX_FRAME_BYTES]);
        let mut body = vec![0u8; link::MAX_BODY_BYTES];
        let mut frame = vec![0u8; link::MAX_FRAME_BYTES];
        // Naks go out of a buffer of their own: `frame` keeps the last answer for a replay.
        let mut nak = vec![0u8; 64];
        let mut chunk = vec![0u8; 64 * 1024];
        // The last answer, replayed if its request comes again.
        let mut last: Option<(u32, usize)> = None;
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            for &b in &chunk[..n] {
                let answer = match reader.push(b) {
                    None => continue,
                    Some(Err(e)) => Reply::Nak(e.into()),
                    Some(Ok(f)) => match f.decode::<HostMessage<'_>>() {
                        Err(e) => Reply::Nak(e.into()),
                        Ok(_) if last.is_some_and(|(seq, _)| seq == f.seq) => Reply::Replay,
                        Ok(msg) => Reply::Message(f.seq, self.answer(msg)),
                    },
                };
                match answer {
                    Reply::Nak(reason) => {
                        let len = encode(0, &DeviceMessage::Nak(reason), &mut body, &mut nak)?;
                        stream.write_all(&nak[..len])?;
                    }
                    Reply::Replay => {
                        if let Some((_, len)) = last {
                            stream.write_all(&frame[..len])?;
                        }
                    }
                    Reply::Message(seq, (completion, data)) => {
                        let msg = match completion {
                            Answer::Hello => DeviceMessage::Hello(DeviceInfo {
                                wire_version: common::WIRE_VERSION,
                                max_data_bytes: link::MAX_DATA_BYTES,
                            }),
                            Answer::Pending(busy) => DeviceMessage::Pending { busy },
                            Answer::Done(completion) => DeviceMessage::Response {
                                completion: CompletionEntry::of(&completion),
                                data: &data,
                            },
                        };
                        let len = encode(seq, &msg, &mut body, &mut frame)?;
                        stream.write_all(&frame[..len])?;
                        last = Some((seq, len));
                    }
                }
            }
        }
    }

    fn welcome(&mut self, session: Session) -> Welcome {
        let mut state = self.shared.lock();
        let holder = state.file_system.as_ref().map(|(_, h)| h.clone());
        match session {
            Session::Stop => match holder {
                Some(h) => Welcome::Refused(format!(
                    "its file system is in use by {h}; unmount it first"
                )),
                None => {
                    self.shared.stop.store(true, Ordering::SeqCst);
                    Welcome::Stopping
                }
            },
            Session::FileSystem { holder: new } => match holder {
                Some(h) => Welcome::Refused(format!("its file system is in use by {h}")),
                None => {
                    state.file_system = Some((self.id, new));
                    self.file_system = true;
                    Welcome::Attached {
                        pid: std::process::id(),
                        file_system: None,
                    }
                }
            },
            Session::Raw => Welcome::Attached {
                pid: std::process::id(),
                file_system: holder,
            },
        }
    }

    /// The answer to one message, and the host memory it wrote.
    fn answer(&mut self, msg: HostMessage<'_>) -> (Answer, Vec<u8>) {
        match msg {
            HostMessage::Hello => (Answer::Hello, Vec::new()),
            HostMessage::Poll => self.poll(),
            HostMessage::Request {
                submission,
                host_len,
                data,
            } => {
                let cid = CommandId(submission.sqe.cid);
                let status = |s| (Answer::Done(Completion::status(cid, s)), Vec::new());
                let (mut command, rest) =
                    match nvme::decode_with_data(submission.queue, &submission.sqe, data) {
                        Ok(decoded) => decoded,
                        Err(e) => return status(e.status()),
                    };
                // The host memory behind Execute Program's parameter data.
                let host_len = host_len.saturating_sub((data.len() - rest.len()) as u32);
                let data = rest;
                if self.denied(&command) {
                    return status(Status::AccessDenied);
                }
                if let Err(s) = self.map_resources(&mut command) {
                    return status(s);
                }
                // No more host memory than a frame of the link carries (a peer cannot make
                // the server allocate gigabytes).
                if host_len > link::MAX_DATA_BYTES {
                    return status(Status::DataTransferError);
                }
                let mut buffer = vec![0u8; host_len as usize];
                let n = data.len().min(buffer.len());
                buffer[..n].copy_from_slice(&data[..n]);
                if matches!(command, Command::ExecuteProgram(_)) {
                    let driver = self.driver.clone();
                    let report = self.finished.0.clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name("csd-run".into())
                            .spawn(move || {
                                let done =
                                    driver.exchange(command, buffer).map_err(|e| e.to_string());
                                let _ = report.send((cid, done));
                            });
                    return match spawned {
                        Ok(_) => {
                            self.running += 1;
                            (Answer::Pending(true), Vec::new())
                        }
                        Err(_) => status(Status::InternalError),
                    };
                }
                match self.driver.exchange(command, buffer) {
                    Ok(done) => self.completed(cid, &command, done),
                    Err(e) => {
                        crate::daemon::log(format_args!("a command failed in the device: {e}"));
                        status(Status::InternalError)
                    }
                }
            }
        }
    }

    /// A finished background run, or Pending.
    fn poll(&mut self) -> (Answer, Vec<u8>) {
        if self.running == 0 {
            return (Answer::Pending(false), Vec::new());
        }
        match self.finished.1.recv_timeout(Duration::from_millis(20)) {
            Ok((cid, done)) => {
                self.running -= 1;
                match done {
                    Ok(done) => (
                        Answer::Done(Completion {
                            cid,
                            ..done.completion
                        }),
                        Vec::new(),
                    ),
                    Err(e) => {
                        crate::daemon::log(format_args!("a kernel run failed in the device: {e}"));
                        (
                            Answer::Done(Completion::status(cid, Status::InternalError)),
                            Vec::new(),
                        )
                    }
                }
            }
            Err(_) => (Answer::Pending(true), Vec::new()),
        }
    }

    /// The completion of a command that ran, with the host memory it wrote.
    fn completed(&self, cid: CommandId, command: &Command, mut done: Done) -> (Answer, Vec<u8>) {
        if *command == Command::Identify && done.completion.status == Status::Success {
            // No transfer may exceed what one frame of the link carries.
            if let Ok(mut identify) = postcard::from_bytes::<IdentifyZns>(&done.buffer) {
                let most = link::MAX_DATA_BYTES / LBA_BYTES;
                identify.mdts_lbas = identify.mdts_lbas.clamp(1, most);
                if let Ok(bytes) = postcard::to_slice(&identify, &mut done.buffer) {
                    let len = bytes.len();
                    done.buffer[len..].fill(0);
                }
            }
        }
        let written = if reads_host_memory(command) {
            Vec::new()
        } else {
            done.buffer
        };
        (
            Answer::Done(Completion {
                cid,
                ..done.completion
            }),
            written,
        )
    }

    /// Whether this session may not send `command`: it changes a zone, and another session
    /// holds the file system.
    fn denied(&self, command: &Command) -> bool {
        command.changes_zones() && !self.file_system && self.shared.lock().file_system.is_some()
    }

    /// Puts the device's slot and range set in place of this session's.
    fn map_resources(&mut self, command: &mut Command) -> Result<(), Status> {
        match command {
            Command::LoadProgram(p) => p.slot = self.slot(p.slot)?,
            Command::ActivateProgram(p) => p.slot = self.slot(p.slot)?,
            Command::MemoryRangeSet(m) => m.id = self.range_set(m.id)?,
            Command::ExecuteProgram(e) => {
                e.slot = self.slot(e.slot)?;
                e.range_set = self.range_set(e.range_set)?;
            }
            Command::ReadOutput(r) => r.range_set = self.range_set(r.range_set)?,
            Command::ReadLog(id) => *id = self.range_set(*id)?,
            _ => {}
        }
        Ok(())
    }

    fn slot(&mut self, ours: ProgramSlot) -> Result<ProgramSlot, Status> {
        let mut state = self.shared.lock();
        let theirs = claim(
            &mut self.slots,
            &mut state.slots,
            self.id,
            ours.0.into(),
            Status::InvalidProgramSlot,
        )?;
        // Slots number at most 255 (Identify counts them in a byte).
        Ok(ProgramSlot(theirs as u8))
    }

    fn range_set(&mut self, ours: RangeSetId) -> Result<RangeSetId, Status> {
        let mut state = self.shared.lock();
        claim(
            &mut self.range_sets,
            &mut state.range_sets,
            self.id,
            ours.0,
            Status::InvalidMemoryRange,
        )
        .map(RangeSetId)
    }

    /// Gives back what the session held: its slots (deactivated), range sets and file system.
    fn end(&mut self) {
        for (_, slot) in self.slots.drain() {
            let off = Command::ActivateProgram(ActivateProgram {
                slot: ProgramSlot(slot as u8),
                activate: false,
            });
            let _ = self.driver.exchange(off, Vec::new());
        }
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let id = self.id;
        for owner in state.slots.iter_mut().chain(state.range_sets.iter_mut()) {
            if *owner == Some(id) {
                *owner = None;
            }
        }
        if state.file_system.as_ref().is_some_and(|(s, _)| *s == id) {
            state.file_system = None;
        }
    }
}

/// What a frame gets back.
enum Reply {
    Nak(NakReason),
    Replay,
    Message(u32, (Answer, Vec<u8>)),
}

/// A device message, before the data it carries is attached.
enum Answer {
    Hello,
    Pending(bool),
    Done(Completion),
}

fn encode(
    seq: u32,
    msg: &DeviceMessage<'_>,
    body: &mut [u8],
    frame: &mut [u8],
) -> io::Result<usize> {
    link::encode(seq, msg, body, frame)
        .map_err(|e| io::Error::other(format!("could not encode an answer: {e:?}")))
}
