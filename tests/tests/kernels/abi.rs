//! `kernels/include/csd.h` and `common::abi` state the same kernel ABI: these tests parse the
//! header and compile it, and fail on any drift between the two.

use std::collections::BTreeMap;
use std::process::Command;

use common::abi;
use tests::workspace_root;

fn header() -> String {
    std::fs::read_to_string(workspace_root().join("kernels/include/csd.h")).expect("read csd.h")
}

/// `#define NAME VALUE` lines with an integer value (parentheses allowed), by name.
fn defines(text: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let value = value.trim_start_matches('(').trim_end_matches(')');
        if let Ok(v) = value.parse::<i64>() {
            out.insert(name.to_owned(), v);
        }
    }
    out
}

/// Helpers declared as `static T (*const NAME)(ARGS) = (void *)ID;`, by name.
fn helpers(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with("static ") {
            continue;
        }
        let Some(start) = line.find("(*const ") else {
            continue;
        };
        let rest = &line[start + "(*const ".len()..];
        let name = &rest[..rest.find(')').expect("helper name ends with ')'")];
        let id = line
            .rsplit_once("(void *)")
            .map(|(_, id)| id.trim_end_matches(';').trim())
            .expect("helper is initialised with (void *)ID");
        out.insert(name.to_owned(), id.parse().expect("numeric helper id"));
    }
    out
}

/// The fields of `struct csd_ctx`, in order.
fn ctx_fields(text: &str) -> Vec<(String, String)> {
    let start = text
        .find("struct csd_ctx {")
        .expect("struct csd_ctx is defined");
    let body = &text[start + "struct csd_ctx {".len()..];
    let body = &body[..body.find("};").expect("struct csd_ctx ends")];
    body.lines()
        .map(|l| l.split("/*").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = l.trim_end_matches(';');
            let (ty, name) = l.rsplit_once(' ').expect("`type name;`");
            (ty.trim().to_owned(), name.trim().to_owned())
        })
        .collect()
}

/// Every helper id in csd.h (declarations and CSD_HELPER_* numbers) equals abi::helper, and
/// csd.h declares no helper common does not know.
#[test]
fn helper_ids_match() {
    let text = header();
    let declared = helpers(&text);
    let expected: BTreeMap<String, u32> = [
        ("csd_read", abi::helper::READ),
        ("csd_emit", abi::helper::EMIT),
        ("csd_scratch", abi::helper::SCRATCH),
        ("csd_log", abi::helper::LOG),
        ("csd_input", abi::helper::INPUT),
    ]
    .into_iter()
    .map(|(n, id)| (n.to_owned(), id))
    .collect();
    assert_eq!(declared, expected);
    assert_eq!(declared.values().max(), Some(&abi::helper::MAX_ID));

    let d = defines(&text);
    assert_eq!(d["CSD_HELPER_READ"], i64::from(abi::helper::READ));
    assert_eq!(d["CSD_HELPER_EMIT"], i64::from(abi::helper::EMIT));
    assert_eq!(d["CSD_HELPER_SCRATCH"], i64::from(abi::helper::SCRATCH));
    assert_eq!(d["CSD_HELPER_LOG"], i64::from(abi::helper::LOG));
    assert_eq!(d["CSD_HELPER_INPUT"], i64::from(abi::helper::INPUT));
}

/// The fields of the kernel context, in order, with their offsets in `common::abi::ctx`.
const CTX_FIELDS: [(&str, u32); 8] = [
    ("op", abi::ctx::OP),
    ("file_size", abi::ctx::FILE_SIZE),
    ("offset", abi::ctx::OFFSET),
    ("len", abi::ctx::LEN),
    ("param0", abi::ctx::PARAM0),
    ("param1", abi::ctx::PARAM1),
    ("out_cap", abi::ctx::OUT_CAP),
    ("scratch_len", abi::ctx::SCRATCH_LEN),
];

/// struct csd_ctx has abi::ctx's fields, in its order, 8 bytes each.
#[test]
fn ctx_layout_matches() {
    let fields = ctx_fields(&header());
    let expected = CTX_FIELDS;
    assert_eq!(fields.len(), expected.len(), "{fields:?}");
    for (i, ((ty, name), (want, offset))) in fields.iter().zip(expected).enumerate() {
        assert_eq!(ty, "uint64_t", "field {name}");
        assert_eq!(name, want, "field {i}");
        assert_eq!(8 * i as u32, offset, "offset of {name}");
    }
    assert_eq!(8 * fields.len() as u32, abi::ctx::SIZE);
}

/// Op kinds, helper error codes and limits in csd.h equal common's.
#[test]
fn constants_match() {
    let d = defines(&header());
    assert_eq!(d["CSD_OP_READ_STREAM"], abi::op::READ_STREAM as i64);
    assert_eq!(d["CSD_OP_FILE_JOB"], abi::op::FILE_JOB as i64);
    assert_eq!(d["CSD_OP_WRITE_STREAM"], abi::op::WRITE_STREAM as i64);
    assert_eq!(d["CSD_EINVAL"], abi::err::INVALID);
    assert_eq!(d["CSD_ENOSPC"], abi::err::NO_SPACE);
    assert_eq!(d["CSD_ENOTSUP"], abi::err::NOT_SUPPORTED);
    assert_eq!(d["CSD_EIO"], abi::err::IO);
    assert_eq!(d["CSD_STACK_BYTES"], i64::from(abi::STACK_BYTES));
    assert_eq!(d["CSD_LOG_MAX_BYTES"], i64::from(abi::LOG_MAX_BYTES));
    assert_eq!(
        d["CSD_DEFAULT_SCRATCH_BYTES"],
        i64::from(abi::DEFAULT_SCRATCH_BYTES)
    );
    let ops = d.keys().filter(|k| k.starts_with("CSD_OP_")).count();
    let errs = d.keys().filter(|k| k.starts_with("CSD_E")).count();
    assert_eq!(
        (ops, errs),
        (3, 4),
        "csd.h has constants common does not check"
    );
}

