//! The firmware on the Cortex-R52 in QEMU, a module per concern, linked as one test binary:
//! `cargo test -p tests --test qemu <name>`. Needs `qemu-system-arm` and the board's link image
//! (`cargo xtask board build`, which `cargo xtask test` runs before these tests) and the
//! clang-built kernels (`cargo xtask kernels`); `mount` needs FUSE too.

mod cli;
mod link;
mod log;
mod mount;
