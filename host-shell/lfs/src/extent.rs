//! Per-file extents: file block -> (LBA, count), without overlaps.

use std::collections::BTreeMap;

use crate::ids::Lba;

/// A run of device blocks: `count` LBAs from `lba`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub lba: Lba,
    pub count: u64,
}

/// A file's block map. Extents never overlap and never cross a zone boundary (the cleaner
/// and the space accounting work per zone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentMap {
    /// First file block -> run.
    map: BTreeMap<u64, Run>,
}

impl ExtentMap {
    /// Every extent as (first file block, run), in file order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Run)> + '_ {
        self.map.iter().map(|(&f, &r)| (f, r))
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Blocks mapped.
    #[cfg(test)]
    pub fn blocks(&self) -> u64 {
        self.map.values().map(|r| r.count).sum()
    }

    /// The mapping of `file_block`: its LBA and how many following file blocks continue the
    /// same run; or, for a hole, `None` and the blocks until the next extent (`u64::MAX` if
    /// none follows).
    pub fn lookup(&self, file_block: u64) -> (Option<Lba>, u64) {
        if let Some((&start, run)) = self.map.range(..=file_block).next_back() {
            if file_block < start + run.count {
                let skip = file_block - start;
                return (Some(run.lba.offset(skip)), run.count - skip);
            }
        }
        match self.map.range(file_block..).next() {
            Some((&next, _)) => (None, next - file_block),
            None => (None, u64::MAX),
        }
    }

    /// Unmaps file blocks `start..end` and returns the runs that were freed.
    pub fn remove(&mut self, start: u64, end: u64) -> Vec<Run> {
        let mut freed = Vec::new();
        if start >= end {
            return freed;
        }
        // An extent starting before `start` that reaches into the range.
        if let Some((&f, &run)) = self.map.range(..start).next_back() {
            if f + run.count > start {
                let keep = start - f;
                self.map.insert(
                    f,
                    Run {
                        lba: run.lba,
                        count: keep,
                    },
                );
                let cut_end = (f + run.count).min(end);
                freed.push(Run {
                    lba: run.lba.offset(keep),
                    count: cut_end - start,
                });
                if f + run.count > end {
                    let tail = f + run.count - end;
                    self.map.insert(
                        end,
                        Run {
                            lba: run.lba.offset(end - f),
                            count: tail,
                        },
                    );
                }
            }
        }
        let inside: Vec<u64> = self.map.range(start..end).map(|(&f, _)| f).collect();
        for f in inside {
            let Some(run) = self.map.remove(&f) else {
                continue;
            };
            let cut = (end - f).min(run.count);
            freed.push(Run {
                lba: run.lba,
                count: cut,
            });
            if cut < run.count {
                self.map.insert(
                    end,
                    Run {
                        lba: run.lba.offset(cut),
                        count: run.count - cut,
                    },
                );
            }
        }
        freed
    }

    /// Maps file blocks `file_block..+count` to `lba..+count` and returns the runs it
    /// replaced. Merges with a neighbour continuing both the file and the device run in the
    /// same zone (`zone_lbas` is the zone size).
    pub fn insert(&mut self, file_block: u64, lba: Lba, count: u64, zone_lbas: u64) -> Vec<Run> {
        let freed = self.remove(file_block, file_block + count);
        let mut start = file_block;
        let mut run = Run { lba, count };
        let zone = |l: Lba| l.get() / zone_lbas;
        if let Some((&f, &prev)) = self.map.range(..file_block).next_back() {
            if f + prev.count == file_block
                && prev.lba.offset(prev.count) == lba
                && zone(prev.lba) == zone(lba)
            {
                start = f;
                run = Run {
                    lba: prev.lba,
                    count: prev.count + count,
                };
            }
        }
        let end = file_block + count;
        if let Some(&next) = self.map.get(&end) {
            if run.lba.offset(run.count) == next.lba && zone(next.lba) == zone(run.lba) {
                self.map.remove(&end);
                run.count += next.count;
            }
        }
        self.map.insert(start, run);
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overwriting the middle of an extent splits it and frees exactly the overwritten part.
    #[test]
    fn insert_splits_and_frees() {
        let mut m = ExtentMap::default();
        assert!(m.insert(0, Lba(100), 10, 1 << 20).is_empty());
        let freed = m.insert(3, Lba(500), 2, 1 << 20);
        assert_eq!(
            freed,
            [Run {
                lba: Lba(103),
                count: 2
            }]
        );
        assert_eq!(m.lookup(2), (Some(Lba(102)), 1));
        assert_eq!(m.lookup(3), (Some(Lba(500)), 2));
        assert_eq!(m.lookup(5), (Some(Lba(105)), 5));
        assert_eq!(m.blocks(), 10);
        assert_eq!(m.lookup(10), (None, u64::MAX));
    }

    /// Adjacent runs merge only within a zone; truncation frees the tail.
    #[test]
    fn merge_and_truncate() {
        let mut m = ExtentMap::default();
        m.insert(0, Lba(10), 2, 16);
        m.insert(2, Lba(12), 2, 16);
        assert_eq!(m.iter().count(), 1);
        m.insert(4, Lba(16), 2, 16);
        assert_eq!(
            m.iter().count(),
            2,
            "no merge across the zone boundary at 16"
        );
        let freed = m.remove(1, u64::MAX);
        assert_eq!(
            freed,
            [
                Run {
                    lba: Lba(11),
                    count: 3
                },
                Run {
                    lba: Lba(16),
                    count: 2
                }
            ]
        );
        assert_eq!(m.blocks(), 1);
        m.insert(8, Lba(40), 1, 16);
        assert_eq!(m.lookup(3), (None, 5));
    }
}