/// The entry function csd.h declares is abi::ENTRY_SYMBOL, with the documented signature.
#[test]
fn entry_declaration_matches() {
    let text = header();
    let decl = format!("uint64_t {}(const struct csd_ctx *ctx);", abi::ENTRY_SYMBOL);
    assert!(text.contains(&decl), "csd.h should declare `{decl}`");
}

/// What clang itself computes for csd.h (offsetof, sizeof, constant values) equals common:
/// catches drift the text parser could miss (padding, a changed type).
#[test]
fn clang_sees_the_same_layout() {
    let mut c = String::from("#include <stddef.h>\n#include <csd.h>\n");
    let mut check = |expr: String, value: i64| {
        c.push_str(&format!(
            "_Static_assert(({expr}) == {value}LL, \"{expr}\");\n"
        ));
    };
    for (field, offset) in CTX_FIELDS {
        check(
            format!("offsetof(struct csd_ctx, {field})"),
            i64::from(offset),
        );
        check(format!("sizeof(((struct csd_ctx *)0)->{field})"), 8);
    }
    check("sizeof(struct csd_ctx)".into(), i64::from(abi::ctx::SIZE));
    check("CSD_OP_READ_STREAM".into(), abi::op::READ_STREAM as i64);
    check("CSD_OP_FILE_JOB".into(), abi::op::FILE_JOB as i64);
    check("CSD_OP_WRITE_STREAM".into(), abi::op::WRITE_STREAM as i64);
    check("CSD_EINVAL".into(), abi::err::INVALID);
    check("CSD_ENOSPC".into(), abi::err::NO_SPACE);
    check("CSD_ENOTSUP".into(), abi::err::NOT_SUPPORTED);
    check("CSD_EIO".into(), abi::err::IO);

    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("abi_check.c");
    std::fs::write(&src, &c).expect("write check source");
    let out = Command::new("clang-19")
        .args(["-O2", "-target", "bpf", "-ffreestanding", "-fsyntax-only"])
        .arg(format!(
            "-I{}",
            workspace_root().join("kernels/include").display()
        ))
        .arg(&src)
        .output()
        .expect("run clang-19");
    assert!(
        out.status.success(),
        "csd.h disagrees with common::abi:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Rust kernel SDK's ABI (`kernels/rust/csd/src/abi.rs`, compiled here for the host).
#[path = "../../../kernels/rust/csd/src/abi.rs"]
#[allow(dead_code)]
mod rust_sdk;

/// The Rust SDK states the same ABI as common: helper ids, error codes, op kinds, the log
/// limit and the context's layout.
#[test]
fn the_rust_sdk_states_the_same_abi() {
    use rust_sdk as sdk;
    let helpers = [
        sdk::helper::READ,
        sdk::helper::EMIT,
        sdk::helper::SCRATCH,
        sdk::helper::LOG,
        sdk::helper::INPUT,
    ];
    let want = [
        abi::helper::READ,
        abi::helper::EMIT,
        abi::helper::SCRATCH,
        abi::helper::LOG,
        abi::helper::INPUT,
    ];
    assert_eq!(helpers, want);
    assert_eq!(
        abi::helper::MAX_ID,
        sdk::helper::INPUT,
        "the SDK has every helper"
    );
    assert_eq!(
        [
            sdk::err::IO,
            sdk::err::INVALID,
            sdk::err::NO_SPACE,
            sdk::err::NOT_SUPPORTED
        ],
        [
            abi::err::IO,
            abi::err::INVALID,
            abi::err::NO_SPACE,
            abi::err::NOT_SUPPORTED
        ]
    );
    assert_eq!(
        [
            sdk::op::READ_STREAM,
            sdk::op::FILE_JOB,
            sdk::op::WRITE_STREAM
        ],
        [
            abi::op::READ_STREAM,
            abi::op::FILE_JOB,
            abi::op::WRITE_STREAM
        ]
    );
    assert_eq!(sdk::LOG_MAX_BYTES, abi::LOG_MAX_BYTES);
    use std::mem::offset_of;
    let offsets = [
        offset_of!(sdk::Ctx, op),
        offset_of!(sdk::Ctx, file_size),
        offset_of!(sdk::Ctx, offset),
        offset_of!(sdk::Ctx, len),
        offset_of!(sdk::Ctx, param0),
        offset_of!(sdk::Ctx, param1),
        offset_of!(sdk::Ctx, out_cap),
        offset_of!(sdk::Ctx, scratch_len),
        std::mem::size_of::<sdk::Ctx>(),
    ];
    let want = [
        abi::ctx::OP,
        abi::ctx::FILE_SIZE,
        abi::ctx::OFFSET,
        abi::ctx::LEN,
        abi::ctx::PARAM0,
        abi::ctx::PARAM1,
        abi::ctx::OUT_CAP,
        abi::ctx::SCRATCH_LEN,
        abi::ctx::SIZE,
    ]
    .map(|v| v as usize);
    assert_eq!(offsets, want);
}
