//! The loader on real clang-built objects: each test compiles C source text with
//! `clang-19 -O2 -target bpf -ffreestanding -I kernels/include -c` into a temp dir and links
//! it, checking the linked instructions and read-only data, or the typed error.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::abi::{self, region::RODATA_BASE};
use host_shell::loader::{self, LoadError, ProgramImage};
use object::{Object, ObjectSection, ObjectSymbol};

/// The workspace root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host-shell has a parent")
        .to_path_buf()
}

/// Compiles C `source` with `compiler` and `args` into an object; returns its bytes.
fn compile_with(compiler: &str, args: &[&str], source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = dir.path().join("kernel.c");
    let o = dir.path().join("kernel.o");
    std::fs::write(&c, source).expect("write source");
    let out = Command::new(compiler)
        .args(args)
        .arg("-c")
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&o).expect("read object")
}

/// Compiles a kernel the way the project builds kernels.
fn clang_bpf(source: &str) -> Vec<u8> {
    let include = format!("-I{}", repo().join("kernels/include").display());
    compile_with(
        "clang-19",
        &["-O2", "-target", "bpf", "-ffreestanding", &include],
        source,
    )
}

/// Compiles and links; panics with the error if linking fails.
fn link_ok(source: &str) -> (Vec<u8>, ProgramImage) {
    let obj = clang_bpf(source);
    let image = loader::link(&obj).unwrap_or_else(|e| panic!("link failed: {e}"));
    (obj, image)
}

/// One decoded instruction slot.
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    src: u8,
    off: i16,
    imm: i32,
}

fn insn(image: &ProgramImage, index: usize) -> Insn {
    let b = image.insn(index).expect("instruction index in range");
    Insn {
        code: b[0],
        src: b[1] >> 4,
        off: i16::from_le_bytes([b[2], b[3]]),
        imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    }
}

/// The 64-bit immediate of the lddw at `index`.
fn lddw_imm(image: &ProgramImage, index: usize) -> u64 {
    let lo = insn(image, index).imm as u32;
    let hi = insn(image, index + 1).imm as u32;
    u64::from(hi) << 32 | u64::from(lo)
}

