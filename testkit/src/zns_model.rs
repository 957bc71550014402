//! The zone manager's test kit: a small geometry with small limits, page contents by seed,
//! reboots over the same NAND, and a plain reference model of NVMe ZNS semantics (a zone table
//! and a map of written LBAs). The firmware's zone tests (`firmware/tests/zns/`) and the
//! `zns_model` fuzz target compare the zone manager against the same model.

use std::collections::BTreeMap;

use common::zns::{ReportFilter, ZoneAction, ZoneDescriptor, ZoneState, ZoneType};
use common::Status;
use firmware::nand::sim::SimNand;
use firmware::nand::Geometry;
use firmware::zns::{ZoneConfig, ZoneManager};

use crate::rng::pattern;

/// 1 channel x 2 dies x 16 blocks x 8 pages of 4096 + 64 bytes.
pub const GEOMETRY: Geometry = Geometry {
    channels: 1,
    dies_per_channel: 2,
    blocks_per_die: 16,
    pages_per_block: 8,
    page_bytes: 4096,
    spare_bytes: 64,
};

pub type Manager = ZoneManager<SimNand>;

/// Two blocks per zone (16 pages), capacity 12 of a 16-LBA zone, small limits.
pub fn config() -> ZoneConfig {
    ZoneConfig {
        zone_cap_lbas: Some(12),
        max_open: 3,
        max_active: 4,
        zasl_lbas: 4,
        mdts_lbas: 8,
        ..ZoneConfig::for_geometry(&GEOMETRY)
    }
}

/// A freshly formatted manager over an erased emulator.
pub fn formatted(config: ZoneConfig) -> Manager {
    ZoneManager::format(SimNand::new(GEOMETRY), config)
        .unwrap_or_else(|e| panic!("the zone manager does not format: {e}"))
}

/// Power-cycles: takes the media out, wraps it in a new emulator and mounts it.
pub fn reboot(m: Manager, config: ZoneConfig) -> Manager {
    let store = m.into_nand().into_store();
    ZoneManager::mount(SimNand::with_store(store), config)
        .unwrap_or_else(|e| panic!("the zone manager does not mount again: {e}"))
}

/// The 4096-byte content written for `seed` (distinct seeds give distinct pages).
pub fn page(seed: u32) -> Vec<u8> {
    pattern(u64::from(seed), GEOMETRY.page_bytes as usize)
}

/// The pages of `seeds`, concatenated.
pub fn pages(seeds: &[u32]) -> Vec<u8> {
    seeds.iter().flat_map(|&s| page(s)).collect()
}

/// One zone of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MZone {
    pub state: ZoneState,
    pub written: u64,
    pub opened_at: u64,
}

/// The reference model: what a ZNS device must answer, with no NAND behind it.
#[derive(Clone, Debug)]
pub struct Model {
    pub zones: Vec<MZone>,
    /// Written LBAs and the seed of their content.
    pub data: BTreeMap<u64, u32>,
    pub size: u64,
    pub cap: u64,
    pub max_open: u32,
    pub max_active: u32,
    pub zasl: u64,
    pub mdts: u64,
    clock: u64,
}

impl Model {
    pub fn new(nr_zones: u32, size: u64, config: &ZoneConfig) -> Self {
        let zone = MZone {
            state: ZoneState::Empty,
            written: 0,
            opened_at: 0,
        };
        Model {
            zones: vec![zone; nr_zones as usize],
            data: BTreeMap::new(),
            size,
            cap: config
                .zone_cap_lbas
                .expect("the model needs the zone capacity set in the config"),
            max_open: config.max_open,
            max_active: config.max_active,
            zasl: u64::from(config.zasl_lbas),
            mdts: u64::from(config.mdts_lbas),
            clock: 0,
        }
    }

    pub fn nsze(&self) -> u64 {
        self.zones.len() as u64 * self.size
    }

    fn open_count(&self) -> u32 {
        let open = |s| matches!(s, ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened);
        self.zones.iter().filter(|z| open(z.state)).count() as u32
    }

    fn active_count(&self) -> u32 {
        let active = |s| {
            matches!(
                s,
                ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened | ZoneState::Closed
            )
        };
        self.zones.iter().filter(|z| active(z.state)).count() as u32
    }

