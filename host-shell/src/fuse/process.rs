//! Who is calling: FUSE reports the calling *thread*; offload state belongs to the *process*.
//!
//! The thread's process is its thread group (`Tgid:` in `/proc/<tid>/status`). A process is
//! named by its id and its start time (field 22 of `/proc/<pid>/stat`, in clock ticks since
//! boot), so a recycled pid never inherits a dead process's offload state.

use std::fs;

/// A process: its id and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Process {
    /// The process of thread `tid`, or `None` if it is gone (or `tid` is 0: a request the
    /// kernel made on its own, such as a release after the process exited).
    pub fn of_thread(tid: u32) -> Option<Process> {
        if tid == 0 {
            return None;
        }
        let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        let pid = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())?;
        Some(Process {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether this process is still running (the same one, not a new one with its pid).
    pub fn is_alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: starttime is the 20th of those.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread of this test resolves to this process, and it is alive.
    #[test]
    fn own_threads_resolve_to_this_process() {
        let me = std::process::id();
        let main = Process::of_thread(me).expect("this process is in /proc");
        assert_eq!(main.pid, me);
        assert!(main.is_alive());
        let sibling = std::thread::spawn(move || {
            let link = fs::read_link("/proc/thread-self").expect("thread-self link");
            let tid: u32 = link
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .expect("a numeric thread id");
            (tid, Process::of_thread(tid))
        })
        .join()
        .expect("thread ran");
        assert_ne!(sibling.0, me);
        assert_eq!(sibling.1, Some(main));
        assert_eq!(Process::of_thread(0), None);
    }
}
