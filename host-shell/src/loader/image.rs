//! The linked program image and its byte encoding (`common::abi::image`).

/// Size of one eBPF instruction slot in bytes.
pub const INSN_BYTES: usize = 8;

/// A linked kernel: what Load Program downloads into a program slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramImage {
    /// The instructions, 8 bytes each, little-endian; the entry point is instruction 0.
    pub text: Vec<u8>,
    /// The read-only data, addressed by the kernel at [`common::abi::region::RODATA_BASE`].
    pub rodata: Vec<u8>,
}

impl ProgramImage {
    /// Number of instruction slots (a 64-bit immediate load takes two).
    pub fn insn_count(&self) -> usize {
        self.text.len() / INSN_BYTES
    }

    /// The 8 bytes of instruction slot `index`, if it exists.
    pub fn insn(&self, index: usize) -> Option<[u8; INSN_BYTES]> {
        let start = index.checked_mul(INSN_BYTES)?;
        let bytes = self.text.get(start..start.checked_add(INSN_BYTES)?)?;
        bytes.try_into().ok()
    }

    /// Encodes the image in the format of [`common::abi::image`]: the little-endian header
    /// (magic, version, flags 0, text length, rodata length), the text, then the rodata.
    ///
    /// # Panics
    /// If `text` or `rodata` is longer than `u32::MAX` bytes. Images from [`super::link`] are
    /// far below that (the ABI limits them); building a bigger one by hand breaks the contract.
    pub fn to_bytes(&self) -> Vec<u8> {
        assert!(
            u32::try_from(self.text.len()).is_ok() && u32::try_from(self.rodata.len()).is_ok(),
            "program text or rodata over u32::MAX bytes"
        );
        firmware::ebpf::encode_image(&self.text, &self.rodata)
    }
}
