//! Why the device refused a program image: the loader's and the verifier's errors.
//!
//! The firmware's verifier (`firmware::ebpf`) produces them, and a Load Program completion that
//! ends in `Status::ProgramRejected` carries one to the host
//! (`CommandResult::Rejected`), so the host names the precise reason without verifying the
//! image itself. Data and their sentences only, and the wire form [`LoadErrorWire`] whose kinds
//! are append-only, pinned by the golden-bytes tests below.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::abi::{self, image};

/// Why the verifier rejected a program's instructions. `pc` is the index of the 8-byte slot.
/// Travels inside a [`LoadError`], in its [`LoadErrorWire`] form.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
/// [`VerifyError`]). A Load Program completion carries it, as a [`LoadErrorWire`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "LoadErrorWire", try_from = "LoadErrorWire")]
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

/// The wire form of a [`LoadError`]: which error it is and its fields (at most two; signed ones
/// in `b`, a magic number as its little-endian `u32`). `kind` numbers the [`LoadError`]
/// variants from 0 and the [`VerifyError`] ones from [`LoadErrorWire::VERIFY`], in declaration
/// order; kinds are append-only.
///
/// Written out by hand rather than derived on the enums: serde's derive for their 24 variants
/// cost the board's image (which must stay within 128 KiB of code) about 600 bytes more than
/// this fixed struct and one match.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoadErrorWire {
    pub kind: u8,
    pub a: u64,
    /// A signed field as the bits of its `i64` (no zigzag code on the board for one field).
    pub b: u64,
}

impl LoadErrorWire {
    /// `kind` of the first [`VerifyError`] variant.
    pub const VERIFY: u8 = 64;
}

impl From<LoadError> for LoadErrorWire {
    fn from(e: LoadError) -> Self {
        use VerifyError as V;
        let (kind, a, b): (u8, u64, i64) = match e {
            LoadError::TooShort { len } => (0, len.into(), 0),
            LoadError::BadMagic { found } => (1, u32::from_le_bytes(found).into(), 0),
            LoadError::UnsupportedVersion { found } => (2, found.into(), 0),
            LoadError::UnsupportedFlags { flags } => (3, flags.into(), 0),
            LoadError::TextNotAligned { text_len } => (4, text_len.into(), 0),
            LoadError::RodataTooLarge { rodata_len } => (5, rodata_len.into(), 0),
            // Cast back by the receiver: the bits round-trip.
            LoadError::LengthMismatch { expected, actual } => (6, expected, actual as i64),
            LoadError::Verify(v) => {
                let (kind, a, b): (u8, u32, i64) = match v {
                    V::Empty => (0, 0, 0),
                    V::TooLarge { insns } => (1, insns, 0),
                    V::UnknownOpcode { pc, opcode } => (2, pc, opcode.into()),
                    V::UnsupportedOpcode { pc, opcode } => (3, pc, opcode.into()),
                    V::InvalidRegister { pc, reg } => (4, pc, reg.into()),
                    V::WriteToFrameRegister { pc } => (5, pc, 0),
                    V::InvalidOffset { pc, off } => (6, pc, off.into()),
                    V::InvalidImmediate { pc, imm } => (7, pc, imm.into()),
                    V::JumpOutOfRange { pc, target } => (8, pc, target),
                    V::JumpIntoImmediate { pc, target } => (9, pc, target.into()),
                    V::MalformedWideLoad { pc } => (10, pc, 0),
                    V::UnknownHelper { pc, id } => (11, pc, id.into()),
                    V::CallOutOfRange { pc, target } => (12, pc, target),
                    V::CallDepthExceeded { depth } => (13, depth, 0),
                    V::DivisionByZero { pc } => (14, pc, 0),
                    V::FallsOffEnd => (15, 0, 0),
                };
                (Self::VERIFY + kind, a.into(), b)
            }
        };
        LoadErrorWire {
            kind,
            a,
            b: b as u64,
        }
    }
}

/// A [`LoadErrorWire`] that names no error this side knows, or with a field out of its range.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UnknownLoadError(pub LoadErrorWire);

impl fmt::Display for UnknownLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown program rejection (kind {})", self.0.kind)
    }
}

impl TryFrom<LoadErrorWire> for LoadError {
    type Error = UnknownLoadError;

