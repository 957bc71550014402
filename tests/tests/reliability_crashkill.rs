//! Crash-kill: a writer process changes files through a real mount (creates, writes at
//! offsets, appends, truncations, renames within and across directories, unlinks, fsync and
//! fdatasync, directory fsyncs, the write-fsync-rename-fsync replacement), journaling each
//! operation outside the mount before it makes it and each sync after it returned. At a seeded
//! random moment the mount daemon gets SIGKILL; the dead mount is detached, `csd fsck` must find
//! the image clean, the image is mounted again, and every file must hold a state it had since
//! its last fsync, every name a state it had since the last directory fsync. Many cycles run on
//! the same image, so later ones start from an image that survived earlier kills.
//!
//! Two variants:
//! - `fsync-writer`: a kill loses what the daemon buffered (file data not flushed yet, log
//!   records not written yet) and nothing it wrote to the image file: the page cache outlives
//!   the process. That is a device that lost power while every write it acknowledged is on its
//!   media.
//! - `host-cache`: the daemon runs with `--emulate-host-cache`, keeping the image's writes in
//!   its own memory until a Flush syncs them, so the kill also loses every write to the image
//!   since the last Flush: a crash of the host itself, whose page cache is gone.
//!
//! Prints `reliability: crashkill <variant> cycles=N lost=M`, where M counts files whose
//! fsync'ed state is gone or wrong, names in a state they never had, fsck findings, failed
//! remounts and unexpected errors of the writer. Short by default; `CSD_RELIABILITY_SECONDS=N`
//! runs cycles for N seconds, `CSD_RELIABILITY_SEED` picks the seed (`tests::reliability`).
//!
//! The writer is this test binary run again ([`crashkill_writer`]).

mod crashkill;

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crashkill::{
    model::{edit, Edit, Model},
    op::Op,
    pattern, DIRS,
};
use testkit::rng::{mix, Rng};
use tests::{
    mount::Mount,
    reliability::{self, Budget},
};

/// Cycles of a short run.
const SHORT_CYCLES: u64 = 16;
/// When the kill comes, after the writer started.
const KILL_AFTER_MS: (u64, u64) = (10, 700);
/// Findings printed in full.
const SHOWN: usize = 10;
/// A file written and fsync'ed before the first cycle and never touched again: it keeps the
/// 16 MiB device (about 7 MiB for file data) full enough that the cleaner has to move live
/// blocks while the writer works, so kills land in cleaning too.
const BALLAST: &str = "ballast";
const BALLAST_BYTES: usize = 3 << 20;
const BALLAST_TAG: u64 = 0x0BA1_1A57;

/// The writer: this binary run again with CSD_CK_ROOT (the mount), CSD_CK_JOURNAL and
/// CSD_CK_SEED. It writes `start` to the journal once it has listed its files, then changes
/// them until an operation fails (the daemon was killed) or a minute has passed.
#[test]
#[ignore = "run by crash_kill_cycles as a separate process"]
fn crashkill_writer() {
    let (Some(root), Some(journal), Some(seed)) = (
        std::env::var_os("CSD_CK_ROOT").map(PathBuf::from),
        std::env::var_os("CSD_CK_JOURNAL").map(PathBuf::from),
        std::env::var("CSD_CK_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return;
    };
    crashkill::writer::run(root, &journal, seed);
}

/// Every file in the writer's directories, read through the mount.
fn read_tree(m: &Mount) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut tree = BTreeMap::new();
    for dir in DIRS {
        let entries = fs::read_dir(m.path(dir)).map_err(|e| format!("list {dir}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("list {dir}: {e}"))?;
            let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
            let content = fs::read(entry.path()).map_err(|e| format!("read {name}: {e}"))?;
            tree.insert(name, content);
        }
    }
    Ok(tree)
}

fn start_writer(m: &Mount, journal: &Path, seed: u64) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "crashkill_writer",
            "--ignored",
            "--test-threads=1",
        ])
        .env("CSD_CK_ROOT", &m.root)
        .env("CSD_CK_JOURNAL", journal)
        .env("CSD_CK_SEED", seed.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the writer")
}

