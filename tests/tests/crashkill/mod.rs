//! The pieces of the crash-kill test (`reliability_crashkill.rs`): the operations a writer
//! journals ([`op`]), the writer itself ([`writer`]) and the model a journal gives
//! ([`model`]): every state the tree may be in after the daemon is killed.

pub mod model;
pub mod op;
pub mod writer;

/// The directories the writer works in (made and synced before the first cycle).
pub const DIRS: [&str; 2] = ["a", "b"];
/// The names it uses.
pub const NAMES: [&str; 12] = [
    "a/0", "a/1", "a/2", "a/3", "a/4", "a/5", "b/0", "b/1", "b/2", "b/3", "b/4", "b/5",
];
/// Files stay under this size, so the writer never fills the device.
pub const MAX_FILE_BYTES: u64 = 192 << 10;
/// Largest single write (one FUSE request).
pub const MAX_WRITE_BYTES: u64 = 64 << 10;
/// Unlinked files the writer keeps open at most.
pub const MAX_ORPHANS: usize = 3;

/// Bytes of a write tagged `tag` at file offset `offset`: every 8-byte word of the file holds
/// the tag mixed with the word's position, so stale, lost and misplaced data all show.
pub fn pattern(tag: u64, offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|p| {
            (tag ^ (p / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()[(p % 8) as usize]
        })
        .collect()
}
