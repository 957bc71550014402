//! Instruction semantics (RFC 9669), one opcode class at a time, in rbpf assembler text where
//! it can express the instruction and as hand-built bytes for the v4 additions.

use crate::util::{asm, cat, r0, r0_bytes, raw};
use common::abi;

const EXIT: u8 = 0x95;

/// 64-bit add/sub/mul wrap around and immediates are sign-extended.
#[test]
fn alu64_arithmetic_wraps() {
    assert_eq!(r0("mov64 r0, -1\nadd64 r0, 2\nexit"), 1);
    assert_eq!(r0("mov64 r0, 3\nsub64 r0, 5\nexit"), (-2i64) as u64);
    assert_eq!(r0("lddw r0, 0x8000000000000000\nmul64 r0, 2\nexit"), 0);
    assert_eq!(r0("mov64 r0, 7\nmov64 r1, 6\nmul64 r0, r1\nexit"), 42);
    assert_eq!(r0("mov64 r0, 0\nmov64 r1, 1\nsub64 r0, r1\nexit"), u64::MAX);
    assert_eq!(r0("mov64 r0, -1\nexit"), u64::MAX);
}

/// Unsigned 64-bit division and modulo, by immediates and registers, including by zero
/// (div gives 0, mod leaves dst unchanged) and by a sign-extended -1.
#[test]
fn alu64_div_mod() {
    assert_eq!(r0("mov64 r0, 100\ndiv64 r0, 7\nexit"), 14);
    assert_eq!(r0("mov64 r0, 100\nmod64 r0, 7\nexit"), 2);
    assert_eq!(r0("mov64 r0, 100\ndiv64 r0, -1\nexit"), 0);
    assert_eq!(r0("mov64 r0, 100\nmov64 r1, 0\ndiv64 r0, r1\nexit"), 0);
    assert_eq!(
        r0("lddw r0, 0x100000007\nmov64 r1, 0\nmod64 r0, r1\nexit"),
        0x1_0000_0007
    );
    assert_eq!(r0("mov64 r0, 100\nmov64 r1, 30\nmod64 r0, r1\nexit"), 10);
}

/// Bitwise ops, 64-bit shifts masked to 6 bits, arithmetic shift right and negation.
#[test]
fn alu64_bitwise_and_shifts() {
    assert_eq!(r0("mov64 r0, 0xf0\nor64 r0, 0x0f\nexit"), 0xff);
    assert_eq!(r0("mov64 r0, 0xff\nand64 r0, 0x3c\nexit"), 0x3c);
    assert_eq!(r0("mov64 r0, 0xff\nxor64 r0, -1\nexit"), !0xffu64);
    assert_eq!(r0("mov64 r0, 1\nmov64 r1, 65\nlsh64 r0, r1\nexit"), 2);
    assert_eq!(r0("mov64 r0, 1\nlsh64 r0, 63\nexit"), 1 << 63);
    assert_eq!(r0("mov64 r0, -1\nrsh64 r0, 60\nexit"), 0xf);
    assert_eq!(r0("mov64 r0, -16\narsh64 r0, 2\nexit"), (-4i64) as u64);
    assert_eq!(
        r0("mov64 r0, -16\nmov64 r1, 66\narsh64 r0, r1\nexit"),
        (-4i64) as u64
    );
    assert_eq!(r0("mov64 r0, 5\nneg64 r0\nexit"), (-5i64) as u64);
    assert_eq!(
        r0("mov64 r0, 9\nmov64 r1, r0\nmov64 r0, 0\nadd64 r0, r1\nexit"),
        9
    );
}

/// 32-bit ALU operations zero-extend their result and use 32-bit immediates.
#[test]
fn alu32_zero_extends() {
    assert_eq!(r0("lddw r0, 0xffffffffffffffff\nadd32 r0, 1\nexit"), 0);
    assert_eq!(r0("mov32 r0, -1\nexit"), 0xffff_ffff);
    assert_eq!(r0("lddw r0, 0x1ffffffff\nmov32 r0, r0\nexit"), 0xffff_ffff);
    assert_eq!(r0("mov32 r0, 3\nsub32 r0, 5\nexit"), 0xffff_fffe);
    assert_eq!(r0("mov32 r0, 0x10000\nmul32 r0, 0x10000\nexit"), 0);
    assert_eq!(r0("lddw r0, 0x5ffffffff\nor32 r0, 0\nexit"), 0xffff_ffff);
    assert_eq!(r0("lddw r0, 0x5ffffffff\nand32 r0, 0xf\nexit"), 0xf);
    assert_eq!(r0("lddw r0, 0x5ffffffff\nxor32 r0, 1\nexit"), 0xffff_fffe);
    assert_eq!(r0("mov32 r0, 1\nneg32 r0\nexit"), 0xffff_ffff);
}