    fn open(&mut self, z: usize, explicit: bool) -> Result<(), Status> {
        let st = self.zones[z].state;
        match st {
            ZoneState::Empty | ZoneState::Closed => {
                if self.open_count() == self.max_open {
                    let oldest = (0..self.zones.len())
                        .filter(|&i| self.zones[i].state == ZoneState::ImplicitlyOpened)
                        .min_by_key(|&i| self.zones[i].opened_at);
                    if let Some(i) = oldest {
                        self.zones[i].state = ZoneState::Closed;
                    }
                }
                let act = u32::from(st == ZoneState::Empty);
                if self.active_count() + act > self.max_active {
                    return Err(Status::TooManyActiveZones);
                }
                if self.open_count() + 1 > self.max_open {
                    return Err(Status::TooManyOpenZones);
                }
                self.clock += 1;
                self.zones[z].opened_at = self.clock;
                self.zones[z].state = if explicit {
                    ZoneState::ExplicitlyOpened
                } else {
                    ZoneState::ImplicitlyOpened
                };
                Ok(())
            }
            ZoneState::ImplicitlyOpened if explicit => {
                self.zones[z].state = ZoneState::ExplicitlyOpened;
                Ok(())
            }
            ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened => Ok(()),
            _ => Err(Status::InvalidZoneStateTransition),
        }
    }

    fn check(&self, slba: u64, nlb: u64) -> Result<(), Status> {
        if nlb == 0 || nlb > self.mdts {
            return Err(Status::InvalidField);
        }
        if slba + nlb > self.nsze() {
            return Err(Status::LbaOutOfRange);
        }
        Ok(())
    }

    /// Write (`append == false`) or Zone Append of `seeds`; returns the first LBA written.
    pub fn write(&mut self, slba: u64, seeds: &[u32], append: bool) -> Result<u64, Status> {
        let nlb = seeds.len() as u64;
        self.check(slba, nlb)?;
        let z = (slba / self.size) as usize;
        let off = slba % self.size;
        match self.zones[z].state {
            ZoneState::Full => return Err(Status::ZoneFull),
            ZoneState::ReadOnly => return Err(Status::ZoneReadOnly),
            ZoneState::Offline => return Err(Status::ZoneOffline),
            _ => {}
        }
        let start = if append {
            if off != 0 || nlb > self.zasl {
                return Err(Status::InvalidField);
            }
            self.zones[z].written
        } else if off != self.zones[z].written {
            return Err(Status::ZoneInvalidWrite);
        } else {
            off
        };
        if start + nlb > self.cap {
            return Err(Status::ZoneBoundaryError);
        }
        self.open(z, false)?;
        let zslba = z as u64 * self.size;
        for (k, &s) in seeds.iter().enumerate() {
            self.data.insert(zslba + start + k as u64, s);
        }
        self.zones[z].written = start + nlb;
        if self.zones[z].written == self.cap {
            self.zones[z].state = ZoneState::Full;
        }
        Ok(zslba + start)
    }

    /// Read: the seed of each LBA, `None` for zeros.
    pub fn read(&self, slba: u64, nlb: u64) -> Result<Vec<Option<u32>>, Status> {
        self.check(slba, nlb)?;
        let first = (slba / self.size) as usize;
        let last = ((slba + nlb - 1) / self.size) as usize;
        if (first..=last).any(|z| self.zones[z].state == ZoneState::Offline) {
            return Err(Status::ZoneOffline);
        }
        Ok((slba..slba + nlb)
            .map(|l| self.data.get(&l).copied())
            .collect())
    }

    fn release(&mut self, z: usize, state: ZoneState) {
        let zslba = z as u64 * self.size;
        self.data
            .retain(|&l, _| l < zslba || l >= zslba + self.size);
        self.zones[z].state = state;
        self.zones[z].written = 0;
    }

    fn act_one(&mut self, z: usize, action: ZoneAction) -> Result<(), Status> {
        use ZoneState as S;
        let st = self.zones[z].state;
        match (action, st) {
            (ZoneAction::Open, _) => return self.open(z, true),
            (ZoneAction::Close, S::ImplicitlyOpened | S::ExplicitlyOpened | S::Closed) => {
                self.zones[z].state = S::Closed
            }
            (ZoneAction::Finish, S::ReadOnly | S::Offline) => {
                return Err(Status::InvalidZoneStateTransition)
            }
            (ZoneAction::Finish, _) => self.zones[z].state = S::Full,
            (ZoneAction::Reset, S::ReadOnly | S::Offline) => {
                return Err(Status::InvalidZoneStateTransition)
            }
            (ZoneAction::Reset, _) => self.release(z, S::Empty),
            (ZoneAction::Offline, S::ReadOnly | S::Offline) => self.release(z, S::Offline),
            _ => return Err(Status::InvalidZoneStateTransition),
        }
        Ok(())
    }