/// Indices of every lddw (first slots only).
fn lddws(image: &ProgramImage) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < image.insn_count() {
        if insn(image, i).code == 0x18 {
            out.push(i);
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Indices of every bpf-to-bpf call (`call` with src_reg 1).
fn pseudo_calls(image: &ProgramImage) -> Vec<usize> {
    (0..image.insn_count())
        .filter(|&i| insn(image, i).code == 0x85 && insn(image, i).src == 1)
        .collect()
}

/// The bytes of function `name` in the object, as clang wrote them (before relocation).
fn function_bytes(obj: &[u8], name: &str) -> Vec<u8> {
    let file = object::File::parse(obj).expect("parse object");
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    let section = file
        .section_by_index(sym.section_index().expect("defined"))
        .expect("section");
    let data = section.data().expect("data");
    data[sym.address() as usize..(sym.address() + sym.size()) as usize].to_vec()
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A plain kernel links into an image whose first instruction is csd_main's, with no rodata,
/// and encodes to the abi::image format.
#[test]
fn plain_kernel_links_with_entry_at_zero() {
    let (obj, image) = link_ok(
        "#include <csd.h>\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return ctx->param0 * 7 + ctx->len; }\n",
    );
    assert_eq!(image.text, function_bytes(&obj, "csd_main"));
    assert!(image.rodata.is_empty());
    assert_eq!(
        insn(&image, image.insn_count() - 1).code,
        0x95,
        "ends with exit"
    );

    let bytes = image.to_bytes();
    assert_eq!(&bytes[..4], b"CSDP");
    assert_eq!(
        u16::from_le_bytes([bytes[4], bytes[5]]),
        abi::image::VERSION
    );
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 0);
    let text_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let rodata_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    assert_eq!(text_len as usize, image.text.len());
    assert_eq!(rodata_len, 0);
    assert_eq!(&bytes[abi::image::HEADER_BYTES..], &image.text[..]);
}

/// A call to a static noinline function (resolved by clang, no relocation) and to a global
/// one (an R_BPF_64_32 relocation) both land on the callee's first instruction.
#[test]
fn bpf_to_bpf_calls_point_at_the_callee() {
    let (obj, image) = link_ok(
        "#include <csd.h>\n\
         static __attribute__((noinline)) uint64_t twice(uint64_t x) { return x * 2 + 11; }\n\
         __attribute__((noinline)) uint64_t thrice(uint64_t x) { return x * 3 + 13; }\n\
         uint64_t csd_main(const struct csd_ctx *ctx) {\n\
             return twice(ctx->param0) + thrice(ctx->param1);\n\
         }\n",
    );
    let calls = pseudo_calls(&image);
    assert_eq!(calls.len(), 2, "two bpf-to-bpf calls");
    let mut callees: Vec<Vec<u8>> = calls
        .iter()
        .map(|&pc| {
            let target = (pc as i64 + 1 + i64::from(insn(&image, pc).imm)) as usize;
            let len = 4 * 8; // the callees are four instructions long
            image.text[target * 8..target * 8 + len].to_vec()
        })
        .collect();
    callees.sort();
    let mut expected = vec![
        function_bytes(&obj, "twice"),
        function_bytes(&obj, "thrice"),
    ];
    expected.sort();
    assert_eq!(callees, expected);
}

/// When csd_main is not the first function of .text, the image starts with a `ja` to it,
/// and calls made from it still reach their callee.
#[test]
fn entry_not_first_gets_an_entry_jump() {
    let (obj, image) = link_ok(
        "#include <csd.h>\n\
         __attribute__((noinline)) uint64_t first(uint64_t x) { return x * 5 + 3; }\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return first(ctx->param0) + 1; }\n",
    );
    let first = function_bytes(&obj, "first");
    let ja = insn(&image, 0);
    assert_eq!(ja.code, 0x05, "instruction 0 is ja");
    let entry = 1 + ja.off as usize;
    assert_eq!(
        entry,
        1 + first.len() / 8,
        "ja reaches csd_main, after `first`"
    );
    let main = function_bytes(&obj, "csd_main");
    assert_eq!(insn(&image, entry).code, main[0]);

    let calls = pseudo_calls(&image);
    assert_eq!(calls.len(), 1);
    let target = (calls[0] as i64 + 1 + i64::from(insn(&image, calls[0]).imm)) as usize;
    assert_eq!(target, 1, "the call reaches `first`, right after the ja");
    assert_eq!(&image.text[8..8 + first.len()], &first[..]);
}

/// A function in its own code section (`.text.other`) is linked after the entry's section
/// and called through its relocation.
#[test]
fn named_code_section_is_linked_and_called() {
    let (obj, image) = link_ok(
        "#include <csd.h>\n\
         __attribute__((noinline, section(\".text.other\"))) uint64_t other(uint64_t x) { return x ^ 0x5a5a; }\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return other(ctx->param0) + 2; }\n",
    );
    let main = function_bytes(&obj, "csd_main");
    let other = function_bytes(&obj, "other");
    assert_eq!(image.text.len(), main.len() + other.len());
    let calls = pseudo_calls(&image);
    assert_eq!(calls.len(), 1);
    let target = (calls[0] as i64 + 1 + i64::from(insn(&image, calls[0]).imm)) as usize;
    assert_eq!(target, main.len() / 8);
    assert_eq!(&image.text[target * 8..], &other[..]);
}

/// `static const` tables read with an index: each lddw immediate is RODATA_BASE plus its
/// table's offset in the rodata blob (the second table's offset comes from the addend clang
/// left in the immediate), and the blob holds the tables' bytes.
#[test]
fn rodata_tables_are_relocated_to_rodata_base() {
    let (_, image) = link_ok(
        "#include <csd.h>\n\
         static const uint64_t first[5] = {0x1111, 0x2222, 0x3333, 0x4444, 0x5555};\n\
         static const uint64_t second[5] = {0x6666, 0x7777, 0x8888, 0x9999, 0xaaaa};\n\
         uint64_t csd_main(const struct csd_ctx *ctx) {\n\
             return first[ctx->param0 % 5] + second[ctx->param1 % 5];\n\
         }\n",
    );
    let bytes = |t: [u64; 5]| -> Vec<u8> { t.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let first = find(
        &image.rodata,
        &bytes([0x1111, 0x2222, 0x3333, 0x4444, 0x5555]),
    )
    .expect("first table in rodata") as u64;
    let second = find(
        &image.rodata,
        &bytes([0x6666, 0x7777, 0x8888, 0x9999, 0xaaaa]),
    )
    .expect("second table in rodata") as u64;
    assert_ne!(first, second);
    let mut targets: Vec<u64> = lddws(&image)
        .into_iter()
        .map(|i| lddw_imm(&image, i))
        .collect();
    targets.sort();
    let mut expected = vec![RODATA_BASE + first, RODATA_BASE + second];
    expected.sort();
    assert_eq!(targets, expected);
}

/// An object built with debug info (-g: .BTF, .BTF.ext, .debug_* and their relocations)
/// links to the same image as without it.
#[test]
fn debug_sections_are_ignored() {
    let source = "#include <csd.h>\n\
         static const uint32_t t[4] = {1, 2, 3, 4};\n\
         static __attribute__((noinline)) uint64_t f(uint64_t x) { return t[x & 3]; }\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return f(ctx->param0) + 1; }\n";
    let include = format!("-I{}", repo().join("kernels/include").display());
    let plain = loader::link(&clang_bpf(source)).expect("links");
    let debug_obj = compile_with(
        "clang-19",
        &["-O2", "-g", "-target", "bpf", "-ffreestanding", &include],
        source,
    );
    let file = object::File::parse(&*debug_obj).expect("parse");
    assert!(file.section_by_name(".BTF").is_some(), "clang emitted BTF");
    assert_eq!(loader::link(&debug_obj).expect("links with -g"), plain);
}

/// A string literal (.rodata.str1.1) passed to csd_log: the lddw points at its bytes.
#[test]
fn string_literal_is_relocated() {
    let (_, image) = link_ok(
        "#include <csd.h>\n\
         static const uint64_t t[3] = {7, 8, 9};\n\
         uint64_t csd_main(const struct csd_ctx *ctx) {\n\
             CSD_LOG_LIT(\"hello loader\");\n\
             return t[ctx->param0 % 3];\n\
         }\n",
    );
    let offset = find(&image.rodata, b"hello loader\0").expect("string in rodata") as u64;
    let targets: Vec<u64> = lddws(&image)
        .into_iter()
        .map(|i| lddw_imm(&image, i))
        .collect();
    assert!(
        targets.contains(&(RODATA_BASE + offset)),
        "{targets:x?} should contain the string's address"
    );
    let table: Vec<u8> = [7u64, 8, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    let table_offset = find(&image.rodata, &table).expect("table in rodata") as u64;
    assert!(targets.contains(&(RODATA_BASE + table_offset)));
    assert_eq!(
        table_offset % 8,
        0,
        "the u64 table stays aligned in the blob"
    );
}

/// A table of string pointers in .rodata (R_BPF_64_ABS64 relocations in data): each entry
/// becomes the kernel address of its string.
#[test]
fn pointer_table_in_rodata_is_relocated() {
    let (_, image) = link_ok(
        "#include <csd.h>\n\
         static const char *const names[] = {\"alpha\", \"beta\", \"gamma\"};\n\
         uint64_t csd_main(const struct csd_ctx *ctx) {\n\
             return (uint64_t)csd_log(names[ctx->param0 % 3], 4);\n\
         }\n",
    );
    let addr = |s: &[u8]| RODATA_BASE + find(&image.rodata, s).expect("string in rodata") as u64;
    let table: Vec<u8> = [addr(b"alpha\0"), addr(b"beta\0"), addr(b"gamma\0")]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let offset = find(&image.rodata, &table).expect("relocated pointer table") as u64;
    let loads = lddws(&image);
    assert!(loads
        .iter()
        .any(|&i| lddw_imm(&image, i) == RODATA_BASE + offset));
}

/// The features test kernel (noinline call, nibble table in .rodata.cst16, log string) links,
/// from its file, with both the table and the string in the blob.
#[test]
fn features_test_kernel_links() {
    let image = loader::load_object(compile_file("kernels/tests/features.c")).expect("links");
    assert_eq!(pseudo_calls(&image).len(), 1);
    assert!(find(&image.rodata, b"features: counting bits").is_some());
    let nibbles = [0u8, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4];
    let offset = find(&image.rodata, &nibbles).expect("table") as u64;
    assert!(lddws(&image)
        .iter()
        .any(|&i| lddw_imm(&image, i) == RODATA_BASE + offset));
}

/// Compiles a file of the repository into an object in a temp dir; returns the object's path
/// (the temp dir is leaked for the test's lifetime).
fn compile_file(relative: &str) -> PathBuf {
    let source = std::fs::read_to_string(repo().join(relative)).expect("read kernel source");
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let path = dir.join("kernel.o");
    std::fs::write(&path, clang_bpf(&source)).expect("write object");
    path
}

// ---- rejections ----

fn link_err(source: &str) -> LoadError {
    match loader::link(&clang_bpf(source)) {
        Ok(_) => panic!("linking should fail"),
        Err(e) => e,
    }
}

/// An initialized global lands in .data: rejected, naming .data.
#[test]
fn data_global_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         uint64_t counter = 5;\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { counter += ctx->param0; return counter; }\n",
    );
    assert!(
        matches!(&e, LoadError::WritableData { section } if section == ".data"),
        "{e}"
    );
    assert!(e.to_string().contains("`.data`"));
}

/// A zero-initialized global lands in .bss: rejected, naming .bss.
#[test]
fn bss_global_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         static uint64_t counter;\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { counter += ctx->param0; return counter; }\n",
    );
    assert!(
        matches!(&e, LoadError::WritableData { section } if section == ".bss"),
        "{e}"
    );
}