/// 32-bit division and modulo, including by zero: div gives 0, mod keeps the low half and
/// zeroes the upper half.
#[test]
fn alu32_div_mod() {
    assert_eq!(r0("mov32 r0, 100\ndiv32 r0, 7\nexit"), 14);
    assert_eq!(r0("mov32 r0, 100\nmod32 r0, 7\nexit"), 2);
    assert_eq!(r0("lddw r0, 0x100000064\ndiv32 r0, 10\nexit"), 10);
    assert_eq!(r0("mov32 r0, 100\nmov32 r1, 0\ndiv32 r0, r1\nexit"), 0);
    assert_eq!(
        r0("lddw r0, 0x100000007\nmov32 r1, 0\nmod32 r0, r1\nexit"),
        7
    );
    // The divisor's upper half is ignored.
    assert_eq!(
        r0("mov32 r0, 100\nlddw r1, 0x100000000\ndiv32 r0, r1\nexit"),
        0
    );
}

/// 32-bit shifts are masked to 5 bits; arsh32 sign-fills within 32 bits.
#[test]
fn alu32_shifts() {
    assert_eq!(r0("mov32 r0, 1\nmov32 r1, 33\nlsh32 r0, r1\nexit"), 2);
    assert_eq!(r0("mov32 r0, 1\nlsh32 r0, 31\nexit"), 0x8000_0000);
    assert_eq!(r0("mov32 r0, -1\nrsh32 r0, 28\nexit"), 0xf);
    assert_eq!(r0("lddw r0, 0x80000000\narsh32 r0, 4\nexit"), 0xf800_0000);
    assert_eq!(
        r0("lddw r0, 0x180000000\nmov32 r1, 36\narsh32 r0, r1\nexit"),
        0xf800_0000
    );
}

fn sdiv(alu64: bool, dst: i64, divisor: i64, modulo: bool) -> u64 {
    let class = if alu64 { 0x07 } else { 0x04 };
    let code = if modulo { 0x90 } else { 0x30 };
    r0_bytes(&cat(&[
        asm(&format!(
            "lddw r0, {:#x}\nlddw r1, {:#x}",
            dst as u64, divisor as u64
        )),
        raw(code | 0x08 | class, 0, 1, 1, 0),
        raw(EXIT, 0, 0, 0, 0),
    ]))
}