    /// Zone Management Send.
    pub fn action(&mut self, slba: u64, action: ZoneAction, all: bool) -> Result<(), Status> {
        use ZoneState as S;
        if !all {
            if slba >= self.nsze() {
                return Err(Status::LbaOutOfRange);
            }
            if !slba.is_multiple_of(self.size) {
                return Err(Status::InvalidField);
            }
            return self.act_one((slba / self.size) as usize, action);
        }
        let selected = |s: S| match action {
            ZoneAction::Open => s == S::Closed,
            ZoneAction::Close => matches!(s, S::ImplicitlyOpened | S::ExplicitlyOpened),
            ZoneAction::Finish => {
                matches!(s, S::ImplicitlyOpened | S::ExplicitlyOpened | S::Closed)
            }
            ZoneAction::Reset => {
                matches!(
                    s,
                    S::ImplicitlyOpened | S::ExplicitlyOpened | S::Closed | S::Full
                )
            }
            ZoneAction::Offline => s == S::ReadOnly,
        };
        let list: Vec<usize> = (0..self.zones.len())
            .filter(|&z| selected(self.zones[z].state))
            .collect();
        for z in list {
            self.act_one(z, action)?;
        }
        Ok(())
    }

    pub fn descriptor(&self, z: usize) -> ZoneDescriptor {
        let zslba = z as u64 * self.size;
        let st = self.zones[z].state;
        let wp = match st {
            ZoneState::Full => zslba + self.cap,
            ZoneState::Offline => zslba,
            _ => zslba + self.zones[z].written,
        };
        ZoneDescriptor {
            zone_type: ZoneType::SequentialWriteRequired,
            state: st,
            attrs: 0,
            zcap: self.cap,
            zslba,
            wp,
        }
    }

    /// Zone Management Receive: (nr_zones, descriptors).
    pub fn report(
        &self,
        slba: u64,
        filter: ReportFilter,
        max: u32,
        partial: bool,
    ) -> Result<(u64, Vec<ZoneDescriptor>), Status> {
        if slba >= self.nsze() {
            return Err(Status::LbaOutOfRange);
        }
        let want = |s: ZoneState| match filter {
            ReportFilter::All => true,
            ReportFilter::Empty => s == ZoneState::Empty,
            ReportFilter::ImplicitlyOpened => s == ZoneState::ImplicitlyOpened,
            ReportFilter::ExplicitlyOpened => s == ZoneState::ExplicitlyOpened,
            ReportFilter::Closed => s == ZoneState::Closed,
            ReportFilter::Full => s == ZoneState::Full,
            ReportFilter::ReadOnly => s == ZoneState::ReadOnly,
            ReportFilter::Offline => s == ZoneState::Offline,
        };
        let matched: Vec<usize> = ((slba / self.size) as usize..self.zones.len())
            .filter(|&z| want(self.zones[z].state))
            .collect();
        let descs: Vec<_> = matched
            .iter()
            .take(max as usize)
            .map(|&z| self.descriptor(z))
            .collect();
        let n = if partial {
            descs.len() as u64
        } else {
            matched.len() as u64
        };
        Ok((n, descs))
    }

    /// A power cycle: open zones close; zones without data come back Empty.
    pub fn reboot(&mut self) {
        for z in &mut self.zones {
            if matches!(
                z.state,
                ZoneState::ImplicitlyOpened | ZoneState::ExplicitlyOpened | ZoneState::Closed
            ) {
                z.state = if z.written > 0 {
                    ZoneState::Closed
                } else {
                    ZoneState::Empty
                };
            }
        }
    }
}

/// Checks that every LBA of the device reads back as the model says.
pub fn assert_contents(m: &mut Manager, model: &Model) {
    let mut buf = vec![0u8; 4096];
    for lba in 0..model.nsze() {
        let z = (lba / model.size) as usize;
        if model.zones[z].state == ZoneState::Offline {
            continue;
        }
        m.read(lba, &mut buf)
            .unwrap_or_else(|e| panic!("LBA {lba} does not read: {e:?}"));
        match model.data.get(&lba) {
            Some(&s) => assert!(buf == page(s), "LBA {lba} differs from seed {s}"),
            None => assert!(buf.iter().all(|&b| b == 0), "LBA {lba} should read zeros"),
        }
    }
}
