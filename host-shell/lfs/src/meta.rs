//! The metadata state (inodes, extents, directories, attributes, zone uses) and the one
//! function that changes it: [`Meta::apply`]. Operations build records and apply them; mount
//! replays the same records from media, so both paths reach the same state.

use std::collections::BTreeMap;

use super::dir::{Dir, Entry};
use super::error::{corrupted, Result};
use super::extent::{ExtentMap, Run};
use super::format::{Record, ZoneUse, BLOCK_BYTES};
use super::ids::{Lba, ZoneId};
use super::inode::{Attr, FileKind, InodeNo};

/// One inode and what hangs off it. [`Meta`] hands out shared references only: every change
/// goes through a record ([`Meta::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub attr: Attr,
    /// A regular file's blocks.
    pub extents: ExtentMap,
    /// A directory's entries.
    pub dir: Option<Dir>,
    /// A symbolic link's target.
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Everything the metadata stream describes.
///
/// Invariants (each kept by [`Meta::apply`], which refuses a record that would break one):
/// - Each inode sits under its own number (`inodes[ino].attr.ino == ino`) and never changes
///   kind; a directory has a [`Dir`], no other kind has one.
/// - Only regular files map blocks. Each extent lies inside one zone of the device, below
///   the zone's capacity, and no two extents share a block (the map replaces what a new
///   mapping covers).
/// - `live[z]` is the number of blocks the extents of all inodes map into zone `z`: derived
///   from the block map, not stored, updated as records map, truncate and free blocks, and
///   never below zero.
/// - `next_ino` is above every inode number in use or ever logged.
/// - The hot and cold zones, when set, are zones of the device with a `born` age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    inodes: BTreeMap<InodeNo, Inode>,
    next_ino: u64,
    hot: Option<ZoneId>,
    cold: Option<ZoneId>,
    /// When each zone was opened for data (a counter), for the cleaner's age.
    born: BTreeMap<ZoneId, u64>,
    /// Live data blocks in each zone (derived, not stored).
    live: Vec<u64>,
    zone_lbas: u64,
    zone_cap: u64,
}

/// Blocks holding the first `size` bytes.
pub fn blocks_of(size: u64) -> u64 {
    size.div_ceil(BLOCK_BYTES as u64)
}

impl Meta {
    /// An empty state for a device of `nr_zones` zones.
    pub fn new(nr_zones: u32, zone_lbas: u64, zone_cap: u64) -> Meta {
        Meta {
            inodes: BTreeMap::new(),
            next_ino: InodeNo::ROOT.0 + 1,
            hot: None,
            cold: None,
            born: BTreeMap::new(),
            live: vec![0; nr_zones as usize],
            zone_lbas,
            zone_cap,
        }
    }

    /// The zone holding `lba`.
    pub fn zone_of(&self, lba: Lba) -> ZoneId {
        ZoneId((lba.get() / self.zone_lbas) as u32)
    }

    /// Inode `ino`, if it exists.
    pub fn inode(&self, ino: InodeNo) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn contains(&self, ino: InodeNo) -> bool {
        self.inodes.contains_key(&ino)
    }

    /// Every inode, by number.
    pub fn inodes(&self) -> impl DoubleEndedIterator<Item = &Inode> {
        self.inodes.values()
    }

    /// Inodes in use.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The number the next new inode gets.
    pub fn next_ino(&self) -> InodeNo {
        InodeNo(self.next_ino)
    }

    /// The directory holding directory `ino` (the root's is itself).
    pub fn parent(&self, ino: InodeNo) -> Option<InodeNo> {
        self.inode(ino).map(|i| i.attr.parent)
    }

    /// Inodes with no name left (unlinked while open when the power went): mount frees them.
    pub fn orphans(&self) -> Vec<InodeNo> {
        self.inodes()
            .filter(|i| i.attr.nlink == 0)
            .map(|i| i.attr.ino)
            .collect()
    }

    /// The zone new file data is appended to.
    pub fn hot(&self) -> Option<ZoneId> {
        self.hot
    }

    /// The zone the cleaner moves live data to.
    pub fn cold(&self) -> Option<ZoneId> {
        self.cold
    }

