//! Unit tests of [`Meta`]: each record keeps the invariants the type states.

use super::*;
use crate::error::LfsError;
use crate::inode::Time;

/// 8 zones of 64 LBAs, 60 writable.
fn meta() -> Meta {
    Meta::new(8, 64, 60)
}

fn attr(ino: u64, kind: FileKind) -> Attr {
    Attr {
        ino: InodeNo(ino),
        kind,
        perm: 0o644,
        uid: 0,
        gid: 0,
        nlink: if kind == FileKind::Dir { 2 } else { 1 },
        size: 0,
        atime: Time::default(),
        mtime: Time::default(),
        ctime: Time::default(),
        parent: if kind == FileKind::Dir {
            InodeNo::ROOT
        } else {
            InodeNo(0)
        },
        rdev: 0,
    }
}

fn map(ino: u64, file_block: u64, lba: u64, count: u32) -> Record {
    Record::Map {
        ino: InodeNo(ino),
        file_block,
        lba: Lba(lba),
        count,
    }
}

/// The live counts recomputed from every extent, as the invariant states them.
fn counted(m: &Meta) -> Vec<u64> {
    let mut live = vec![0; m.live_per_zone().len()];
    for inode in m.inodes() {
        for (_, run) in inode.extents.iter() {
            live[m.zone_of(run.lba).index()] += run.count;
        }
    }
    live
}

fn apply_all(m: &mut Meta, records: &[Record]) {
    for r in records {
        m.apply(r).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(m.live_per_zone(), counted(m), "after {r:?}");
    }
}

/// Mapping, overwriting (also into another zone), truncating and freeing keep each
/// zone's live count equal to the blocks the extents map there.
#[test]
fn live_counts_follow_the_block_map() {
    let mut m = meta();
    apply_all(
        &mut m,
        &[
            Record::Inode(attr(2, FileKind::File)),
            map(2, 0, 128, 10),
            map(2, 3, 192, 2),
        ],
    );
    assert_eq!((m.live(ZoneId(2)), m.live(ZoneId(3))), (8, 2));
    let mut big = attr(2, FileKind::File);
    big.size = 10 * BLOCK_BYTES as u64;
    apply_all(
        &mut m,
        &[
            Record::Inode(big),
            Record::Truncate {
                ino: InodeNo(2),
                size: 2 * BLOCK_BYTES as u64 + 1,
            },
        ],
    );
    assert_eq!((m.live(ZoneId(2)), m.live(ZoneId(3))), (3, 0));
    apply_all(&mut m, &[Record::Free { ino: InodeNo(2) }]);
    assert_eq!(m.live_total(), 0);
    assert!(!m.contains(InodeNo(2)));
}

/// A record that does not fit the state is corruption and changes nothing: a map
/// crossing a zone's capacity or past the device, blocks for a directory, a kind change,
/// an inode freed twice, an entry in a missing directory, a zone past the device.
#[test]
fn records_that_do_not_fit_are_corruption() {
    let mut m = meta();
    apply_all(
        &mut m,
        &[
            Record::Inode(attr(1, FileKind::Dir)),
            Record::Inode(attr(2, FileKind::File)),
            map(2, 0, 130, 4),
        ],
    );
    let before = m.clone();
    let bad = [
        map(2, 4, 64 * 2 + 59, 2),
        map(2, 4, 64 * 8, 1),
        map(2, 4, 140, 0),
        map(1, 0, 140, 1),
        Record::Inode(attr(2, FileKind::Dir)),
        Record::DirAdd {
            dir: InodeNo(2),
            cookie: 3,
            child: InodeNo(2),
            kind: FileKind::File,
            name: b"x".to_vec(),
        },
        Record::DirRemove {
            dir: InodeNo(1),
            name: b"missing".to_vec(),
        },
        Record::Free { ino: InodeNo(9) },
        Record::Zone {
            zone: ZoneId(8),
            use_: ZoneUse::Hot,
            born: 1,
        },
    ];
    for r in &bad {
        assert!(
            matches!(m.apply(r), Err(LfsError::Corrupted(_))),
            "{r:?} is refused"
        );
        assert_eq!(m, before, "{r:?} changed nothing");
    }
}

