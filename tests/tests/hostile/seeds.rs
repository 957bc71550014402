//! Writes the committed seed corpus of the fuzz targets (`fuzz/seeds/<target>/`) from real
//! inputs: the clang-built kernels, their linked images, golden wire messages and frames, and
//! a freshly made tiny image's header. Run by hand when the formats change:
//! `cargo test -p tests --test hostile write_fuzz_seeds -- --ignored`.

use std::path::Path;

use common::{
    command::{Command, CommandId, Completion, Submission},
    link::{self, CompletionEntry, SubmissionEntry, ToDevice, ToHost},
    zns::ZoneAction,
    Status,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Regenerates `fuzz/seeds/`.
#[test]
#[ignore = "writes files into the source tree; run by hand"]
fn write_fuzz_seeds() {
    let seeds = tests::workspace_root().join("fuzz/seeds");
    let kernels = tests::workspace_root().join("target/kernels");
    for dir in [kernels.clone(), kernels.join("tests")] {
        for e in std::fs::read_dir(&dir).expect("run `cargo xtask kernels` first") {
            let path = e.expect("entry").path();
            if path.extension().is_none_or(|x| x != "o") {
                continue;
            }
            let stem = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let obj = std::fs::read(&path).expect("read object");
            write(&seeds.join("elf_loader"), &format!("{stem}.o"), &obj);
            if let Ok(image) = host_shell::loader::link(&obj) {
                let mut seed = vec![0u8];
                seed.extend(image.to_bytes());
                write(
                    &seeds.join("verifier_interp"),
                    &format!("{stem}.img"),
                    &seed,
                );
            }
        }
    }
    // Differential mode: a few byte strings for `arbitrary`.
    for (i, s) in [
        &b"\x01abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"[..],
        &[1u8; 200][..],
        &[
            0x01, 0xff, 0x80, 0x7f, 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90,
        ],
    ]
    .iter()
    .enumerate()
    {
        write(&seeds.join("verifier_interp"), &format!("diff-{i}"), s);
    }
    let wire = seeds.join("wire");
    let sub = Submission::new(
        CommandId(7),
        Command::ZoneAppend {
            zslba: 0x100,
            nlb: 2,
        },
    );
    let mut s = vec![0u8];
    let entry = SubmissionEntry::of(&sub, 8192).expect("an append encodes");
    s.extend(postcard::to_allocvec(&entry).expect("encode"));
    write(&wire, "submission", &s);
    let sub = Submission::new(
        CommandId(1),
        Command::ZoneManagementSend {
            slba: 0,
            action: ZoneAction::Reset,
            select_all: true,
        },
    );
    let mut s = vec![0u8];
    let entry = SubmissionEntry::of(&sub, 0).expect("a reset encodes");
    s.extend(postcard::to_allocvec(&entry).expect("encode"));
    write(&wire, "submission-zms", &s);
    let done = CompletionEntry::of(&Completion::status(CommandId(7), Status::ZoneFull));
    let mut s = vec![1u8];
    s.extend(postcard::to_allocvec(&done).expect("encode"));
    write(&wire, "completion", &s);
    let mut body = vec![0u8; 1024];
    let mut out = vec![0u8; 2048];
    let req = ToDevice::Request {
        submission: entry,
        host_len: 8,
        data: &[1, 2, 0, 4],
    };
    let n = link::encode(3, &req, &mut body, &mut out).expect("frame");
    let mut s = vec![5u8];
    s.extend_from_slice(&out[..n]);
    write(&wire, "frame-request", &s);
    let resp: ToHost<'_, CompletionEntry> = ToHost::Response {
        completion: done,
        data: &[9; 40],
    };
    let n = link::encode(3, &resp, &mut body, &mut out).expect("frame");
    let mut s = vec![6u8];
    s.extend_from_slice(&out[..n]);
    write(&wire, "frame-response", &s);
    write(
        &seeds.join("zns_model"),
        "ops-0",
        b"\x00\x01\x02\x03\x04\x05\x00\x00\x01\x01\x05\x02\x03\x00",
    );
    write(
        &seeds.join("zns_model"),
        "ops-1",
        &[
            0x00, 0x02, 0x00, 0x03, 0x05, 0x00, 0x01, 0x02, 0x00, 0x05, 0x01, 0x04,
        ],
    );
    // mount_image: the pristine header (image level) and a few page damages.
    let dir = tempfile::tempdir().expect("temp");
    let img = dir.path().join("tiny.img");
    let header = firmware::nand::image::Header {
        geometry: testkit::tiny_fs::GEOMETRY,
        zones: testkit::tiny_fs::zones(),
        timing_preset: 0,
    };
    host_shell::device::create_image(&img, header).expect("create");
    let bytes = std::fs::read(&img).expect("read");
    let mut s = vec![0u8, 0u8];
    s.extend_from_slice(&bytes[..128]);
    write(&seeds.join("mount_image"), "header", &s);
    write(
        &seeds.join("mount_image"),
        "flip",
        &[1, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0],
    );
    write(
        &seeds.join("mount_image"),
        "torn",
        &[1, 0, 0, 0, 0x60, 3, 0],
    );
}
