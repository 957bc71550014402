//! The program image (`common::abi::image`): header checks, and the verified [`Program`].

use alloc::vec::Vec;

use common::abi::{self, image};
pub use common::load_error::LoadError;

use super::insn::Insn;
use super::verify::verify;

/// A verified, pre-decoded program, ready to run on a [`super::Vm`].
#[derive(Clone, Debug)]
pub struct Program {
    pub(crate) insns: Vec<Insn>,
    pub(crate) rodata: Vec<u8>,
    /// FNV-1a hash of the image, so a run can tell its program from another.
    pub(crate) fingerprint: u64,
}

impl Program {
    /// Checks an image's header, verifies its instructions and pre-decodes them.
    pub fn load(bytes: &[u8]) -> Result<Program, LoadError> {
        let (text, rodata) = split(bytes)?;
        let insns = verify(text)?;
        Ok(Program {
            insns,
            rodata: rodata.to_vec(),
            fingerprint: fnv1a(bytes),
        })
    }

    /// Number of instruction slots (a 64-bit immediate load counts two).
    pub fn insn_count(&self) -> u32 {
        // Bounded by MAX_PROGRAM_INSNS at load.
        self.insns.len() as u32
    }

    /// Bytes of read-only data, mapped at [`abi::region::RODATA_BASE`].
    pub fn rodata(&self) -> &[u8] {
        &self.rodata
    }

    /// The verified instructions, one per slot (what a compiler of native code translates).
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// The image's fingerprint (FNV-1a): equal images have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// Checks an image's header (magic, version, flags, lengths and limits) and returns its
/// instructions and read-only data. The instructions are not verified here: [`Program::load`]
/// does that.
pub fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), LoadError> {
    let len = bytes.len();
    let Some(header) = bytes.get(..image::HEADER_BYTES) else {
        return Err(LoadError::TooShort {
            len: u32::try_from(len).unwrap_or(u32::MAX),
        });
    };
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != image::MAGIC {
        return Err(LoadError::BadMagic { found: magic });
    }
    let version = u16_at(image::VERSION_OFFSET);
    if version != image::VERSION {
        return Err(LoadError::UnsupportedVersion { found: version });
    }
    let flags = u16_at(image::FLAGS_OFFSET);
    if flags != 0 {
        return Err(LoadError::UnsupportedFlags { flags });
    }
    let text_len = u32_at(image::TEXT_LEN_OFFSET);
    let rodata_len = u32_at(image::RODATA_LEN_OFFSET);
    if text_len % 8 != 0 {
        return Err(LoadError::TextNotAligned { text_len });
    }
    if rodata_len > abi::MAX_RODATA_BYTES {
        return Err(LoadError::RodataTooLarge { rodata_len });
    }
    let expected = image::HEADER_BYTES as u64 + u64::from(text_len) + u64::from(rodata_len);
    if expected != len as u64 {
        return Err(LoadError::LengthMismatch {
            expected,
            actual: len as u64,
        });
    }
    let text_end = image::HEADER_BYTES + text_len as usize;
    Ok((&bytes[image::HEADER_BYTES..text_end], &bytes[text_end..]))
}

/// FNV-1a, 64-bit: a fingerprint, not a security check (the same program object is
/// expected; this only catches a caller mixing up programs between slices).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds an image from instruction bytes and read-only data (the layout the host's loader
/// writes). For tests and tools; the device only ever reads images.
pub fn encode(text: &[u8], rodata: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(image::HEADER_BYTES + text.len() + rodata.len());
    out.extend_from_slice(&image::MAGIC);
    out.extend_from_slice(&image::VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(&(rodata.len() as u32).to_le_bytes());
    out.extend_from_slice(text);
    out.extend_from_slice(rodata);
    out
}
