//! The zone manager and the NAND emulator under it, one module per concern, linked as one
//! test binary (`cargo test -p firmware --test zns <name>`). The geometry, the page contents
//! and the reference model they share are `testkit::zns_model`.
#![allow(clippy::unwrap_used, reason = "tests unwrap what they set up")]

mod bad_block;
mod golden;
mod model;
mod nand_sim;
mod power_loss;
mod status;
