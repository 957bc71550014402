//! On-media structures of the file system (docs/FORMAT.md section 3): explicit little-endian
//! encoding with field offsets as consts, checked decoding of untrusted bytes, CRC-32C.
//!
//! One way each: every structure is written through [`Encode`] into a [`Writer`] and read
//! back with a [`Reader`], and every decode failure is a [`Corrupt`] that names what was
//! damaged (it becomes [`crate::LfsError::Corrupted`] where it reaches a caller).

mod checkpoint;
mod chunk;
mod codec;
mod record;

pub use checkpoint::CheckpointRecord;
pub use chunk::{Chunk, ChunkHeader, ChunkKind};
pub use codec::{Corrupt, Encode, Reader, Writer};
pub use record::{decode_records, Record, ZoneUse};

/// Bytes of a file-system block: one LBA.
pub const BLOCK_BYTES: usize = common::LBA_BYTES as usize;

/// CRC-32C (Castagnoli), as the device's own records use.
pub const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Longest name in a directory.
pub const NAME_MAX: usize = 255;
/// Longest symbolic link target.
pub const SYMLINK_MAX: usize = 4095;
/// Longest extended attribute value.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::BLOCK_BYTES;

    /// Bytes written out as hex pairs; spaces and newlines separate fields.
    pub fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// `head` padded with zeros to a whole block.
    pub fn want_block(head: &[u8]) -> Vec<u8> {
        let mut b = head.to_vec();
        b.resize(BLOCK_BYTES, 0);
        b
    }
}
