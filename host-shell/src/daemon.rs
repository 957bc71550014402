//! The daemons' log: stderr, which `csd mount` and `csd device start` send to `IMAGE.log` (or
//! `--log`).

use std::sync::OnceLock;

static NAME: OnceLock<&'static str> = OnceLock::new();

/// Names this process's daemon in its log lines (`csd mount` unless said otherwise); the
/// first call wins.
pub fn name(name: &'static str) {
    let _ = NAME.set(name);
}

/// One line in the daemon log, naming the daemon's process: `csd mount[PID]: message`.
pub fn log(message: impl std::fmt::Display) {
    let name = NAME.get().copied().unwrap_or("csd mount");
    eprintln!("{name}[{}]: {message}", std::process::id());
}
