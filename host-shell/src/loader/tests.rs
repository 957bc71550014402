//! Unit tests of the parts of the loader that need no compiler: the image encoding, the entry
//! jump, and the error messages. The linking itself is tested on real clang-built objects in
//! `host-shell/tests/shell/loader.rs`.

use super::image::ProgramImage;
use super::link::relocation_name;
use super::{link, LoadError};

/// The image encodes to the exact abi::image bytes: header, text, rodata.
#[test]
fn image_encodes_to_golden_bytes() {
    let image = ProgramImage {
        text: vec![0xb7, 0, 0, 0, 42, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0],
        rodata: vec![0xaa, 0xbb, 0xcc],
    };
    let golden: Vec<u8> = [
        &b"CSDP"[..],
        &[1, 0],        // version 1
        &[0, 0],        // flags
        &[16, 0, 0, 0], // text_len
        &[3, 0, 0, 0],  // rodata_len
        &[0xb7, 0, 0, 0, 42, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0],
        &[0xaa, 0xbb, 0xcc],
    ]
    .concat();
    assert_eq!(image.to_bytes(), golden);
    assert_eq!(image.insn_count(), 2);
    assert_eq!(image.insn(1), Some([0x95, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(image.insn(2), None);
    assert_eq!(image.insn(usize::MAX), None);
}

/// The header's fields sit at the offsets common::abi::image names.
#[test]
fn image_header_matches_abi_offsets() {
    use common::abi::image::*;
    let image = ProgramImage {
        text: vec![0; 8 * 3],
        rodata: vec![0; 5],
    };
    let bytes = image.to_bytes();
    assert_eq!(bytes.len(), HEADER_BYTES + 24 + 5);
    assert_eq!(bytes[..4], MAGIC);
    assert_eq!(
        u16::from_le_bytes([bytes[VERSION_OFFSET], bytes[VERSION_OFFSET + 1]]),
        VERSION
    );
    assert_eq!(bytes[TEXT_LEN_OFFSET], 24);
    assert_eq!(bytes[RODATA_LEN_OFFSET], 5);
}

/// Relocation types print with LLVM's names; unknown ones with their number.
#[test]
fn relocation_names() {
    assert_eq!(relocation_name(1), "R_BPF_64_64");
    assert_eq!(relocation_name(2), "R_BPF_64_ABS64");
    assert_eq!(relocation_name(3), "R_BPF_64_ABS32");
    assert_eq!(relocation_name(10), "R_BPF_64_32");
    assert_eq!(relocation_name(77), "of type 77");
}

/// Garbage, an empty input and an ELF magic alone are errors, not panics.
#[test]
fn garbage_is_rejected() {
    assert!(matches!(link(&[]), Err(LoadError::NotElf)));
    assert!(matches!(link(b"not an object"), Err(LoadError::NotElf)));
    let mut elf32 = vec![0u8; 64];
    elf32[..4].copy_from_slice(b"\x7fELF");
    elf32[4] = 1; // ELFCLASS32
    elf32[5] = 1;
    elf32[6] = 1;
    assert!(matches!(link(&elf32), Err(LoadError::NotElf64)));
    let mut elf64 = vec![0u8; 20];
    elf64[..4].copy_from_slice(b"\x7fELF");
    elf64[4] = 2; // ELFCLASS64
    elf64[5] = 1;
    elf64[6] = 1;
    assert!(matches!(link(&elf64), Err(LoadError::Malformed { .. })));
}

/// Error messages are one sentence naming the offender.
#[test]
fn errors_name_the_offender() {
    let e = LoadError::WritableData {
        section: ".bss".into(),
    };
    assert!(e.to_string().contains("`.bss`"));
    assert!(e.to_string().contains("not supported"));
    let e = LoadError::UnsupportedRelocation {
        kind: "R_BPF_64_ABS32".into(),
        section: ".text".into(),
        offset: 0x28,
        symbol: "table".into(),
        reason: "because",
    };
    assert_eq!(
        e.to_string(),
        "relocation R_BPF_64_ABS32 at .text+0x28 against `table` is not supported: because"
    );
    let e = LoadError::WrongMachine {
        machine: 62,
        name: "x86-64",
    };
    assert!(e.to_string().contains("x86-64"));
}
