//! The file system through its typed API, on a device in RAM that runs the firmware's zone
//! manager in the test's thread (`testkit::device`).

mod gc;
mod golden;
mod model;
mod posix;
mod special;
