//! Why the device refused a program image: the loader's and the verifier's errors.
//!
//! The firmware's verifier (`firmware::ebpf`) produces them, and a Load Program completion that
//! ends in `Status::ProgramRejected` carries one to the host
//! (`CommandResult::Rejected`), so the host names the precise reason without verifying the
//! image itself. Data and their sentences only; enum variants are append-only, pinned by the
//! golden-bytes tests below.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::abi::{self, image};

/// Why the verifier rejected a program's instructions. Variants are append-only. `pc` is the index of the 8-byte slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VerifyError {
    /// The program has no instructions.
    Empty,
    /// The program has more than [`abi::MAX_PROGRAM_INSNS`] slots.
    TooLarge { insns: u32 },
    /// The opcode is not an eBPF instruction.
    UnknownOpcode { pc: u32, opcode: u8 },
    /// The opcode is eBPF but not supported here (legacy packet loads, tail calls, `callx`,
    /// calls by BTF id, map loads).
    UnsupportedOpcode { pc: u32, opcode: u8 },
    /// A register field names a register above `r10`.
    InvalidRegister { pc: u32, reg: u8 },
    /// The instruction would write the read-only frame pointer `r10`.
    WriteToFrameRegister { pc: u32 },
    /// The offset field selects no operation (e.g. `sdiv` with offset 2, `movsx` with 7).
    InvalidOffset { pc: u32, off: i16 },
    /// The immediate selects no operation (a byte swap width or an atomic operation).
    InvalidImmediate { pc: u32, imm: i32 },
    /// A jump leaves the program.
    JumpOutOfRange { pc: u32, target: i64 },
    /// A jump or call lands on the second slot of a 64-bit immediate load.
    JumpIntoImmediate { pc: u32, target: u32 },
    /// A 64-bit immediate load is cut off by the end of the program or its second slot is
    /// not all zeros apart from the immediate.
    MalformedWideLoad { pc: u32 },
    /// A helper call names an unknown helper id.
    UnknownHelper { pc: u32, id: u32 },
    /// A bpf-to-bpf call lands outside the program.
    CallOutOfRange { pc: u32, target: i64 },
    /// The static bpf-to-bpf call chain is deeper than [`abi::MAX_CALL_DEPTH`] frames.
    CallDepthExceeded { depth: u32 },
    /// Division or modulo by an immediate zero.
    DivisionByZero { pc: u32 },
    /// The last instruction is neither `exit` nor an unconditional jump.
    FallsOffEnd,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VerifyError::Empty => write!(f, "the program has no instructions"),
            VerifyError::TooLarge { insns } => write!(
                f,
                "the program has {insns} instructions, more than the limit of {}",
                abi::MAX_PROGRAM_INSNS
            ),
            VerifyError::UnknownOpcode { pc, opcode } => {
                write!(f, "unknown opcode {opcode:#04x} at instruction {pc}")
            }
            VerifyError::UnsupportedOpcode { pc, opcode } => {
                write!(f, "unsupported opcode {opcode:#04x} at instruction {pc}")
            }
            VerifyError::InvalidRegister { pc, reg } => {
                write!(f, "invalid register r{reg} at instruction {pc}")
            }
            VerifyError::WriteToFrameRegister { pc } => {
                write!(f, "instruction {pc} writes the read-only frame pointer r10")
            }
            VerifyError::InvalidOffset { pc, off } => {
                write!(f, "invalid offset {off} for the opcode at instruction {pc}")
            }
            VerifyError::InvalidImmediate { pc, imm } => {
                write!(
                    f,
                    "invalid immediate {imm} for the opcode at instruction {pc}"
                )
            }
            VerifyError::JumpOutOfRange { pc, target } => {
                write!(f, "jump at instruction {pc} to {target} leaves the program")
            }
            VerifyError::JumpIntoImmediate { pc, target } => write!(
                f,
                "jump at instruction {pc} lands in the middle of the 64-bit load at {target}"
            ),
            VerifyError::MalformedWideLoad { pc } => {
                write!(f, "malformed 64-bit immediate load at instruction {pc}")
            }
            VerifyError::UnknownHelper { pc, id } => {
                write!(f, "call to unknown helper {id} at instruction {pc}")
            }
            VerifyError::CallOutOfRange { pc, target } => {
                write!(f, "call at instruction {pc} to {target} leaves the program")
            }
            VerifyError::CallDepthExceeded { depth } => write!(
                f,
                "bpf-to-bpf calls nest {depth} frames deep, more than the limit of {}",
                abi::MAX_CALL_DEPTH
            ),
            VerifyError::DivisionByZero { pc } => {
                write!(
                    f,
                    "division or modulo by the constant zero at instruction {pc}"
                )
            }
            VerifyError::FallsOffEnd => write!(
                f,
                "the last instruction is neither exit nor an unconditional jump"
            ),
        }
    }
}

