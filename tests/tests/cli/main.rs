//! `csd` through the real binary, a module per command group, linked as one test binary:
//! `cargo test -p tests --test cli <name>`. Needs the `csd` binary and, for `kernel`, the
//! clang-built kernels (`cargo xtask kernels`).

mod device;
mod kernel;
mod nvme_tcp;
mod running;
mod zone;