/// A libbpf-style legacy `maps` section is rejected, naming it.
#[test]
fn maps_section_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         struct map_def { unsigned type, key_size, value_size, max_entries; };\n\
         struct map_def counts __attribute__((section(\"maps\"), used)) = {1, 4, 8, 16};\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return ctx->param0; }\n",
    );
    assert!(
        matches!(&e, LoadError::MapsSection { section } if section == "maps"),
        "{e}"
    );
}

/// A BTF-style `.maps` section is rejected too.
#[test]
fn btf_maps_section_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         struct { int (*type)[2]; } events __attribute__((section(\".maps\"), used));\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return ctx->param0; }\n",
    );
    assert!(
        matches!(&e, LoadError::MapsSection { section } if section == ".maps"),
        "{e}"
    );
}

/// A call to a function the object does not define is rejected, naming the function.
#[test]
fn unknown_extern_function_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         extern uint64_t not_a_helper(uint64_t x);\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return not_a_helper(ctx->param0); }\n",
    );
    assert!(
        matches!(&e, LoadError::UndefinedSymbol { symbol, .. } if symbol == "not_a_helper"),
        "{e}"
    );
    assert!(e.to_string().contains("not_a_helper"));
}

/// An extern variable (an lddw against an undefined symbol) is rejected, naming it.
#[test]
fn unknown_extern_variable_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         extern const uint64_t somewhere_else;\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return somewhere_else + ctx->len; }\n",
    );
    assert!(
        matches!(&e, LoadError::UndefinedSymbol { symbol, .. } if symbol == "somewhere_else"),
        "{e}"
    );
}

