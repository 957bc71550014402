//! The hostile-input corpus, a module per kind of input (kernels, link frames, device images,
//! command lines), linked as one test binary: `cargo test -p tests --test hostile <name>`.
//! Each module's tests print `reliability: hostile <class> tried=N mishandled=M` through
//! [`tally::Tally`]; `cargo xtask reliability` runs this binary by name and sums them. `seeds`
//! (ignored) writes the fuzz targets' seed corpus. Needs the clang-built kernels (`cargo xtask
//! kernels`) and the `csd` binary; no root, FUSE or QEMU.

mod cli;
mod frames;
mod images;
mod kernels;
mod seeds;
mod tally;