    /// Whether `zone` is the hot or the cold zone.
    pub fn is_active(&self, zone: ZoneId) -> bool {
        self.hot == Some(zone) || self.cold == Some(zone)
    }

    /// When each zone was opened for data.
    pub fn born(&self) -> &BTreeMap<ZoneId, u64> {
        &self.born
    }

    /// The age stamp of the zone opened last (0 if none was): where the zone clock resumes.
    pub fn youngest(&self) -> u64 {
        self.born.values().copied().max().unwrap_or(0)
    }

    /// Whether `other` has the same hot and cold zones and zone ages.
    pub fn same_zone_uses(&self, other: &Meta) -> bool {
        (self.hot, self.cold, &self.born) == (other.hot, other.cold, &other.born)
    }

    /// Live data blocks in `zone`.
    pub fn live(&self, zone: ZoneId) -> u64 {
        self.live[zone.index()]
    }

    /// Live data blocks in each zone, by zone index.
    pub fn live_per_zone(&self) -> &[u64] {
        &self.live
    }

    /// Live data blocks on the device.
    pub fn live_total(&self) -> u64 {
        self.live.iter().sum()
    }

    /// The extents in `zone` as (inode, first file block, run), in device order: what the
    /// cleaner moves.
    pub fn runs_in(&self, zone: ZoneId) -> Vec<(InodeNo, u64, Run)> {
        let mut out: Vec<(InodeNo, u64, Run)> = Vec::new();
        for inode in self.inodes() {
            for (fb, run) in inode.extents.iter() {
                if self.zone_of(run.lba) == zone {
                    out.push((inode.attr.ino, fb, run));
                }
            }
        }
        out.sort_by_key(|m| m.2.lba);
        out
    }

    fn free_runs(&mut self, runs: &[Run]) -> Result<()> {
        for r in runs {
            let z = self.zone_of(r.lba).index();
            let live = self
                .live
                .get_mut(z)
                .ok_or_else(|| corrupted(format!("an extent in zone {z}")))?;
            *live = live
                .checked_sub(r.count)
                .ok_or_else(|| corrupted(format!("zone {z} frees more blocks than it holds")))?;
        }
        Ok(())
    }

