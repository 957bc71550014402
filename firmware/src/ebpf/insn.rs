//! Raw eBPF instruction encoding (RFC 9669) and the pre-decoded form the interpreter runs.
//!
//! The verifier turns every 8-byte slot into one [`Insn`] whose [`Op`] already names the whole
//! operation (class, source, width, signedness), so the interpreter does one `match` per
//! instruction and never looks at opcode bits again.

/// Instruction classes (low three bits of the opcode).
pub(crate) mod class {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
}

/// Source bit of ALU and jump opcodes: register (`X`) rather than immediate (`K`).
pub(crate) const SRC_X: u8 = 0x08;

/// Load/store modes (top three bits).
pub(crate) mod mode {
    pub const IMM: u8 = 0x00;
    pub const ABS: u8 = 0x20;
    pub const IND: u8 = 0x40;
    pub const MEM: u8 = 0x60;
    pub const MEMSX: u8 = 0x80;
    pub const ATOMIC: u8 = 0xc0;
}

/// Load/store sizes (bits 3-4).
pub(crate) mod size {
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
}

/// Atomic operation codes (the `imm` of an atomic store).
pub mod atomic {
    pub const ADD: i32 = 0x00;
    pub const OR: i32 = 0x40;
    pub const AND: i32 = 0x50;
    pub const XOR: i32 = 0xa0;
    pub const FETCH: i32 = 0x01;
    pub const XCHG: i32 = 0xe0 | FETCH;
    pub const CMPXCHG: i32 = 0xf0 | FETCH;
}

/// The opcode of a 64-bit immediate load (`lddw`), which takes two slots.
pub(crate) const LDDW: u8 = class::LD | mode::IMM | size::DW;

/// One raw 8-byte instruction slot, fields split out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawInsn {
    pub opcode: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl RawInsn {
    /// Splits one little-endian slot.
    pub fn from_bytes(b: [u8; 8]) -> Self {
        RawInsn {
            opcode: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A fully resolved operation. `Imm` variants take the operand from [`Insn::imm`], `Reg`
/// variants from register `src`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    // 64-bit ALU.
    Add64Imm,
    Add64Reg,
    Sub64Imm,
    Sub64Reg,
    Mul64Imm,
    Mul64Reg,
    Div64Imm,
    Div64Reg,
    SDiv64Imm,
    SDiv64Reg,
    Mod64Imm,
    Mod64Reg,
    SMod64Imm,
    SMod64Reg,
    Or64Imm,
    Or64Reg,
    And64Imm,
    And64Reg,
    Xor64Imm,
    Xor64Reg,
    Lsh64Imm,
    Lsh64Reg,
    Rsh64Imm,
    Rsh64Reg,
    Arsh64Imm,
    Arsh64Reg,
    Neg64,
    Mov64Imm,
    Mov64Reg,
    MovSx64B,
    MovSx64H,
    MovSx64W,
    // 32-bit ALU: the result is zero-extended into the 64-bit register.
    Add32Imm,
    Add32Reg,
    Sub32Imm,
    Sub32Reg,
    Mul32Imm,
    Mul32Reg,
    Div32Imm,
    Div32Reg,
    SDiv32Imm,
    SDiv32Reg,
    Mod32Imm,
    Mod32Reg,
    SMod32Imm,
    SMod32Reg,
    Or32Imm,
    Or32Reg,
    And32Imm,
    And32Reg,
    Xor32Imm,
    Xor32Reg,
    Lsh32Imm,
    Lsh32Reg,
    Rsh32Imm,
    Rsh32Reg,
    Arsh32Imm,
    Arsh32Reg,
    Neg32,
    Mov32Imm,
    Mov32Reg,
    MovSx32B,
    MovSx32H,
    // Byte order: `le*` on a little-endian machine only truncates; `be*` and `bswap*` swap.
    ZeroExt16,
    ZeroExt32,
    Nop,
    Swap16,
    Swap32,
    Swap64,
    // Memory: address is `reg + off`.
    Ldx8,
    Ldx16,
    Ldx32,
    Ldx64,
    Ldsx8,
    Ldsx16,
    Ldsx32,
    St8,
    St16,
    St32,
    St64,
    Stx8,
    Stx16,
    Stx32,
    Stx64,
    /// Atomic read-modify-write of 4 bytes; the atomic op code is in `imm`.
    Atomic32,
    /// Atomic read-modify-write of 8 bytes; the atomic op code is in `imm`.
    Atomic64,
    /// 64-bit immediate load: the full value is in `imm`; the next slot is skipped.
    Lddw,
    // Jumps: `off` holds the absolute target instruction.
    Ja,
    JeqImm,
    JeqReg,
    JgtImm,
    JgtReg,
    JgeImm,
    JgeReg,
    JltImm,
    JltReg,
    JleImm,
    JleReg,
    JsetImm,
    JsetReg,
    JneImm,
    JneReg,
    JsgtImm,
    JsgtReg,
    JsgeImm,
    JsgeReg,
    JsltImm,
    JsltReg,
    JsleImm,
    JsleReg,
    Jeq32Imm,
    Jeq32Reg,
    Jgt32Imm,
    Jgt32Reg,
    Jge32Imm,
    Jge32Reg,
    Jlt32Imm,
    Jlt32Reg,
    Jle32Imm,
    Jle32Reg,
    Jset32Imm,
    Jset32Reg,
    Jne32Imm,
    Jne32Reg,
    Jsgt32Imm,
    Jsgt32Reg,
    Jsge32Imm,
    Jsge32Reg,
    Jslt32Imm,
    Jslt32Reg,
    Jsle32Imm,
    Jsle32Reg,
    /// Helper call; the helper id is in `imm`.
    CallHelper,
    /// bpf-to-bpf call; `off` holds the absolute target instruction.
    CallLocal,
    Exit,
    /// The second slot of a 64-bit immediate load; the verifier makes it unreachable.
    WideSecondHalf,
}

/// One pre-decoded instruction (16 bytes).
///
/// Field use depends on [`Op`]: ALU immediates are stored sign-extended to 64 bits (32-bit
/// operations use the low half); for memory operations `off` is the address offset and `imm`
/// the stored immediate; for jumps and local calls `off` is the absolute target.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Insn {
    pub op: Op,
    pub dst: u8,
    pub src: u8,
    pub off: i32,
    pub imm: u64,
}
