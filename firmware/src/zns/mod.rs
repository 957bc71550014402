//! The FTL-free Zoned Namespace (ZNS) zone manager over raw NAND.
//!
//! No page mapping table: a zone is a fixed number of erase blocks striped across dies and
//! written strictly in order; semantics follow the NVMe ZNS command set as QEMU implements it
//! (states, write pointer, Zone Append, Zone Management Send/Receive, open and active limits,
//! status codes `1B8h`..`1BFh`). The device's own duties are binding blocks to zones (at a
//! zone's first write after a reset, least-worn first), counting erases, retiring bad blocks
//! and rebuilding everything from the NAND after a power loss.
//!
//! Sans-IO: [`ZoneManager`] owns its [`crate::nand::Nand`], never reads a clock and does
//! bounded work per command (at most MDTS pages plus a checkpoint; mount reads the metadata
//! log, page 0 of each block and a binary search per zone).
//!
//! Modules: [`config`] (layout), `state` (zone table and transitions), `manager` (Read, Write, Append),
//! `actions` (Zone Management Send),
//! `recovery` (format, mount), `report` (Zone Management Receive, Identify), `record` (the
//! spare-area record), `checkpoint` (the metadata log).

mod actions;
mod checkpoint;
pub mod config;
mod manager;
mod record;
mod recovery;
mod report;
mod state;

pub use checkpoint::{BlockMeta, ZoneCond};
pub use config::{ConfigError, Layout, ZoneConfig};
pub use manager::ZoneManager;
pub use record::RECORD_BYTES;
pub use recovery::{FormatError, MountError};
pub use report::ZoneReport;
