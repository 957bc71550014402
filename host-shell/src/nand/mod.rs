//! Emulated NAND for the host: device images in files, presets, and the timing model.
//!
//! The strict emulator itself is the firmware's ([`firmware::nand::sim::SimNand`]); this module
//! gives it storage that outlives the process and a clock.

pub mod file;
pub mod hostcache;
pub mod mapped;
pub use firmware::nand::image;
pub mod preset;
pub mod timing;