/// The image of a state replays into an equal state: inodes with their extents,
/// targets, attributes and entries, the zone uses and the next inode number.
#[test]
fn image_rebuilds_the_same_state() {
    let mut m = meta();
    let mut sub = attr(3, FileKind::Dir);
    sub.parent = InodeNo::ROOT;
    apply_all(
        &mut m,
        &[
            Record::Inode(attr(1, FileKind::Dir)),
            Record::Inode(attr(2, FileKind::File)),
            map(2, 0, 128, 3),
            map(2, 5, 200, 2),
            Record::Inode(sub),
            Record::Inode(attr(4, FileKind::Symlink)),
            Record::Symlink {
                ino: InodeNo(4),
                target: b"file".to_vec(),
            },
            Record::XattrSet {
                ino: InodeNo(2),
                name: b"user.a".to_vec(),
                value: b"1".to_vec(),
            },
            Record::DirAdd {
                dir: InodeNo(1),
                cookie: 3,
                child: InodeNo(2),
                kind: FileKind::File,
                name: b"file".to_vec(),
            },
            Record::DirAdd {
                dir: InodeNo(1),
                cookie: 4,
                child: InodeNo(3),
                kind: FileKind::Dir,
                name: b"sub".to_vec(),
            },
            Record::DirAdd {
                dir: InodeNo(3),
                cookie: 3,
                child: InodeNo(4),
                kind: FileKind::Symlink,
                name: b"link".to_vec(),
            },
            Record::Zone {
                zone: ZoneId(2),
                use_: ZoneUse::Hot,
                born: 1,
            },
            Record::Zone {
                zone: ZoneId(3),
                use_: ZoneUse::Cold,
                born: 2,
            },
            Record::NextIno { next: 40 },
        ],
    );
    let mut rebuilt = meta();
    apply_all(&mut rebuilt, &m.image());
    assert_eq!(rebuilt, m);
    assert!(rebuilt.same_zone_uses(&m));
    assert_eq!(rebuilt.next_ino(), InodeNo(40));
}

/// The hot and cold zones follow Zone records; a zone that becomes plain data keeps its
/// age, and the youngest age is where the zone clock resumes.
#[test]
fn zone_uses() {
    let mut m = meta();
    let zone = |z: u32, use_: ZoneUse, born: u64| Record::Zone {
        zone: ZoneId(z),
        use_,
        born,
    };
    apply_all(
        &mut m,
        &[zone(2, ZoneUse::Hot, 1), zone(3, ZoneUse::Cold, 2)],
    );
    assert_eq!((m.hot(), m.cold()), (Some(ZoneId(2)), Some(ZoneId(3))));
    assert!(m.is_active(ZoneId(2)) && m.is_active(ZoneId(3)) && !m.is_active(ZoneId(4)));
    apply_all(
        &mut m,
        &[zone(2, ZoneUse::Data, 1), zone(4, ZoneUse::Hot, 3)],
    );
    assert_eq!(m.hot(), Some(ZoneId(4)));
    assert!(!m.is_active(ZoneId(2)));
    assert_eq!(m.born().get(&ZoneId(2)), Some(&1));
    assert_eq!(m.youngest(), 3);
    assert_eq!(meta().youngest(), 0);
}

/// Inode numbers: the next one is above every number logged; parent pointers and
/// orphans (no link left) are read from the attributes; the cleaner's runs of a zone
/// come in device order.
#[test]
fn lookups() {
    let mut m = meta();
    let mut sub = attr(7, FileKind::Dir);
    sub.parent = InodeNo(1);
    let mut orphan = attr(5, FileKind::File);
    orphan.nlink = 0;
    apply_all(
        &mut m,
        &[
            Record::Inode(attr(1, FileKind::Dir)),
            Record::Inode(sub),
            Record::Inode(orphan),
            Record::Inode(attr(3, FileKind::File)),
            map(3, 0, 140, 2),
            map(5, 0, 130, 1),
            map(5, 1, 200, 1),
        ],
    );
    assert_eq!(m.next_ino(), InodeNo(8));
    assert_eq!(m.inode_count(), 4);
    assert_eq!(m.parent(InodeNo(7)), Some(InodeNo(1)));
    assert_eq!(m.parent(InodeNo(9)), None);
    assert_eq!(m.orphans(), [InodeNo(5)]);
    let runs: Vec<(InodeNo, u64, Lba)> = m
        .runs_in(ZoneId(2))
        .into_iter()
        .map(|(ino, fb, run)| (ino, fb, run.lba))
        .collect();
    assert_eq!(runs, [(InodeNo(5), 0, Lba(130)), (InodeNo(3), 0, Lba(140))]);
}
