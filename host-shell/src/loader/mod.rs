//! The kernel loader: links a clang-built eBPF object into a program image for the device.
//!
//! It follows the libbpf convention (see `docs/KERNEL_ABI.md`): parse the ELF relocatable
//! object that `clang -O2 -target bpf -c` wrote (with the `object` crate, never by hand), find
//! the entry function [`common::abi::ENTRY_SYMBOL`], lay out every executable section into one
//! instruction stream with the entry at instruction 0, concatenate the read-only data sections
//! into one blob, and apply the relocations clang emits for ordinary C: 64-bit immediate loads
//! of read-only data (`R_BPF_64_64`), bpf-to-bpf calls (`R_BPF_64_32`) and pointers stored in
//! read-only data (`R_BPF_64_ABS64`). Everything else is rejected with a [`LoadError`] naming
//! the section, symbol or relocation at fault.
//!
//! The loader never verifies the code: the device's verifier does that on every Load Program,
//! so helper ids, jump targets and opcodes are its business. The loader only guarantees that
//! the image is linked as the object describes, and within the ABI's size limits.

mod error;
mod image;
mod link;
mod object_file;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::LoadError;
pub use image::ProgramImage;

/// Reads the clang-built eBPF object at `path` and links it into a program image.
///
/// # Errors
/// [`LoadError::Io`] if the file cannot be read, otherwise as [`link`].
pub fn load_object(path: impl AsRef<Path>) -> Result<ProgramImage, LoadError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    link(&bytes)
}

/// Links the bytes of a clang-built eBPF ELF relocatable object into a program image.
///
/// # Errors
/// A [`LoadError`] naming what is wrong: not an eBPF relocatable object, malformed ELF, no
/// `csd_main`, writable data or maps sections, relocations or external symbols the loader
/// does not support, or a program over the ABI's limits.
pub fn link(bytes: &[u8]) -> Result<ProgramImage, LoadError> {
    let object = object_file::KernelObject::parse(bytes)?;
    link::link(&object)
}