impl core::error::Error for VerifyError {}

/// Why a program image was refused: its header, or its instructions (the verifier's
/// [`VerifyError`]). Variants are append-only: a Load Program completion carries it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LoadError {
    /// The image is shorter than its header.
    TooShort { len: u32 },
    /// The image does not start with [`image::MAGIC`].
    BadMagic { found: [u8; 4] },
    /// The header's format version is not [`image::VERSION`].
    UnsupportedVersion { found: u16 },
    /// The header's flags are not zero.
    UnsupportedFlags { flags: u16 },
    /// The instruction length is not a multiple of 8 bytes.
    TextNotAligned { text_len: u32 },
    /// The read-only data is larger than [`abi::MAX_RODATA_BYTES`].
    RodataTooLarge { rodata_len: u32 },
    /// The header's lengths do not add up to the image's size.
    LengthMismatch { expected: u64, actual: u64 },
    /// The instructions failed verification.
    Verify(VerifyError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LoadError::TooShort { len } => write!(
                f,
                "program image of {len} bytes is shorter than its {}-byte header",
                image::HEADER_BYTES
            ),
            LoadError::BadMagic { found } => {
                write!(f, "program image has magic {found:02x?}, expected \"CSDP\"")
            }
            LoadError::UnsupportedVersion { found } => write!(
                f,
                "program image version {found} is not supported (expected {})",
                image::VERSION
            ),
            LoadError::UnsupportedFlags { flags } => {
                write!(f, "program image flags {flags:#06x} are not supported")
            }
            LoadError::TextNotAligned { text_len } => write!(
                f,
                "program text of {text_len} bytes is not a whole number of instructions"
            ),
            LoadError::RodataTooLarge { rodata_len } => write!(
                f,
                "program read-only data of {rodata_len} bytes exceeds the limit of {}",
                abi::MAX_RODATA_BYTES
            ),
            LoadError::LengthMismatch { expected, actual } => write!(
                f,
                "program image is {actual} bytes but its header describes {expected}"
            ),
            LoadError::Verify(e) => write!(f, "program rejected: {e}"),
        }
    }
}

impl core::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LoadError::Verify(e) => Some(e),
            _ => None,
        }
    }
}

impl From<VerifyError> for LoadError {
    fn from(e: VerifyError) -> Self {
        LoadError::Verify(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variant tags and field encodings are pinned: a change breaks the device link.
    #[test]
    fn golden_bytes() {
        let bytes = |e: LoadError| postcard::to_allocvec(&e).unwrap();
        assert_eq!(bytes(LoadError::TooShort { len: 10 }), [0, 10]);
        assert_eq!(
            bytes(LoadError::BadMagic { found: *b"ELF\x7f" }),
            [1, b'E', b'L', b'F', 0x7f]
        );
        assert_eq!(
            bytes(LoadError::LengthMismatch {
                expected: 300,
                actual: 24
            }),
            [6, 0xac, 0x02, 24]
        );
        assert_eq!(
            bytes(LoadError::Verify(VerifyError::Empty)),
            [7, 0],
            "VerifyError::Empty"
        );
        assert_eq!(
            bytes(LoadError::Verify(VerifyError::UnknownHelper {
                pc: 1,
                id: 99
            })),
            [7, 11, 1, 99]
        );
        assert_eq!(
            bytes(LoadError::Verify(VerifyError::JumpOutOfRange {
                pc: 2,
                target: -3
            })),
            [7, 8, 2, 5],
            "a signed target is zigzag-encoded"
        );
        assert_eq!(bytes(LoadError::Verify(VerifyError::FallsOffEnd)), [7, 15]);
        for e in [
            LoadError::UnsupportedFlags { flags: 3 },
            LoadError::Verify(VerifyError::InvalidOffset { pc: 4, off: -1 }),
        ] {
            assert_eq!(postcard::from_bytes::<LoadError>(&bytes(e)).unwrap(), e);
        }
    }

    /// The sentences are the ones the host prints (the CLI and the mount's log quote them).
    #[test]
    fn sentences() {
        extern crate alloc;
        use alloc::string::ToString;
        assert_eq!(
            LoadError::Verify(VerifyError::UnknownHelper { pc: 1, id: 99 }).to_string(),
            "program rejected: call to unknown helper 99 at instruction 1"
        );
        assert_eq!(
            LoadError::TooShort { len: 3 }.to_string(),
            "program image of 3 bytes is shorter than its 16-byte header"
        );
    }
}
