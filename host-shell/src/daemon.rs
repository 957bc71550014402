//! The mount daemon's log: stderr, which `csd mount` sends to `IMAGE.log` (or `--log`).

/// One line in the daemon log, naming the mount's process: `csd mount[PID]: message`.
pub fn log(message: impl std::fmt::Display) {
    eprintln!("csd mount[{}]: {message}", std::process::id());
}
