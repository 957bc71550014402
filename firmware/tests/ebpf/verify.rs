//! Load-time checks: malformed image headers and programs the verifier must refuse, each a
//! typed error.

use crate::util::{asm, cat, load, raw};
use common::abi::{self, image};
use firmware::ebpf::{encode_image, LoadError, Program, VerifyError};

const EXIT: u8 = 0x95;

fn verify(text: &[u8]) -> VerifyError {
    match load(text) {
        Err(LoadError::Verify(e)) => e,
        other => panic!("expected a verifier error, got {other:?}"),
    }
}

/// A well-formed image with read-only data loads and exposes its sizes.
#[test]
fn good_image_loads() {
    let text = asm("mov64 r0, 0\nexit");
    let p = Program::load(&encode_image(&text, b"hello")).expect("load");
    assert_eq!(p.insn_count(), 2);
    assert_eq!(p.rodata(), b"hello");
}

/// Images that are short, carry the wrong magic, version or flags, misaligned text, too much
/// read-only data, or lengths that disagree with the size are refused.
#[test]
fn malformed_headers() {
    let good = encode_image(&asm("exit"), b"ro");
    assert!(matches!(
        Program::load(&good[..10]),
        Err(LoadError::TooShort { len: 10 })
    ));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(
        Program::load(&bad),
        Err(LoadError::BadMagic { .. })
    ));
    let mut bad = good.clone();
    bad[image::VERSION_OFFSET] = 9;
    assert!(matches!(
        Program::load(&bad),
        Err(LoadError::UnsupportedVersion { found: 9 })
    ));
    let mut bad = good.clone();
    bad[image::FLAGS_OFFSET] = 1;
    assert!(matches!(
        Program::load(&bad),
        Err(LoadError::UnsupportedFlags { flags: 1 })
    ));
    let mut bad = good.clone();
    bad[image::TEXT_LEN_OFFSET] = 7;
    assert!(matches!(
        Program::load(&bad),
        Err(LoadError::TextNotAligned { text_len: 7 })
    ));
    let mut bad = good.clone();
    bad[image::TEXT_LEN_OFFSET] = 16;
    assert!(matches!(
        Program::load(&bad),
        Err(LoadError::LengthMismatch { .. })
    ));
    let mut bad = good.clone();
    bad.push(0);
    assert!(matches!(
        Program::load(&bad),
        Err(LoadError::LengthMismatch { expected, actual }) if actual == expected + 1
    ));
    let big = vec![0u8; abi::MAX_RODATA_BYTES as usize + 1];
    assert!(matches!(
        Program::load(&encode_image(&asm("exit"), &big)),
        Err(LoadError::RodataTooLarge { .. })
    ));
    assert!(matches!(
        Program::load(&[]),
        Err(LoadError::TooShort { len: 0 })
    ));
}

/// Empty and oversized programs are refused.
#[test]
fn size_limits() {
    assert_eq!(verify(&[]), VerifyError::Empty);
    let mut text = asm("mov64 r0, 0").repeat(abi::MAX_PROGRAM_INSNS as usize);
    text.extend(asm("exit"));
    assert_eq!(
        verify(&text),
        VerifyError::TooLarge {
            insns: abi::MAX_PROGRAM_INSNS + 1
        }
    );
}

