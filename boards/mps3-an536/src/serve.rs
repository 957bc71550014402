//! The device end of the serial link: frames in from the UART, the controller, frames out.
//!
//! Stop and wait (see `common::link`): one request at a time, answered before the next is read.
//! The last response is kept and sent again, without touching the controller, when the host
//! retransmits a request with the same sequence number, so a lost response never runs a
//! command twice. Execute Program goes on in the background: its request is answered `Pending`,
//! and each `Poll` runs at most [`POLL_SLICES`] kernel slices before answering, so regular
//! commands are served between groups of slices, not after a kernel's end.

use alloc::vec;
use alloc::vec::Vec;

use common::command::{CommandId, CommandResult, Completion};
use common::link::{
    self, CompletionEntry, DeviceInfo, DeviceMessage, FrameReader, HostMessage, NakReason,
    SubmissionEntry, MAX_BODY_BYTES, MAX_DATA_BYTES, MAX_FRAME_BYTES,
};
use common::{Status, WIRE_VERSION};
use embedded_io::{Read, Write};
use firmware::controller::{Controller, Dma, DmaError};
use firmware::nand::Nand;

/// The submission queue the link's commands belong to.
const LINK_SQ: u16 = 0;

/// Most kernel slices one `Poll` runs: enough that a poll's round trip over the emulated UART
/// (a few bytes each way) stays small beside them, few enough that a regular command waits for
/// a handful of slices at most.
pub const POLL_SLICES: u32 = 8;

/// A command's host memory as carried by one request frame and its response.
struct LinkDma<'a> {
    /// The host memory the host sent (what the device may read).
    input: &'a [u8],
    host_len: usize,
    /// Host memory from offset 0 to the furthest device write, sent back in the response.
    output: &'a mut Vec<u8>,
}

impl Dma for LinkDma<'_> {
    fn host_len(&self) -> usize {
        self.host_len
    }

    fn read_from_host(&mut self, offset: usize, dst: &mut [u8]) -> Result<(), DmaError> {
        let range = offset..offset.saturating_add(dst.len());
        match self.input.get(range) {
            Some(src) => {
                dst.copy_from_slice(src);
                Ok(())
            }
            None => Err(DmaError {
                offset,
                len: dst.len(),
                host_len: self.input.len(),
            }),
        }
    }

    fn write_to_host(&mut self, offset: usize, src: &[u8]) -> Result<(), DmaError> {
        let end = offset.saturating_add(src.len());
        if end > self.host_len || end > MAX_DATA_BYTES as usize {
            return Err(DmaError {
                offset,
                len: src.len(),
                host_len: self.host_len,
            });
        }
        let had = self.output.len();
        if end > had {
            // Bytes the device skips over keep the host's contents.
            let keep = self
                .input
                .get(had..end.min(self.input.len()))
                .unwrap_or(&[]);
            self.output.extend_from_slice(keep);
            self.output.resize(end, 0);
        }
        self.output[offset..end].copy_from_slice(src);
        Ok(())
    }
}

/// The link server around a controller.
#[derive(Debug)]
pub struct Server<N: Nand> {
    controller: Controller<N>,
    reader: FrameReader<Vec<u8>>,
    body: Vec<u8>,
    /// The last response frame and the sequence number it answered.
    last: Option<(u32, Vec<u8>)>,
    output: Vec<u8>,
    served: u32,
}

impl<N: Nand> Server<N> {
    /// A server for `controller`, with its frame buffers allocated.
    pub fn new(controller: Controller<N>) -> Self {
        Server {
            controller,
            reader: FrameReader::new(vec![0u8; MAX_FRAME_BYTES]),
            body: vec![0u8; MAX_BODY_BYTES],
            last: None,
            output: Vec::new(),
            served: 0,
        }
    }

    /// Serves requests from `port` forever.
    pub fn run<P: Read + Write>(&mut self, port: &mut P) -> ! {
        let mut chunk = [0u8; 64];
        loop {
            let n = match port.read(&mut chunk) {
                Ok(n) => n,
                Err(_) => continue,
            };
            for &b in &chunk[..n] {
                self.take(b, port);
            }
        }
    }

