//! The host shell's parts under test, a module per part, linked as one test binary: `cargo
//! test -p host-shell --test shell <name>`. `loader` compiles C with clang-19; nothing here
//! needs root, FUSE or QEMU. (The power-loss campaign is its own binary, `lfs_powerloss`,
//! because `cargo xtask reliability` runs it by name.)

mod device;
mod device_time;
mod host_faults;
mod loader;
mod offload_engine;
mod queue_mix;
mod running;