/// Taking a function's address (an lddw against code) is rejected as a relocation.
#[test]
fn function_pointer_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         __attribute__((noinline)) uint64_t target(uint64_t x) { return x + 1; }\n\
         uint64_t csd_main(const struct csd_ctx *ctx) {\n\
             uint64_t p = (uint64_t)&target;\n\
             return (uint64_t)csd_emit(&p, sizeof(p));\n\
         }\n",
    );
    assert!(
        matches!(&e, LoadError::UnsupportedRelocation { kind, symbol, .. }
            if kind == "R_BPF_64_64" && symbol == "target"),
        "{e}"
    );
}

/// An object without csd_main is rejected.
#[test]
fn missing_entry_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         uint64_t main_with_wrong_name(const struct csd_ctx *ctx) { return ctx->param0; }\n",
    );
    assert!(matches!(e, LoadError::MissingEntry), "{e}");
}

/// Bytes that are not ELF are rejected as such.
#[test]
fn not_elf_is_rejected() {
    let e = loader::link(b"#include <csd.h>\nthis is C source, not an object\n").unwrap_err();
    assert!(matches!(e, LoadError::NotElf), "{e}");
    assert!(matches!(loader::link(&[]).unwrap_err(), LoadError::NotElf));
}

/// A truncated object is rejected as malformed, never a panic.
#[test]
fn truncated_elf_is_rejected() {
    let obj = clang_bpf(
        "#include <csd.h>\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return ctx->param0; }\n",
    );
    for len in [obj.len() / 2, obj.len() - 1, 70] {
        let e = loader::link(&obj[..len]).unwrap_err();
        assert!(matches!(e, LoadError::Malformed { .. }), "len {len}: {e}");
    }
}