    fn take<P: Write>(&mut self, byte: u8, port: &mut P) {
        let Some(frame) = self.reader.push(byte) else {
            return;
        };
        let (seq, msg) = match frame.and_then(|f| Ok((f.seq, f.decode::<HostMessage<'_>>()?))) {
            Ok(v) => v,
            Err(e) => {
                defmt::warn!("link: rejected a frame: {}", e);
                let nak = DeviceMessage::Nak(NakReason::from(e));
                send(port, &mut self.body, 0, &nak);
                return;
            }
        };
        match msg {
            HostMessage::Hello => {
                self.last = None;
                let info = DeviceMessage::Hello(DeviceInfo {
                    wire_version: WIRE_VERSION,
                    max_data_bytes: MAX_DATA_BYTES,
                });
                send(port, &mut self.body, seq, &info);
            }
            HostMessage::Request {
                submission,
                host_len,
                data,
            } => {
                if replayed(&self.last, seq, port) {
                    return;
                }
                self.output.clear();
                let done = serve_one(
                    &mut self.controller,
                    &submission,
                    host_len,
                    data,
                    &mut self.output,
                );
                let response = match &done {
                    Some(completion) => {
                        log_fault(completion);
                        DeviceMessage::Response {
                            completion: CompletionEntry::of(completion),
                            data: &self.output,
                        }
                    }
                    None => DeviceMessage::Pending { busy: true },
                };
                let frame = encode_frame(seq, &response, &mut self.body);
                self.answer(seq, frame, port);
            }
            HostMessage::Poll => {
                if replayed(&self.last, seq, port) {
                    return;
                }
                let mut finished = None;
                for _ in 0..POLL_SLICES {
                    if !self.controller.busy() {
                        break;
                    }
                    if let Some((_, done)) = self.controller.poll() {
                        finished = Some(done);
                        break;
                    }
                }
                let response = match &finished {
                    Some(completion) => {
                        log_fault(completion);
                        DeviceMessage::Response {
                            completion: CompletionEntry::of(completion),
                            data: &[],
                        }
                    }
                    None => DeviceMessage::Pending {
                        busy: self.controller.busy(),
                    },
                };
                let frame = encode_frame(seq, &response, &mut self.body);
                self.answer(seq, frame, port);
            }
        }
    }

    /// Sends the response `frame` to request `seq` and keeps it for a retransmission.
    fn answer<P: Write>(&mut self, seq: u32, frame: Vec<u8>, port: &mut P) {
        write_all(port, &frame);
        self.last = Some((seq, frame));
        self.served += 1;
        if self.served.is_power_of_two() {
            defmt::info!("link: requests served: {}", self.served);
        }
    }
}

/// Sends the kept response `last` again if `seq` is the request it answered.
fn replayed<P: Write>(last: &Option<(u32, Vec<u8>)>, seq: u32, port: &mut P) -> bool {
    match last {
        Some((last_seq, frame)) if *last_seq == seq => {
            defmt::info!("link: request {} again, sending its response again", seq);
            write_all(port, frame);
            true
        }
        _ => false,
    }
}

fn encode_frame(seq: u32, response: &DeviceMessage<'_>, body: &mut [u8]) -> Vec<u8> {
    let mut frame = vec![0u8; MAX_FRAME_BYTES];
    let len = link::encode(seq, response, body, &mut frame)
        .unwrap_or_else(|_| panic!("a response never outgrows a frame"));
    frame.truncate(len);
    frame
}

/// Serves one command: its completion, or `None` when it goes on in the background (Execute
/// Program).
fn serve_one<N: Nand>(
    controller: &mut Controller<N>,
    submission: &SubmissionEntry,
    host_len: u32,
    data: &[u8],
    output: &mut Vec<u8>,
) -> Option<Completion> {
    let cid = CommandId(submission.sqe.cid);
    let host_len = host_len as usize;
    if host_len > MAX_DATA_BYTES as usize || data.len() > host_len {
        return Some(Completion::status(cid, Status::DataTransferError));
    }
    let mut dma = LinkDma {
        input: data,
        host_len,
        output,
    };
    controller.submit(LINK_SQ, submission.queue, &submission.sqe, &mut dma)
}

/// Logs a completion that reports a fault: the media or the firmware failing (errors), or a
/// kernel stopped for running out of fuel or touching memory it may not (warnings). Statuses
/// that answer a host mistake (a write off the write pointer, a full zone) are the host's to
/// report.
fn log_fault(done: &Completion) {
    match done.status {
        Status::WriteFault | Status::UnrecoveredReadError | Status::InternalError => {
            defmt::error!("link: command {} failed: {}", done.cid.0, done.status);
        }
        Status::ProgramOutOfFuel | Status::ProgramFault => match &done.result {
            CommandResult::Exec(run) => {
                defmt::warn!("link: program run {} stopped: {}", done.cid.0, run.outcome);
            }
            _ => defmt::warn!("link: program run {} stopped: {}", done.cid.0, done.status),
        },
        _ => {}
    }
}

fn send<P: Write>(port: &mut P, body: &mut [u8], seq: u32, msg: &DeviceMessage<'_>) {
    let mut frame = [0u8; 64];
    match link::encode(seq, msg, body, &mut frame) {
        Ok(len) => write_all(port, &frame[..len]),
        Err(_) => panic!("a control message never outgrows 64 bytes"),
    }
}

fn write_all<P: Write>(port: &mut P, bytes: &[u8]) {
    // The UART never fails; a port that does loses this frame and the host retransmits.
    let _ = port.write_all(bytes);
    let _ = port.flush();
}
