//! The C kernels: the ABI header against `common::abi` (`abi`), every kernel through clang
//! and the loader (`build`), and the clang-built kernels on the device (`on_device`); one test
//! binary: `cargo test -p tests --test kernels <name>`. Needs clang-19 and, for `on_device`,
//! `target/kernels/` (`cargo xtask kernels`).

mod abi;
mod build;
mod on_device;