/// Unknown opcodes, and known-but-unsupported ones (ld_abs, callx, map lddw), are refused.
#[test]
fn unknown_and_unsupported_opcodes() {
    let bad = cat(&[raw(0xff, 0, 0, 0, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&bad),
        VerifyError::UnknownOpcode {
            pc: 0,
            opcode: 0xff
        }
    );
    let neg_x = cat(&[raw(0x8f, 0, 1, 0, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert!(matches!(
        verify(&neg_x),
        VerifyError::UnknownOpcode { pc: 0, .. }
    ));
    let exit32 = cat(&[raw(0x96, 0, 0, 0, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert!(matches!(
        verify(&exit32),
        VerifyError::UnknownOpcode { pc: 0, .. }
    ));
    let ldabs = cat(&[asm("ldabsw 4"), raw(EXIT, 0, 0, 0, 0)]);
    assert!(matches!(
        verify(&ldabs),
        VerifyError::UnsupportedOpcode {
            pc: 0,
            opcode: 0x20
        }
    ));
    let map_load = cat(&[
        raw(0x18, 1, 1, 0, 0),
        raw(0, 0, 0, 0, 0),
        raw(EXIT, 0, 0, 0, 0),
    ]);
    assert!(matches!(
        verify(&map_load),
        VerifyError::UnsupportedOpcode { pc: 0, .. }
    ));
    let callx_reg = cat(&[raw(0x8d, 1, 0, 0, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert!(matches!(
        verify(&callx_reg),
        VerifyError::UnsupportedOpcode { pc: 0, .. }
    ));
}

/// Bad offsets and immediates that select no operation are refused.
#[test]
fn bad_modifiers() {
    let sdiv2 = cat(&[raw(0x3f, 0, 1, 2, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(verify(&sdiv2), VerifyError::InvalidOffset { pc: 0, off: 2 });
    let movsx7 = cat(&[raw(0xbf, 0, 1, 7, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&movsx7),
        VerifyError::InvalidOffset { pc: 0, off: 7 }
    );
    let movsx32_32 = cat(&[raw(0xbc, 0, 1, 32, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert!(matches!(
        verify(&movsx32_32),
        VerifyError::InvalidOffset { .. }
    ));
    let be24 = cat(&[raw(0xdc, 0, 0, 0, 24), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&be24),
        VerifyError::InvalidImmediate { pc: 0, imm: 24 }
    );
    let atomic_sub = cat(&[raw(0xdb, 10, 1, -8, 0x10), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&atomic_sub),
        VerifyError::InvalidImmediate { pc: 0, imm: 0x10 }
    );
}

/// Register numbers above r10 and writes to r10 (ALU, load, fetching atomic) are refused;
/// storing through r10 is fine.
#[test]
fn registers() {
    let r11 = cat(&[raw(0xb7, 11, 0, 0, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&r11),
        VerifyError::InvalidRegister { pc: 0, reg: 11 }
    );
    let src15 = cat(&[raw(0xbf, 0, 15, 0, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&src15),
        VerifyError::InvalidRegister { pc: 0, reg: 15 }
    );
    assert_eq!(
        verify(&asm("mov64 r10, 0\nexit")),
        VerifyError::WriteToFrameRegister { pc: 0 }
    );
    assert_eq!(
        verify(&asm("mov64 r0, 0\nldxdw r10, [r10-8]\nexit")),
        VerifyError::WriteToFrameRegister { pc: 1 }
    );
    assert_eq!(
        verify(&asm("lddw r10, 5\nexit")),
        VerifyError::WriteToFrameRegister { pc: 0 }
    );
    let fetch_r10 = cat(&[raw(0xdb, 1, 10, 0, 0x01), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(
        verify(&fetch_r10),
        VerifyError::WriteToFrameRegister { pc: 0 }
    );
    assert!(load(&asm("stdw [r10-8], 1\nmov64 r0, r10\nexit")).is_ok());
}

/// Jumps out of the program (either direction) and into the second slot of lddw are refused.
#[test]
fn jump_targets() {
    assert_eq!(
        verify(&asm("ja +5\nexit")),
        VerifyError::JumpOutOfRange { pc: 0, target: 6 }
    );
    assert_eq!(
        verify(&asm("mov64 r0, 0\njeq r0, 0, -3\nexit")),
        VerifyError::JumpOutOfRange { pc: 1, target: -1 }
    );
    assert_eq!(
        verify(&asm("ja +1\nlddw r0, 5\nexit")),
        VerifyError::JumpIntoImmediate { pc: 0, target: 2 }
    );
    let gotol_out = cat(&[raw(0x06, 0, 0, 0, 100), raw(EXIT, 0, 0, 0, 0)]);
    assert!(matches!(
        verify(&gotol_out),
        VerifyError::JumpOutOfRange { pc: 0, target: 101 }
    ));
}

/// lddw cut off at the end or with a non-zero second-slot opcode is refused.
#[test]
fn malformed_wide_load() {
    let cut = raw(0x18, 0, 0, 0, 1);
    assert_eq!(verify(&cut), VerifyError::MalformedWideLoad { pc: 0 });
    let bad_second = cat(&[
        raw(0x18, 0, 0, 0, 1),
        raw(0x07, 0, 0, 0, 0),
        raw(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(
        verify(&bad_second),
        VerifyError::MalformedWideLoad { pc: 0 }
    );
}

/// Helper ids outside 1..=MAX_ID are refused.
#[test]
fn unknown_helper() {
    assert_eq!(
        verify(&asm("call 0\nexit")),
        VerifyError::UnknownHelper { pc: 0, id: 0 }
    );
    assert_eq!(
        verify(&asm("call 6\nexit")),
        VerifyError::UnknownHelper { pc: 0, id: 6 }
    );
    assert!(load(&asm("call 5\nexit")).is_ok());
}

/// Local calls outside the program and into lddw's second slot are refused.
#[test]
fn call_targets() {
    assert_eq!(
        verify(&asm("callx 3\nexit")),
        VerifyError::CallOutOfRange { pc: 0, target: 4 }
    );
    assert_eq!(
        verify(&asm("callx -2\nexit")),
        VerifyError::CallOutOfRange { pc: 0, target: -1 }
    );
    assert_eq!(
        verify(&asm("callx 2\nexit\nlddw r0, 1\nexit")),
        VerifyError::JumpIntoImmediate { pc: 0, target: 3 }
    );
}

/// A static chain of nested calls deeper than MAX_CALL_DEPTH frames is refused; one exactly
/// at the limit loads.
#[test]
fn static_call_depth() {
    let chain = |frames: u32| {
        // Function k (k = 0..frames) is `callx +1; exit` except the last: `exit`.
        let mut src = String::new();
        for _ in 1..frames {
            src.push_str("callx 1\nexit\n");
        }
        src.push_str("exit");
        asm(&src)
    };
    assert!(load(&chain(abi::MAX_CALL_DEPTH)).is_ok());
    assert_eq!(
        verify(&chain(abi::MAX_CALL_DEPTH + 1)),
        VerifyError::CallDepthExceeded {
            depth: abi::MAX_CALL_DEPTH + 1
        }
    );
}

/// Division and modulo by an immediate zero are refused, 32- and 64-bit, signed or not.
#[test]
fn division_by_constant_zero() {
    for src in ["div64 r0, 0", "mod64 r0, 0", "div32 r0, 0", "mod32 r0, 0"] {
        assert_eq!(
            verify(&asm(&format!("mov64 r0, 1\n{src}\nexit"))),
            VerifyError::DivisionByZero { pc: 1 },
            "{src}"
        );
    }
    let sdiv0 = cat(&[raw(0x37, 0, 0, 1, 0), raw(EXIT, 0, 0, 0, 0)]);
    assert_eq!(verify(&sdiv0), VerifyError::DivisionByZero { pc: 0 });
}

/// A program whose last instruction could fall through is refused.
#[test]
fn falls_off_end() {
    assert_eq!(verify(&asm("mov64 r0, 0")), VerifyError::FallsOffEnd);
    assert_eq!(
        verify(&asm("mov64 r0, 0\njeq r0, 0, -1")),
        VerifyError::FallsOffEnd
    );
    assert!(load(&asm("exit\nja -1")).is_ok());
}

/// Errors read as one sentence naming the problem.
#[test]
fn errors_display() {
    let e = LoadError::Verify(VerifyError::UnknownHelper { pc: 3, id: 9 });
    assert_eq!(
        e.to_string(),
        "program rejected: call to unknown helper 9 at instruction 3"
    );
    assert!(std::error::Error::source(&e).is_some());
}
