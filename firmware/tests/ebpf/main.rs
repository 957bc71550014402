//! The eBPF verifier and interpreter, one module per concern, linked as one test binary
//! (`cargo test -p firmware --test ebpf <name>`); `util` holds what the modules share.

mod diff;
mod helpers;
mod hostile;
mod isa;
mod jit;
mod util;
mod verify;