    fn inode_mut(&mut self, ino: InodeNo) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| {
            corrupted(format!(
                "a record names inode {} that does not exist",
                ino.0
            ))
        })
    }

    fn dir_mut(&mut self, ino: InodeNo) -> Result<&mut Dir> {
        self.inode_mut(ino)?
            .dir
            .as_mut()
            .ok_or_else(|| corrupted(format!("inode {} is not a directory", ino.0)))
    }

    /// Applies one record. A record that does not fit the state is corruption.
    pub fn apply(&mut self, record: &Record) -> Result<()> {
        match record {
            Record::Inode(attr) => {
                self.next_ino = self.next_ino.max(attr.ino.0 + 1);
                match self.inodes.get_mut(&attr.ino) {
                    Some(inode) if inode.attr.kind == attr.kind => inode.attr = *attr,
                    Some(_) => return Err(corrupted(format!("inode {} changes kind", attr.ino.0))),
                    None => {
                        let dir = (attr.kind == FileKind::Dir).then(Dir::default);
                        self.inodes.insert(
                            attr.ino,
                            Inode {
                                attr: *attr,
                                extents: ExtentMap::default(),
                                dir,
                                target: Vec::new(),
                                xattrs: BTreeMap::new(),
                            },
                        );
                    }
                }
            }
            &Record::Map {
                ino,
                file_block,
                lba,
                count,
            } => {
                let (zl, cap) = (self.zone_lbas, self.zone_cap);
                let z = self.zone_of(lba);
                let count = u64::from(count);
                if z.index() >= self.live.len() || count == 0 || lba.get() % zl + count > cap {
                    return Err(corrupted(format!(
                        "inode {} maps {count} blocks at LBA {lba}, outside a zone",
                        ino.0
                    )));
                }
                let inode = self.inode_mut(ino)?;
                if inode.attr.kind != FileKind::File {
                    return Err(corrupted(format!(
                        "inode {} maps blocks but is not a file",
                        ino.0
                    )));
                }
                let freed = inode.extents.insert(file_block, lba, count, zl);
                self.live[z.index()] += count;
                self.free_runs(&freed)?;
            }
            &Record::Truncate { ino, size } => {
                let inode = self.inode_mut(ino)?;
                let freed = inode.extents.remove(blocks_of(size), u64::MAX);
                self.free_runs(&freed)?;
            }
            Record::DirAdd {
                dir,
                cookie,
                child,
                kind,
                name,
            } => {
                let entry = Entry {
                    ino: *child,
                    kind: *kind,
                    cookie: *cookie,
                };
                if !self.dir_mut(*dir)?.add(name, entry) {
                    return Err(corrupted(format!(
                        "directory {} gets a second entry {:?}",
                        dir.0,
                        String::from_utf8_lossy(name)
                    )));
                }
            }
            Record::DirRemove { dir, name } => {
                if self.dir_mut(*dir)?.remove(name).is_none() {
                    return Err(corrupted(format!(
                        "directory {} loses entry {:?} it does not have",
                        dir.0,
                        String::from_utf8_lossy(name)
                    )));
                }
            }
            Record::XattrSet { ino, name, value } => {
                self.inode_mut(*ino)?
                    .xattrs
                    .insert(name.clone(), value.clone());
            }
            Record::XattrRemove { ino, name } => {
                self.inode_mut(*ino)?.xattrs.remove(name);
            }
            Record::Symlink { ino, target } => {
                self.inode_mut(*ino)?.target = target.clone();
            }
            Record::Free { ino } => {
                let inode = self
                    .inodes
                    .remove(ino)
                    .ok_or_else(|| corrupted(format!("inode {} is freed twice", ino.0)))?;
                let runs: Vec<Run> = inode.extents.iter().map(|(_, r)| r).collect();
                self.free_runs(&runs)?;
            }
            &Record::Zone { zone, use_, born } => {
                if zone.index() >= self.live.len() {
                    return Err(corrupted(format!("zone {zone} does not exist")));
                }
                match use_ {
                    ZoneUse::Hot => self.hot = Some(zone),
                    ZoneUse::Cold => self.cold = Some(zone),
                    ZoneUse::Data => {
                        if self.hot == Some(zone) {
                            self.hot = None;
                        }
                        if self.cold == Some(zone) {
                            self.cold = None;
                        }
                    }
                }
                self.born.insert(zone, born);
            }
            &Record::NextIno { next } => self.next_ino = self.next_ino.max(next),
        }
        Ok(())
    }

    /// Records that rebuild this whole state from nothing (a checkpoint's image).
    pub fn image(&self) -> Vec<Record> {
        let mut out = vec![Record::NextIno {
            next: self.next_ino,
        }];
        for (&zone, &born) in &self.born {
            let use_ = if self.hot == Some(zone) {
                ZoneUse::Hot
            } else if self.cold == Some(zone) {
                ZoneUse::Cold
            } else {
                ZoneUse::Data
            };
            out.push(Record::Zone { zone, use_, born });
        }
        for inode in self.inodes.values() {
            let ino = inode.attr.ino;
            out.push(Record::Inode(inode.attr));
            if !inode.target.is_empty() {
                out.push(Record::Symlink {
                    ino,
                    target: inode.target.clone(),
                });
            }
            for (file_block, run) in inode.extents.iter() {
                out.push(Record::Map {
                    ino,
                    file_block,
                    lba: run.lba,
                    count: run.count as u32,
                });
            }
            for (name, value) in &inode.xattrs {
                out.push(Record::XattrSet {
                    ino,
                    name: name.clone(),
                    value: value.clone(),
                });
            }
        }
        for inode in self.inodes.values() {
            if let Some(dir) = &inode.dir {
                for (name, e) in dir.iter() {
                    out.push(Record::DirAdd {
                        dir: inode.attr.ino,
                        cookie: e.cookie,
                        child: e.ino,
                        kind: e.kind,
                        name: name.to_vec(),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
