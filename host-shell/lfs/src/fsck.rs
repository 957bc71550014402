//! fsck: checks every invariant of a mounted file system against the device.

use std::collections::{BTreeMap, VecDeque};

use super::checkpoint::find_latest;
use super::ids::{Lba, ZoneId};
use super::inode::{FileKind, InodeNo};
use super::meta::blocks_of;
use super::replay::replay;
use super::space::{Space, CKPT_ZONES};
use super::State;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A stable short name of the check that failed (for `--json`).
    pub check: &'static str,
    /// What exactly is wrong, naming inodes, zones and LBAs.
    pub detail: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

impl State {
    /// Every problem found; the caller has flushed the log so that media and memory agree.
    pub(super) fn fsck(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |check: &'static str, detail: String| out.push(Problem { check, detail });
        let report = match self.device.all_zones() {
            Ok(r) => r,
            Err(e) => {
                p("device", format!("the zone report failed: {e}"));
                return out;
            }
        };
        let device = Space::from_report(self.space.zone_lbas(), self.space.cap(), &report);
        for z in self.space.zones() {
            if device.written(z) < self.space.written(z) {
                p(
                    "write-pointer",
                    format!(
                        "zone {z}: the device has {} blocks written, the file system counts {}",
                        device.written(z),
                        self.space.written(z)
                    ),
                );
            }
        }

        // The metadata on the media replays to the state in memory (all checksums hold).
        match find_latest(&*self.device, &device) {
            Ok(Some(c)) if c.last() == self.ckpt.last() => {
                let r = c.last();
                match replay(
                    &*self.device,
                    &device,
                    r.fs_id,
                    r.image_lba,
                    r.image_seq,
                    r.image_chunks,
                ) {
                    Ok(rep) => {
                        if rep.next_seq != self.stream.next_seq() {
                            p(
                                "metadata-log",
                                format!(
                                    "the log replays to chunk {} but {} were written",
                                    rep.next_seq,
                                    self.stream.next_seq()
                                ),
                            );
                        }
                        for inode in self.meta.inodes() {
                            let ino = inode.attr.ino;
                            match rep.meta.inode(ino) {
                                None => p(
                                    "metadata-log",
                                    format!("inode {} is not on the media", ino.0),
                                ),
                                Some(m) if m != inode => p(
                                    "metadata-log",
                                    format!("inode {} on the media differs from memory", ino.0),
                                ),
                                _ => {}
                            }
                        }
                        for ino in rep.meta.inodes().map(|i| i.attr.ino) {
                            if !self.meta.contains(ino) {
                                p(
                                    "metadata-log",
                                    format!("inode {} is on the media but was freed", ino.0),
                                );
                            }
                        }
                        if !rep.meta.same_zone_uses(&self.meta) {
                            p(
                                "metadata-log",
                                "the zone uses on the media differ from memory".into(),
                            );
                        }
                    }
                    Err(e) => p("metadata-log", format!("replay failed: {e}")),
                }
            }
            Ok(Some(c)) => p(
                "checkpoint",
                format!(
                    "the latest checkpoint on the media is {} but {} was written",
                    c.last().seq,
                    self.ckpt.last().seq
                ),
            ),
            Ok(None) => p("checkpoint", "no valid checkpoint record".into()),
            Err(e) => p(
                "checkpoint",
                format!("reading the checkpoint log failed: {e}"),
            ),
        }

        // Extents: inside a data zone, below its write pointer, never shared.
        let mut runs: Vec<(Lba, u64, InodeNo)> = Vec::new();
        let mut live = vec![0u64; self.space.nr() as usize];
        for inode in self.meta.inodes() {
            let ino = inode.attr.ino;
            // A directory, symlink, FIFO, socket or device node has no data blocks.
            if inode.attr.kind != FileKind::File && !inode.extents.is_empty() {
                p(
                    "extent",
                    format!("inode {} is not a file but maps blocks", ino.0),
                );
            }
            // Device numbers belong to device nodes only.
            if inode.attr.rdev != 0 && !inode.attr.kind.is_device() {
                p(
                    "special",
                    format!(
                        "{:?} {} has device number {:#x}",
                        inode.attr.kind, ino.0, inode.attr.rdev
                    ),
                );
            }
            let last = blocks_of(inode.attr.size);
            for (fb, run) in inode.extents.iter() {
                let z = self.meta.zone_of(run.lba);
                let off = self.space.offset_in_zone(run.lba);
                if !self.space.contains(z) || CKPT_ZONES.contains(&z) || self.stream.holds(z) {
                    p(
                        "extent",
                        format!(
                            "inode {} block {fb}: LBA {} is not in a data zone",
                            ino.0, run.lba
                        ),
                    );
                    continue;
                }
                if off + run.count > device.written(z) {
                    p(
                        "extent",
                        format!(
                            "inode {} block {fb}: LBAs {}..{} pass zone {z}'s write pointer",
                            ino.0,
                            run.lba,
                            run.lba.offset(run.count)
                        ),
                    );
                }
                if fb + run.count > last {
                    p(
                        "extent",
                        format!(
                            "inode {} maps block {} past its size {}",
                            ino.0,
                            fb + run.count - 1,
                            inode.attr.size
                        ),
                    );
                }
                live[z.index()] += run.count;
                runs.push((run.lba, run.count, ino));
            }
        }
        runs.sort();
        for w in runs.windows(2) {
            if w[0].0.offset(w[0].1) > w[1].0 {
                p(
                    "shared-block",
                    format!(
                        "LBA {} is mapped by inode {} and inode {}",
                        w[1].0, w[0].2 .0, w[1].2 .0
                    ),
                );
            }
        }
        for (z, &found) in live.iter().enumerate() {
            let zone = ZoneId(z as u32);
            if found != self.meta.live(zone) {
                p(
                    "space",
                    format!(
                        "zone {z} holds {found} live blocks but is counted as {}",
                        self.meta.live(zone)
                    ),
                );
            }
            let special = self.space.held(zone) || self.has_job(zone);
            if device.written(zone) > 0 && found == 0 && self.space.pins(zone) == 0 && !special {
                p(
                    "space",
                    format!("zone {z} holds nothing live but was not reset"),
                );
            }
        }

        // The tree: connected from the root, entries name live inodes of their kind, link
        // counts match.
        let mut links: BTreeMap<InodeNo, u32> = BTreeMap::new();
        let mut seen_dirs: BTreeMap<InodeNo, u32> = BTreeMap::new();
        let mut queue = VecDeque::from([InodeNo::ROOT]);
        if !self.meta.contains(InodeNo::ROOT) {
            p("tree", "the root directory is missing".into());
        }
        while let Some(d) = queue.pop_front() {
            let Some(inode) = self.meta.inode(d) else {
                continue;
            };
            let Some(dir) = &inode.dir else {
                p(
                    "tree",
                    format!("inode {} is listed as a directory but is not one", d.0),
                );
                continue;
            };
            let mut subdirs = 0;
            for (name, e) in dir.iter() {
                let shown = String::from_utf8_lossy(name);
                match self.meta.inode(e.ino) {
                    None => p(
                        "tree",
                        format!(
                            "directory {} entry {shown:?} names missing inode {}",
                            d.0, e.ino.0
                        ),
                    ),
                    Some(child) if child.attr.kind != e.kind => p(
                        "tree",
                        format!("directory {} entry {shown:?} has the wrong kind", d.0),
                    ),
                    Some(child) => {
                        *links.entry(e.ino).or_insert(0) += 1;
                        if e.kind == FileKind::Dir {
                            subdirs += 1;
                            if child.attr.parent != d {
                                p(
                                    "tree",
                                    format!(
                                        "directory {} sits in {} but names {} as its parent",
                                        e.ino.0, d.0, child.attr.parent.0
                                    ),
                                );
                            }
                            let n = seen_dirs.entry(e.ino).or_insert(0);
                            *n += 1;
                            if *n == 1 {
                                queue.push_back(e.ino);
                            } else {
                                p(
                                    "tree",
                                    format!("directory {} has more than one name", e.ino.0),
                                );
                            }
                        }
                    }
                }
            }
            if inode.attr.nlink != 2 + subdirs {
                p(
                    "link-count",
                    format!(
                        "directory {} has nlink {} but {} subdirectories",
                        d.0, inode.attr.nlink, subdirs
                    ),
                );
            }
        }
        for inode in self.meta.inodes() {
            let ino = inode.attr.ino;
            if ino == InodeNo::ROOT || inode.attr.kind == FileKind::Dir {
                if ino != InodeNo::ROOT && !seen_dirs.contains_key(&ino) {
                    p(
                        "tree",
                        format!("directory {} is not reachable from the root", ino.0),
                    );
                }
                continue;
            }
            let n = links.get(&ino).copied().unwrap_or(0);
            let open = self.buffers.open_count(ino) > 0;
            if n != inode.attr.nlink {
                p(
                    "link-count",
                    format!(
                        "inode {} has nlink {} but {} names",
                        ino.0, inode.attr.nlink, n
                    ),
                );
            }
            if n == 0 && !open {
                p(
                    "tree",
                    format!("inode {} has no name and no open handle", ino.0),
                );
            }
            let kind = inode.attr.kind;
            if kind.is_special() && (inode.attr.size != 0 || !inode.target.is_empty()) {
                p(
                    "special",
                    format!(
                        "{kind:?} {} has size {} and a {}-byte target (a special file holds no data)",
                        ino.0,
                        inode.attr.size,
                        inode.target.len()
                    ),
                );
            }
            if inode.attr.kind == FileKind::Symlink && inode.attr.size != inode.target.len() as u64
            {
                p(
                    "symlink",
                    format!(
                        "symlink {} has size {} but a {}-byte target",
                        ino.0,
                        inode.attr.size,
                        inode.target.len()
                    ),
                );
            }
        }
        let next_ino = self.meta.next_ino().0;
        if next_ino <= self.meta.inodes().next_back().map_or(0, |i| i.attr.ino.0) {
            p(
                "inode-numbers",
                format!("the next inode number {next_ino} is in use"),
            );
        }
        out
    }
}

