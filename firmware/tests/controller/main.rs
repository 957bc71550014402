//! The controller's commands through `Controller::submit`, one module per command family,
//! linked as one test binary (`cargo test -p firmware --test controller <name>`); `support`
//! holds the device and host they share.

mod io;
mod programs;
mod support;
