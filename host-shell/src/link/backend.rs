//! The device thread's [`Backend`] over a [`Link`]: the host's queues and driver in front of a
//! device at the far end of a byte stream (the board in QEMU, or a running device's socket).

use std::os::unix::net::UnixStream;

use common::{
    command::{Command, CommandId, Completion},
    Status,
};

use super::{reads_host_memory, Answer, Link, LinkError};
use crate::device::{queue::Entry, runner::Backend};

/// What is at the far end of a link: it runs one exchange at a time, and may explain a failure
/// (QEMU exited, say).
pub trait LinkEnd: Send + std::fmt::Debug + 'static {
    /// Runs `exchange` over the link.
    fn on_link<T>(
        &mut self,
        exchange: impl FnOnce(&mut Link<UnixStream>) -> Result<T, LinkError>,
    ) -> Result<T, LinkError>;
}

/// The device thread's backend over a link: one command at a time, and Execute Program in
/// the background on the device, polled for while the host's queues are empty.
#[derive(Debug)]
pub struct LinkBackend<E: LinkEnd> {
    end: E,
    /// Runs on the board: the command id the link knows it by, and its queue and own id.
    running: Vec<(CommandId, u16, CommandId)>,
    /// The next command id for a run on the board (ids of different queues may coincide).
    next_run: u16,
}

impl<E: LinkEnd> LinkBackend<E> {
    /// A backend over a link that said hello.
    pub fn new(end: E) -> Self {
        LinkBackend {
            end,
            running: Vec::new(),
            next_run: 0,
        }
    }

    /// What is at the link's far end.
    pub fn end(&mut self) -> &mut E {
        &mut self.end
    }

    /// The far end, after the device thread stopped.
    pub fn into_end(self) -> E {
        self.end
    }
}

fn link_failed(cid: CommandId, e: &LinkError) -> Completion {
    eprintln!("csd: {e}");
    let status = match e {
        LinkError::TooLarge { .. } => Status::DataTransferError,
        // As the controller answers a command it cannot decode.
        LinkError::Encode => Status::InvalidField,
        _ => Status::CommandAborted,
    };
    Completion::status(cid, status)
}

impl<E: LinkEnd> Backend for LinkBackend<E> {
    fn submit(&mut self, sqid: u16, entry: &mut Entry) -> Option<Completion> {
        let mut sub = entry.submission;
        let data: &[u8] = if reads_host_memory(&sub.command) {
            &entry.buffer
        } else {
            &[]
        };
        let own = sub.cid;
        let background = matches!(sub.command, Command::ExecuteProgram(_));
        if background {
            sub.cid = CommandId(self.next_run);
            self.next_run = self.next_run.wrapping_add(1);
        }
        let host_len = entry.buffer.len();
        match self.end.on_link(|link| link.request(&sub, host_len, data)) {
            Ok(Answer::Done(mut completion, written)) => {
                let n = written.len().min(entry.buffer.len());
                entry.buffer[..n].copy_from_slice(&written[..n]);
                completion.cid = own;
                Some(completion)
            }
            Ok(Answer::Pending { .. }) if background => {
                self.running.push((sub.cid, sqid, own));
                None
            }
            Ok(Answer::Pending { .. }) => {
                eprintln!(
                    "csd: the device put a command that has no background part in the background"
                );
                Some(Completion::status(own, Status::InternalError))
            }
            Err(e) => Some(link_failed(own, &e)),
        }
    }

    fn poll(&mut self) -> Option<(u16, Completion)> {
        let (link_cid, sqid, own) = *self.running.first()?;
        let mut take = |link_cid: CommandId, completion: Completion| {
            let at = self.running.iter().position(|r| r.0 == link_cid)?;
            let (_, sqid, own) = self.running.swap_remove(at);
            Some((
                sqid,
                Completion {
                    cid: own,
                    ..completion
                },
            ))
        };
        match self.end.on_link(Link::poll) {
            Ok(Answer::Done(completion, _)) => take(completion.cid, completion),
            Ok(Answer::Pending { busy: true }) => None,
            // The device has no run in progress, yet this one never completed: fail it.
            Ok(Answer::Pending { busy: false }) => take(
                link_cid,
                Completion::status(link_cid, Status::InternalError),
            ),
            Err(e) => {
                let failed = link_failed(own, &e);
                self.running.remove(0);
                Some((sqid, failed))
            }
        }
    }

    fn busy(&self) -> bool {
        !self.running.is_empty()
    }
}