    fn try_from(w: LoadErrorWire) -> Result<Self, UnknownLoadError> {
        use VerifyError as V;
        let bad = UnknownLoadError(w);
        let b = w.b as i64;
        let a32 = u32::try_from(w.a).map_err(|_| bad);
        let a16 = u16::try_from(w.a).map_err(|_| bad);
        let b8 = u8::try_from(b).map_err(|_| bad);
        let b32 = u32::try_from(b).map_err(|_| bad);
        Ok(match w.kind {
            0 => LoadError::TooShort { len: a32? },
            1 => LoadError::BadMagic {
                found: a32?.to_le_bytes(),
            },
            2 => LoadError::UnsupportedVersion { found: a16? },
            3 => LoadError::UnsupportedFlags { flags: a16? },
            4 => LoadError::TextNotAligned { text_len: a32? },
            5 => LoadError::RodataTooLarge { rodata_len: a32? },
            6 => LoadError::LengthMismatch {
                expected: w.a,
                actual: w.b,
            },
            kind => {
                let pc = a32?;
                LoadError::Verify(match kind.wrapping_sub(LoadErrorWire::VERIFY) {
                    0 => V::Empty,
                    1 => V::TooLarge { insns: a32? },
                    2 => V::UnknownOpcode { pc, opcode: b8? },
                    3 => V::UnsupportedOpcode { pc, opcode: b8? },
                    4 => V::InvalidRegister { pc, reg: b8? },
                    5 => V::WriteToFrameRegister { pc },
                    6 => V::InvalidOffset {
                        pc,
                        off: i16::try_from(b).map_err(|_| bad)?,
                    },
                    7 => V::InvalidImmediate {
                        pc,
                        imm: i32::try_from(b).map_err(|_| bad)?,
                    },
                    8 => V::JumpOutOfRange { pc, target: b },
                    9 => V::JumpIntoImmediate { pc, target: b32? },
                    10 => V::MalformedWideLoad { pc },
                    11 => V::UnknownHelper { pc, id: b32? },
                    12 => V::CallOutOfRange { pc, target: b },
                    13 => V::CallDepthExceeded { depth: a32? },
                    14 => V::DivisionByZero { pc },
                    15 => V::FallsOffEnd,
                    _ => return Err(bad),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kinds and field encodings are pinned (a change breaks the device link), and every
    /// error comes back as it went.
    #[test]
    fn golden_bytes() {
        let bytes = |e: LoadError| postcard::to_allocvec(&e).unwrap();
        assert_eq!(bytes(LoadError::TooShort { len: 10 }), [0, 10, 0]);
        assert_eq!(
            bytes(LoadError::BadMagic { found: *b"\x7fELF" }),
            [1, 0xff, 0x8a, 0xb1, 0xb2, 0x04, 0]
        );
        assert_eq!(
            bytes(LoadError::LengthMismatch {
                expected: 300,
                actual: 24
            }),
            [6, 0xac, 0x02, 24]
        );
        assert_eq!(bytes(LoadError::Verify(VerifyError::Empty)), [64, 0, 0]);
        assert_eq!(
            bytes(LoadError::Verify(VerifyError::UnknownHelper {
                pc: 1,
                id: 99
            })),
            [75, 1, 99]
        );
        assert_eq!(
            bytes(LoadError::Verify(VerifyError::JumpOutOfRange {
                pc: 2,
                target: -3
            })),
            [72, 2, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            "a signed field goes as the bits of its i64"
        );
        assert_eq!(
            bytes(LoadError::Verify(VerifyError::FallsOffEnd)),
            [79, 0, 0]
        );
        let all = [
            LoadError::TooShort { len: 3 },
            LoadError::BadMagic {
                found: [1, 2, 3, 4],
            },
            LoadError::UnsupportedVersion { found: 9 },
            LoadError::UnsupportedFlags { flags: 0xffff },
            LoadError::TextNotAligned { text_len: 7 },
            LoadError::RodataTooLarge {
                rodata_len: u32::MAX,
            },
            LoadError::LengthMismatch {
                expected: u64::MAX,
                actual: u64::MAX - 1,
            },
        ];
        let verify = [
            VerifyError::Empty,
            VerifyError::TooLarge { insns: 70_000 },
            VerifyError::UnknownOpcode {
                pc: 1,
                opcode: 0xff,
            },
            VerifyError::UnsupportedOpcode {
                pc: 2,
                opcode: 0x20,
            },
            VerifyError::InvalidRegister { pc: 3, reg: 11 },
            VerifyError::WriteToFrameRegister { pc: 4 },
            VerifyError::InvalidOffset {
                pc: 5,
                off: i16::MIN,
            },
            VerifyError::InvalidImmediate {
                pc: 6,
                imm: i32::MIN,
            },
            VerifyError::JumpOutOfRange {
                pc: 7,
                target: i64::MIN,
            },
            VerifyError::JumpIntoImmediate { pc: 8, target: 9 },
            VerifyError::MalformedWideLoad { pc: u32::MAX },
            VerifyError::UnknownHelper {
                pc: 10,
                id: u32::MAX,
            },
            VerifyError::CallOutOfRange {
                pc: 11,
                target: i64::MAX,
            },
            VerifyError::CallDepthExceeded { depth: 9 },
            VerifyError::DivisionByZero { pc: 12 },
            VerifyError::FallsOffEnd,
        ];
        for e in all.into_iter().chain(verify.map(LoadError::Verify)) {
            assert_eq!(postcard::from_bytes::<LoadError>(&bytes(e)).unwrap(), e);
        }
    }

    /// A kind this side does not know, or a field out of its range, is refused.
    #[test]
    fn unknown_kinds_are_refused() {
        for (kind, a, b) in [
            (7, 0, 0),
            (63, 0, 0),
            (80, 0, 0),
            (255, 0, 0),
            (0, 1 << 32, 0),
            (66, 1, 256),
        ] {
            let wire = LoadErrorWire { kind, a, b };
            assert_eq!(LoadError::try_from(wire), Err(UnknownLoadError(wire)));
            let bytes = postcard::to_allocvec(&wire).unwrap();
            assert!(postcard::from_bytes::<LoadError>(&bytes).is_err());
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