// The device is `Direct` from this build (testkit's device module holds a `Direct` of another,
// non-test build of this crate), so only testkit's geometry is used here.
#[cfg(all(test, feature = "zone-manager"))]
mod tests {
    use firmware::nand::sim::SimNand;
    use firmware::zns::{ZoneConfig, ZoneManager};

    use super::super::format::Record;
    use super::super::inode::InodeNo;
    use super::super::Lfs;
    use crate::zoned::Direct;

    const S_IFIFO: u32 = 0o010000;
    const S_IFCHR: u32 = 0o020000;

    /// fsck flags a special file that holds data or a target, and a device number on an
    /// inode that is not a device node; a device node's number is fine.
    #[test]
    fn special_file_invariants() {
        let geometry = testkit::geometry::small();
        let zones = ZoneConfig::for_geometry(&geometry);
        let manager = ZoneManager::format(SimNand::new(geometry), zones).expect("format");
        let device = Direct::new(manager);
        Lfs::mkfs(&device, 0, 0).expect("mkfs");
        let lfs = Lfs::mount(&device).expect("mount");
        let fifo = lfs
            .mknod(InodeNo::ROOT, b"fifo", S_IFIFO | 0o644, 0, 0, 0)
            .expect("mkfifo");
        lfs.mknod(InodeNo::ROOT, b"chr", S_IFCHR | 0o644, 0x103, 0, 0)
            .expect("mknod");
        assert_eq!(lfs.fsck().expect("fsck"), []);
        let special = |lfs: &Lfs| -> Vec<String> {
            let problems = lfs.fsck().expect("fsck");
            problems
                .into_iter()
                .filter(|p| p.check == "special")
                .map(|p| p.detail)
                .collect()
        };
        {
            let mut s = lfs.lock().expect("lock");
            // Records no operation makes, applied to memory only.
            let mut bad_fifo = s.meta.inode(fifo.ino).expect("the fifo").attr;
            bad_fifo.size = 5;
            bad_fifo.rdev = 7;
            let mut bad_root = s.meta.inode(InodeNo::ROOT).expect("the root").attr;
            bad_root.rdev = 1;
            for attr in [bad_fifo, bad_root] {
                s.meta.apply(&Record::Inode(attr)).expect("apply");
            }
        }
        let found = special(&lfs);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found.iter().any(|d| d.contains("has size 5")), "{found:#?}");
        assert!(
            found
                .iter()
                .any(|d| d.starts_with("Fifo") && d.contains("0x7")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|d| d.starts_with("Dir 1") && d.contains("0x1")),
            "{found:#?}"
        );
    }
}
