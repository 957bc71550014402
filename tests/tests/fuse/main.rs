//! The file system through real FUSE mounts (`/dev/fuse`, `fusermount3`), a module per
//! concern, linked as one test binary: `cargo test -p tests --test fuse <name>`. `posix` and
//! `offload_edges` switch to other users, so need root. A test that runs this binary again as
//! a child names its child test with `tests::test_name`. (The mounts under crash-kill and fio
//! are the campaign binaries `reliability_*`; the full host disk under a mount, which mounts a
//! tmpfs, is `host_disk_full`.)

mod cli;
mod device_time;
mod model;
mod offload;
mod offload_edges;
mod posix;
mod python;
mod transport;