/// Signed division and modulo (v4): truncation toward zero, the sign of the remainder follows
/// the dividend, INT_MIN / -1 does not trap, and division by zero has defined results.
#[test]
fn signed_div_mod() {
    assert_eq!(sdiv(true, -7, 2, false), (-3i64) as u64);
    assert_eq!(sdiv(true, -7, 2, true), (-1i64) as u64);
    assert_eq!(sdiv(true, 7, -2, true), 1);
    assert_eq!(sdiv(true, i64::MIN, -1, false), i64::MIN as u64);
    assert_eq!(sdiv(true, i64::MIN, -1, true), 0);
    assert_eq!(sdiv(true, -7, 0, false), 0);
    assert_eq!(sdiv(true, -7, 0, true), (-7i64) as u64);
    assert_eq!(sdiv(false, -7, 2, false), (-3i32) as u32 as u64);
    assert_eq!(sdiv(false, i32::MIN as i64, -1, false), 0x8000_0000);
    assert_eq!(sdiv(false, i32::MIN as i64, -1, true), 0);
    assert_eq!(sdiv(false, -7, 0, true), (-7i32) as u32 as u64);
    // Immediate forms.
    let imm = cat(&[
        asm("mov64 r0, -9"),
        raw(0x37, 0, 0, 1, -2), // sdiv64 r0, -2
        raw(0x97, 0, 0, 1, 3),  // smod64 r0, 3
        raw(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(r0_bytes(&imm), 1); // -9 / -2 = 4; 4 % 3 = 1
    let imm32 = cat(&[
        asm("mov32 r0, -9"),
        raw(0x34, 0, 0, 1, -2), // sdiv32 r0, -2 -> 4
        raw(0x94, 0, 0, 1, -3), // smod32 r0, -3 -> 1
        raw(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(r0_bytes(&imm32), 1);
}

/// Sign-extending moves (v4) for 8, 16 and 32 bits, 64- and 32-bit forms.
#[test]
fn movsx() {
    let mv = |class: u8, off: i16, v: u64| {
        r0_bytes(&cat(&[
            asm(&format!("lddw r1, {v}")),
            raw(0xb8 | class, 0, 1, off, 0),
            raw(EXIT, 0, 0, 0, 0),
        ]))
    };
    assert_eq!(mv(0x07, 8, 0x1_80), 0xffff_ffff_ffff_ff80);
    assert_eq!(mv(0x07, 16, 0x1_8000), 0xffff_ffff_ffff_8000);
    assert_eq!(mv(0x07, 32, 0x1_8000_0000), 0xffff_ffff_8000_0000);
    assert_eq!(mv(0x07, 8, 0x7f), 0x7f);
    assert_eq!(mv(0x04, 8, 0x80), 0xffff_ff80);
    assert_eq!(mv(0x04, 16, 0x8000), 0xffff_8000);
}

/// le16/32/64 truncate on this little-endian ISA; be16/32/64 and the v4 bswap swap bytes.
#[test]
fn byte_swaps() {
    let v = "lddw r0, 0x0102030405060708";
    assert_eq!(r0(&format!("{v}\nle16 r0\nexit")), 0x0708);
    assert_eq!(r0(&format!("{v}\nle32 r0\nexit")), 0x0506_0708);
    assert_eq!(r0(&format!("{v}\nle64 r0\nexit")), 0x0102_0304_0506_0708);
    assert_eq!(r0(&format!("{v}\nbe16 r0\nexit")), 0x0807);
    assert_eq!(r0(&format!("{v}\nbe32 r0\nexit")), 0x0807_0605);
    assert_eq!(r0(&format!("{v}\nbe64 r0\nexit")), 0x0807_0605_0403_0201);
    for (width, want) in [
        (16, 0x0807u64),
        (32, 0x0807_0605),
        (64, 0x0807_0605_0403_0201),
    ] {
        let p = cat(&[asm(v), raw(0xd7, 0, 0, 0, width), raw(EXIT, 0, 0, 0, 0)]);
        assert_eq!(r0_bytes(&p), want, "bswap{width}");
    }
}

/// Stores of immediates and registers and loads of 1, 2, 4 and 8 bytes on the stack,
/// little-endian, with the 8-byte immediate store sign-extended.
#[test]
fn loads_and_stores_every_size() {
    assert_eq!(r0("stdw [r10-8], -1\nldxdw r0, [r10-8]\nexit"), u64::MAX);
    assert_eq!(
        r0("stw [r10-8], 0x11223344\nldxw r0, [r10-8]\nexit"),
        0x1122_3344
    );
    assert_eq!(r0("sth [r10-8], 0x1122\nldxh r0, [r10-8]\nexit"), 0x1122);
    assert_eq!(r0("stb [r10-8], 0x11\nldxb r0, [r10-8]\nexit"), 0x11);
    assert_eq!(
        r0("lddw r1, 0x1122334455667788\nstxdw [r10-8], r1\nldxdw r0, [r10-8]\nexit"),
        0x1122_3344_5566_7788
    );
    assert_eq!(
        r0("lddw r1, 0x1122334455667788\nstxdw [r10-8], r1\nldxw r0, [r10-4]\nexit"),
        0x1122_3344
    );
    assert_eq!(
        r0("lddw r1, 0x1122334455667788\nstxdw [r10-8], r1\nldxh r0, [r10-7]\nexit"),
        0x6677
    );
    assert_eq!(
        r0("mov64 r1, 0x1234\nstxh [r10-2], r1\nstxb [r10-3], r1\nldxw r0, [r10-4]\nexit"),
        0x1234_3400
    );
    assert_eq!(
        r0("mov64 r1, -1\nstxw [r10-4], r1\nldxdw r0, [r10-8]\nexit"),
        0xffff_ffff_0000_0000
    );
    // The whole 512-byte entry frame is addressable.
    assert_eq!(r0("stb [r10-512], 7\nldxb r0, [r10-512]\nexit"), 7);
}

/// Sign-extending loads (v4) of 1, 2 and 4 bytes.
#[test]
fn sign_extending_loads() {
    let ldsx = |size: u8, off: i16| {
        r0_bytes(&cat(&[
            asm("lddw r1, 0x8000000080008080\nstxdw [r10-8], r1"),
            raw(0x81 | size, 0, 10, off, 0),
            raw(EXIT, 0, 0, 0, 0),
        ]))
    };
    assert_eq!(ldsx(0x10, -8), 0xffff_ffff_ffff_ff80);
    assert_eq!(ldsx(0x08, -8), 0xffff_ffff_ffff_8080);
    assert_eq!(ldsx(0x00, -8), 0xffff_ffff_8000_8080);
    assert_eq!(ldsx(0x00, -4), 0xffff_ffff_8000_0000);
}

/// The context is readable at r1 with the ABI layout, including the VM-filled scratch_len.
#[test]
fn context_layout() {
    assert_eq!(r0("ldxdw r0, [r1+0]\nexit"), abi::op::FILE_JOB);
    assert_eq!(r0("ldxdw r0, [r1+48]\nexit"), 4096);
    assert_eq!(
        r0("ldxdw r0, [r1+56]\nexit"),
        u64::from(abi::DEFAULT_SCRATCH_BYTES)
    );
}

/// lddw loads a full 64-bit immediate and takes two slots.
#[test]
fn lddw_full_width() {
    assert_eq!(
        r0("lddw r0, 0xdeadbeefcafebabe\nexit"),
        0xdead_beef_cafe_babe
    );
    assert_eq!(r0("lddw r0, 0x80000000\nexit"), 0x8000_0000);
}

/// Every 64-bit conditional jump, taken and not taken, with unsigned and signed comparison
/// and sign-extended immediates.
#[test]
fn jumps_64() {
    let setup = "mov64 r1, -1\nmov64 r2, 5\nmov64 r3, 5";
    let cases: &[(&str, u64)] = &[
        ("jeq r2, 5", 1),
        ("jeq r2, r3", 1),
        ("jeq r1, -1", 1),
        ("jne r2, 5", 0),
        ("jne r2, r1", 1),
        ("jgt r1, 5", 1),
        ("jgt r2, r1", 0),
        ("jge r2, 5", 1),
        ("jge r2, r3", 1),
        ("jlt r2, 6", 1),
        ("jlt r2, r1", 1),
        ("jle r2, 4", 0),
        ("jle r2, r3", 1),
        ("jset r2, 4", 1),
        ("jset r2, r1", 1),
        ("jset r2, 2", 0),
        ("jsgt r1, 5", 0),
        ("jsgt r2, r1", 1),
        ("jsge r1, -1", 1),
        ("jsge r1, r2", 0),
        ("jslt r1, 0", 1),
        ("jslt r2, r1", 0),
        ("jsle r1, -2", 0),
        ("jsle r1, r2", 1),
    ];
    for (cond, want) in cases {
        let got = r0(&format!(
            "{setup}\nmov64 r0, 0\n{cond}, +1\nexit\nmov64 r0, 1\nexit"
        ));
        assert_eq!(got, *want, "{cond}");
    }
    assert_eq!(r0("mov64 r0, 0\nja +1\nexit\nmov64 r0, 1\nexit"), 1);
}

/// JMP32 compares only the low 32 bits, signed and unsigned.
#[test]
fn jumps_32() {
    let setup = "lddw r1, 0x1ffffffff\nlddw r2, 0x100000000\nmov64 r3, 0";
    let cases: &[(&str, u64)] = &[
        ("jeq32 r2, 0", 1),
        ("jeq32 r2, r3", 1),
        ("jeq r2, 0", 0),
        ("jne32 r1, -1", 0),
        ("jgt32 r1, 5", 1),
        ("jge32 r2, r3", 1),
        ("jlt32 r2, 1", 1),
        ("jle32 r1, r3", 0),
        ("jset32 r2, -1", 0),
        ("jset32 r1, r1", 1),
        ("jsgt32 r1, 0", 0),
        ("jsge32 r1, r3", 0),
        ("jslt32 r1, 0", 1),
        ("jsle32 r1, r1", 1),
        ("jsgt32 r3, r1", 1),
    ];
    for (cond, want) in cases {
        let got = r0(&format!(
            "{setup}\nmov64 r0, 0\n{cond}, +1\nexit\nmov64 r0, 1\nexit"
        ));
        assert_eq!(got, *want, "{cond}");
    }
}

/// Backward jumps loop; `gotol` (JMP32 ja with a 32-bit offset in imm) jumps too.
#[test]
fn loops_and_gotol() {
    assert_eq!(
        r0("mov64 r0, 0\nmov64 r1, 10\nadd64 r0, r1\nsub64 r1, 1\njne r1, 0, -3\nexit"),
        55
    );
    let p = cat(&[
        asm("mov64 r0, 1"),
        raw(0x06, 0, 0, 0, 1), // gotol +1
        asm("mov64 r0, 2"),
        raw(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(r0_bytes(&p), 1);
}

/// bpf-to-bpf calls: the callee gets its own frame (r10 512 bytes lower), r6-r9 are restored
/// on return, r0 carries the result, and the caller's stack survives.
#[test]
fn local_calls() {
    let src = "
        mov64 r6, 11
        stdw [r10-8], 99
        mov64 r1, r10
        callx 5
        add64 r0, r6
        ldxdw r1, [r10-8]
        add64 r0, r1
        exit
        exit
        mov64 r6, 1000
        stdw [r10-8], 5
        ldxdw r0, [r10-8]
        mov64 r2, r1
        sub64 r2, r10
        add64 r0, r2
        exit";
    // callee: r0 = 5 + (caller r10 - callee r10 = 512); caller adds r6 = 11 and 99.
    assert_eq!(r0(src), 5 + 512 + 11 + 99);
}

/// A callee may write the caller's frame through a pointer passed in a register.
#[test]
fn callee_writes_caller_stack() {
    let src = "
        mov64 r1, r10
        sub64 r1, 8
        callx 2
        ldxdw r0, [r10-8]
        exit
        stdw [r1+0], 77
        exit";
    assert_eq!(r0(src), 77);
}

/// Helper call `csd_scratch` returns the scratch base, and scratch is read-write.
#[test]
fn scratch_helper() {
    assert_eq!(r0("call 3\nexit"), abi::region::SCRATCH_BASE);
    assert_eq!(r0("call 3\nstdw [r0+16], 3\nldxdw r0, [r0+16]\nexit"), 3);
}

/// Atomic add, or, and, xor (with and without fetch), xchg and cmpxchg on 8 and 4 bytes.
#[test]
fn atomics() {
    let atomic = |w: bool, op: i32, init: u64, src: u64, r0_in: u64| -> (u64, u64, u64) {
        let opcode = if w { 0xdb } else { 0xc3 };
        let load = if w { "ldxdw" } else { "ldxw" };
        // Result packs memory, src and r0 via the stack.
        let p = cat(&[
            asm(&format!(
                "lddw r1, {init}\nstxdw [r10-8], r1\nlddw r2, {src}\nlddw r0, {r0_in}"
            )),
            raw(opcode, 10, 2, -8, op),
            asm(&format!(
                "stxdw [r10-16], r0\nstxdw [r10-24], r2\n{load} r0, [r10-8]\nexit"
            )),
        ]);
        let program = crate::util::load(&p).expect("load");
        let mut vm = firmware::ebpf::Vm::new(0);
        vm.run_to_end(
            &program,
            &crate::util::ctx(),
            &mut crate::util::TestEnv::default(),
            100,
        )
        .expect("run");
        let st = vm.stack();
        let word = |off: usize| {
            let at = st.len() - off;
            u64::from_le_bytes(st[at..at + 8].try_into().expect("8 bytes"))
        };
        let mem = if w { word(8) } else { word(8) & 0xffff_ffff };
        (mem, word(24), word(16))
    };
    assert_eq!(atomic(true, 0x00, 5, 3, 0), (8, 3, 0));
    assert_eq!(atomic(true, 0x01, 5, 3, 0), (8, 5, 0));
    assert_eq!(atomic(true, 0x40, 5, 2, 0), (7, 2, 0));
    assert_eq!(atomic(true, 0x51, 6, 3, 0), (2, 6, 0));
    assert_eq!(atomic(true, 0xa0, 6, 3, 0), (5, 3, 0));
    assert_eq!(atomic(true, 0xe1, 6, 3, 0), (3, 6, 0));
    assert_eq!(atomic(true, 0xf1, 6, 3, 6), (3, 3, 6));
    assert_eq!(atomic(true, 0xf1, 6, 3, 7), (6, 3, 6));
    assert_eq!(atomic(false, 0x01, 0xffff_ffff, 1, 0), (0, 0xffff_ffff, 0));
    assert_eq!(
        atomic(false, 0xf1, 0x1_0000_0006, 3, 0x6),
        (3, 3, 0x0000_0006)
    );
}