/// Waits for `child` up to `limit`; kills it past that. Whether it ended in time and well.
fn wait_child(child: &mut Child, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("watch the child") {
            return if status.success() {
                Ok(())
            } else {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                Err(format!("the writer failed ({status}): {err}"))
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the writer hung for {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a run found.
#[derive(Debug, Default)]
struct Tally {
    cycles: u64,
    ops: u64,
    syncs: u64,
    lost: Vec<String>,
}

impl Tally {
    fn lose(&mut self, seed: u64, cycle: u64, what: String) {
        let line = format!("seed {seed:#x} cycle {cycle}: {what}");
        if self.lost.len() < SHOWN {
            println!("crashkill: {line}");
        }
        self.lost.push(line);
    }
}

/// One cycle: the writer against the mount, SIGKILL at a random moment, fsck, remount,
/// check. False if the image could not be mounted again (the run cannot go on).
fn cycle(m: &mut Mount, rng: &mut Rng, seed: u64, n: u64, tally: &mut Tally) -> bool {
    let before = match read_tree(m) {
        Ok(tree) => tree,
        Err(e) => {
            tally.lose(seed, n, format!("the tree could not be read: {e}"));
            return false;
        }
    };
    let mut model = Model::durable(&before);
    let journal = m.dir().join(format!("journal.{n}"));
    let mut writer = start_writer(m, &journal, mix(seed ^ n));
    let started = Instant::now();
    while !fs::read_to_string(&journal).is_ok_and(|j| j.starts_with("start\n")) {
        if started.elapsed() > Duration::from_secs(60) || writer.try_wait().ok().flatten().is_some()
        {
            // A cycle whose writer never started tests nothing: count it as a failure.
            let _ = writer.kill();
            let _ = writer.wait();
            tally.lose(seed, n, "the writer never started".into());
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(
        rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1),
    ));
    m.kill();
    if let Err(e) = wait_child(&mut writer, Duration::from_secs(60)) {
        tally.lose(seed, n, e);
    }
    let text = fs::read_to_string(&journal).unwrap_or_default();
    tally.ops += text.lines().filter(|l| l.starts_with("do ")).count() as u64;
    tally.syncs += text
        .lines()
        .filter(|l| l.contains(" fsync ") || l.contains(" fdatasync ") || l.contains(" syncdirs"))
        .count() as u64;
    let mut findings = Vec::new();
    if let Err(e) = model.replay(&text, &mut findings) {
        findings.push(e);
    }
    for finding in findings {
        tally.lose(seed, n, finding);
    }
    let _ = fs::remove_file(&journal);
    if let Err(report) = m.fsck() {
        tally.lose(seed, n, report);
    }
    if let Err(e) = m.try_mount() {
        tally.lose(seed, n, format!("the image did not mount again: {e}"));
        return false;
    }
    match read_tree(m) {
        Ok(found) => {
            for finding in model.check(&found) {
                tally.lose(seed, n, finding);
            }
        }
        Err(e) => tally.lose(seed, n, format!("after the remount: {e}")),
    }
    match fs::read(m.path(BALLAST)) {
        Ok(bytes) if bytes == pattern(BALLAST_TAG, 0, BALLAST_BYTES) => {}
        Ok(bytes) => tally.lose(
            seed,
            n,
            format!("{BALLAST} changed ({} bytes)", bytes.len()),
        ),
        Err(e) => tally.lose(seed, n, format!("{BALLAST}: {e}")),
    }
    true
}

/// Cycles of write, SIGKILL, fsck, remount and check on one nearly full 16 MiB image: nothing
/// fsync'ed is lost, every file and name is in a state it had since its last sync, fsck stays
/// clean. `variant` names it in the summary line; `mount_args` are the daemon's options.
fn crash_kill_cycles(variant: &str, mount_args: &[&str]) {
    let seed = reliability::seed();
    let budget = Budget::from_env(SHORT_CYCLES);
    let started = Instant::now();
    let mut m = Mount::new(&["--capacity", "16M"], mount_args);
    if mount_args.contains(&"--emulate-host-cache") {
        // Else the variant would quietly be the other one.
        assert!(
            m.log().contains("emulating the host page cache"),
            "the daemon does not emulate the host's page cache: {}",
            m.log()
        );
    }
    for dir in DIRS {
        fs::create_dir(m.path(dir)).expect("mkdir");
        File::open(m.path(dir))
            .and_then(|d| d.sync_all())
            .expect("fsync the directory");
    }
    File::create(m.path(BALLAST))
        .and_then(|mut f| {
            f.write_all(&pattern(BALLAST_TAG, 0, BALLAST_BYTES))?;
            f.sync_all()
        })
        .expect("write the ballast");
    File::open(&m.root)
        .and_then(|d| d.sync_all())
        .expect("fsync the root");
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    while budget.more(tally.cycles) {
        let n = tally.cycles;
        tally.cycles += 1;
        if !cycle(&mut m, &mut rng, seed, n, &mut tally) {
            break;
        }
    }
    // A clean unmount after all those kills must leave a clean image too.
    m.unmount();
    if let Err(report) = m.fsck() {
        tally.lose(
            seed,
            tally.cycles,
            format!("after the last unmount: {report}"),
        );
    }
    println!(
        "crashkill: seed {seed:#x}: {} operations ({} syncs) in {:.1} s",
        tally.ops,
        tally.syncs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "reliability: crashkill {variant} cycles={} lost={}",
        tally.cycles,
        tally.lost.len()
    );
    assert!(tally.ops > 0, "the writer never ran");
    let shown: Vec<&String> = tally.lost.iter().take(SHOWN).collect();
    assert!(
        tally.lost.is_empty(),
        "{} losses in {} crash-kill cycles (seed {seed:#x}), first ones: {shown:#?}",
        tally.lost.len(),
        tally.cycles
    );
}

/// The journal's text form reads back as the same operation, and the model's edits give the
/// bytes the writer wrote: the checker and the writer agree on what a line means.
#[test]
fn journal_round_trip_and_pattern() {
    let ops = [
        Op::Create("a/1".into()),
        Op::Write {
            name: "b/2".into(),
            offset: 4093,
            len: 70,
            tag: 0xDEAD_BEEF_1234,
        },
        Op::Truncate {
            name: "a/0".into(),
            len: 17,
        },
        Op::Fsync {
            name: "a/3".into(),
            data_only: true,
        },
        Op::SyncDirs,
        Op::Close("b/5".into()),
        Op::Rename {
            from: "a/4".into(),
            to: "b/4".into(),
        },
        Op::Unlink("a/2".into()),
        Op::CloseOrphan,
    ];
    for op in ops {
        assert_eq!(Op::parse(&op.to_string()), Some(op.clone()), "{op}");
    }
    let mut content = Vec::new();
    edit(
        &mut content,
        &Edit::Write {
            offset: 5,
            len: 20,
            tag: 9,
        },
    );
    assert_eq!(&content[..5], &[0; 5]);
    assert_eq!(&content[5..], &pattern(9, 5, 20)[..]);
    assert_eq!(
        pattern(9, 5, 20)[3..],
        pattern(9, 8, 17)[..],
        "the pattern is positional"
    );
    assert_ne!(pattern(9, 0, 16), pattern(10, 0, 16));
}

/// The model allows every state since the last sync and nothing older: a file fsync'ed and
/// then rewritten may show either version, and a rename or unlink after the last directory
/// fsync may or may not have happened; but an fsync'ed write that is gone, a synced rename
/// undone, a synced name gone, a name never made and a writer error are each a finding.
#[test]
fn model_allows_states_since_the_last_sync_only() {
    let old = vec![1u8; 10];
    let durable: BTreeMap<String, Vec<u8>> = [("a/0".to_string(), old.clone())].into();
    let journal = "start\n\
                   do 1 write a/0 0 4 7\nok 1\n\
                   do 2 fsync a/0\nok 2\n\
                   do 3 write a/0 2 12 8\nok 3\n\
                   do 4 create a/1\nok 4\n\
                   do 5 rename a/0 b/0\nok 5\n\
                   do 6 syncdirs\nok 6\n\
                   do 7 unlink b/0\n";
    let mut model = Model::durable(&durable);
    let mut findings = Vec::new();
    model
        .replay(journal, &mut findings)
        .expect("a journal in order");
    assert_eq!(findings, Vec::<String>::new());
    let mut synced = old.clone();
    edit(
        &mut synced,
        &Edit::Write {
            offset: 0,
            len: 4,
            tag: 7,
        },
    );
    let mut rewritten = synced.clone();
    edit(
        &mut rewritten,
        &Edit::Write {
            offset: 2,
            len: 12,
            tag: 8,
        },
    );
    assert_eq!(rewritten.len(), 14);
    let tree = |files: &[(&str, &Vec<u8>)]| -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(n, c)| (n.to_string(), (*c).clone()))
            .collect()
    };
    let empty = Vec::new();
    for ok in [
        tree(&[("a/1", &empty), ("b/0", &synced)]),
        tree(&[("a/1", &empty), ("b/0", &rewritten)]),
        tree(&[("a/1", &empty)]),
    ] {
        assert_eq!(model.check(&ok), Vec::<String>::new(), "{:?}", ok.keys());
    }
    for lost in [
        tree(&[("a/1", &empty), ("b/0", &old)]),
        tree(&[("a/0", &synced), ("a/1", &empty)]),
        tree(&[("b/0", &synced)]),
        tree(&[("a/1", &empty), ("b/0", &synced), ("b/5", &empty)]),
    ] {
        assert!(!model.check(&lost).is_empty(), "{:?}", lost.keys());
    }
    let mut model = Model::durable(&durable);
    let mut findings = Vec::new();
    model
        .replay("start\ndo 1 unlink a/0\nerr 1 2\n", &mut findings)
        .expect("a journal in order");
    assert_eq!(findings.len(), 1, "a writer error is a finding");
    assert!(Model::durable(&durable)
        .replay("start\nok 1\n", &mut Vec::new())
        .is_err());
}

/// The campaign's run, under the name `cargo xtask reliability` runs (and the host-test step of
/// `cargo xtask test` leaves to it).
mod campaign {
    #[test]
    fn crash_kill_cycles() {
        super::crash_kill_cycles("fsync-writer", &[]);
    }

    /// The kill is a crash of the host: the image's writes since the last Flush go too.
    #[test]
    fn host_crash_kill_cycles() {
        super::crash_kill_cycles("host-cache", &["--emulate-host-cache"]);
    }
}