/// Every prefix of a real object is rejected with an error or links, never panics.
#[test]
fn every_prefix_of_an_object_is_handled() {
    let obj = clang_bpf(
        "#include <csd.h>\n\
         static const uint64_t t[4] = {1, 2, 3, 4};\n\
         static __attribute__((noinline)) uint64_t f(uint64_t x) { return t[x & 3]; }\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return f(ctx->param0); }\n",
    );
    for len in 0..obj.len() {
        assert!(loader::link(&obj[..len]).is_err(), "prefix of {len} bytes");
    }
    assert!(loader::link(&obj).is_ok());
}

/// An object for the host's CPU (compiled with `cc -c`) is rejected, naming its machine.
#[test]
fn host_object_is_rejected() {
    let obj = compile_with("cc", &["-O2"], "int add(int a, int b) { return a + b; }\n");
    let e = loader::link(&obj).unwrap_err();
    assert!(
        matches!(e, LoadError::WrongMachine { machine, .. } if machine != 247),
        "{e}"
    );
}

/// A big-endian eBPF object (`-target bpfeb`) is rejected.
#[test]
fn big_endian_object_is_rejected() {
    let include = format!("-I{}", repo().join("kernels/include").display());
    let obj = compile_with(
        "clang-19",
        &["-O2", "-target", "bpfeb", "-ffreestanding", &include],
        "#include <csd.h>\nuint64_t csd_main(const struct csd_ctx *ctx) { return ctx->len; }\n",
    );
    assert!(matches!(
        loader::link(&obj).unwrap_err(),
        LoadError::BigEndian
    ));
}

/// Read-only data over abi::MAX_RODATA_BYTES is rejected with its size.
#[test]
fn rodata_over_the_limit_is_rejected() {
    let e = link_err(
        "#include <csd.h>\n\
         static const uint8_t big[70000] = {1, 2, 3};\n\
         uint64_t csd_main(const struct csd_ctx *ctx) { return big[ctx->param0 % sizeof(big)]; }\n",
    );
    assert!(
        matches!(e, LoadError::RodataTooLarge { bytes, max } if bytes >= 70000 && max == abi::MAX_RODATA_BYTES),
        "{e}"
    );
}

/// Code over abi::MAX_PROGRAM_INSNS instructions is rejected with its size.
#[test]
fn text_over_the_limit_is_rejected() {
    // 3^10 = 59049 volatile increments, three instructions each.
    let e = link_err(
        "#include <csd.h>\n\
         #define R3(x) x x x\n\
         #define R81(x) R3(R3(R3(R3(x))))\n\
         uint64_t csd_main(const struct csd_ctx *ctx) {\n\
             volatile uint64_t v = ctx->param0;\n\
             R81(R81(R3(R3(v++;))))\n\
             R81(R81(R3(R3(v++;))))\n\
             return v;\n\
         }\n",
    );
    assert!(
        matches!(e, LoadError::TooManyInstructions { insns, max } if insns > u64::from(max)),
        "{e}"
    );
}

/// load_object names the file it cannot read.
#[test]
fn missing_file_is_an_io_error() {
    let e = loader::load_object("/nonexistent/kernel.o").unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/kernel.o"));
}
