//! Firmware of the csd computational storage device, as it would run on an SSD controller's
//! Arm Cortex-R CPU.
//!
//! Two halves: [`zns`], an FTL-free Zoned Namespace zone manager over raw NAND, and [`ebpf`], a
//! verifier and metered interpreter that runs user kernels next to the data. [`controller`]
//! serves NVMe-shaped commands from `common` with both.
//!
//! The firmware is sans-IO: it never touches hardware, a clock or a transport. It is handed its
//! NAND (anything implementing [`nand::Nand`]), the current time, and a DMA-like interface for
//! host data, and it does bounded work per call. It must never use `std`, `unsafe` code, or
//! panic on data read from the NAND or the host.
#![no_std]

extern crate alloc;

pub mod controller;
pub mod ebpf;
pub mod nand;
pub mod zns;
