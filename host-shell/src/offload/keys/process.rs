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

/// The supplementary groups of thread `tid` (`Groups:` in `/proc/<tid>/status`: FUSE reports
/// only the caller's user and group). None if the thread is gone or the line does not parse,
/// so a permission check grants no more than the caller's own group would.
pub fn supplementary_groups(tid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|status| parse_groups(&status))
        .unwrap_or_default()
}

/// The ids of the `Groups:` line of a `/proc/<tid>/status`.
fn parse_groups(status: &str) -> Option<Vec<u32>> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))?
        .split_whitespace()
        .map(|g| g.parse().ok())
        .collect()
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

    /// The Groups: line gives the supplementary groups; an empty line or a gone thread, none.
    #[test]
    fn groups_parse() {
        let status = "Name:\tx\nGid:\t10\t10\t10\t10\nGroups:\t4 24 4242 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), Some(vec![4, 24, 4242]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(Vec::new()));
        assert_eq!(parse_groups("Groups:\tx\n"), None);
        assert_eq!(parse_groups("Uid:\t0\n"), None);
        assert!(supplementary_groups(0).is_empty());
    }
}
