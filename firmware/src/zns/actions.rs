//! Zone Management Send: Open, Close, Finish, Reset and Offline, one zone or select-all.
//!
//! Select-all follows the specification: Open takes the Closed zones, Close the open ones,
//! Finish the open and Closed ones, Reset the open, Closed and Full ones, Offline the Read
//! Only ones, in zone order. Open and Close only change RAM (a power cycle closes every zone
//! anyway); Finish, Reset and Offline write one checkpoint for all the zones they change,
//! before changing them, so a power cut leaves either all or none of them done.

use alloc::vec::Vec;

use common::zns::{ZoneAction, ZoneState};
use common::Status;

use crate::nand::Nand;

use super::checkpoint::{ZoneCond, ZoneMeta};
use super::manager::ZoneManager;
use super::state::Zones;

impl<N: Nand> ZoneManager<N> {
    /// Zone Management Send: applies `action` to the zone starting at `slba`, or with
    /// `select_all` to every zone the specification selects for it (then `slba` is ignored).
    pub fn zone_action(
        &mut self,
        slba: u64,
        action: ZoneAction,
        select_all: bool,
    ) -> Result<(), Status> {
        self.writable()?;
        if select_all {
            return self.action_all(action);
        }
        if slba >= self.layout.nsze() {
            return Err(Status::LbaOutOfRange);
        }
        let (zi, off) = self.layout.split(slba);
        if off != 0 {
            return Err(Status::InvalidField);
        }
        let z = zi as usize;
        match action {
            ZoneAction::Open => self.zones.open(z, true),
            ZoneAction::Close => self.zones.close(z),
            ZoneAction::Finish if self.zones.finish_needed(z)? => self.finish(&[z]),
            ZoneAction::Reset if self.zones.reset_needed(z)? => self.reset(&[z]),
            ZoneAction::Offline if self.zones.offline_needed(z)? => self.offline(&[z]),
            _ => Ok(()),
        }
    }

    fn action_all(&mut self, action: ZoneAction) -> Result<(), Status> {
        let select = |pred: fn(ZoneState) -> bool, zones: &Zones| -> Vec<usize> {
            (0..zones.zones.len())
                .filter(|&i| pred(zones.zones[i].state))
                .collect()
        };
        use ZoneState as S;
        match action {
            ZoneAction::Open => {
                for z in select(|s| s == S::Closed, &self.zones) {
                    self.zones.open(z, true)?;
                }
                Ok(())
            }
            ZoneAction::Close => {
                for z in select(
                    |s| matches!(s, S::ImplicitlyOpened | S::ExplicitlyOpened),
                    &self.zones,
                ) {
                    self.zones.close(z)?;
                }
                Ok(())
            }
            ZoneAction::Finish => {
                let list = select(
                    |s| matches!(s, S::ImplicitlyOpened | S::ExplicitlyOpened | S::Closed),
                    &self.zones,
                );
                self.finish(&list)
            }
            ZoneAction::Reset => {
                let list = select(
                    |s| {
                        matches!(
                            s,
                            S::ImplicitlyOpened | S::ExplicitlyOpened | S::Closed | S::Full
                        )
                    },
                    &self.zones,
                );
                self.reset(&list)
            }
            ZoneAction::Offline => self.offline(&select(|s| s == S::ReadOnly, &self.zones)),
        }
    }

    fn finish(&mut self, list: &[usize]) -> Result<(), Status> {
        self.set_cond(list, ZoneCond::Finished)?;
        for &i in list {
            self.zones.zones[i].state = ZoneState::Full;
        }
        Ok(())
    }

    /// Records `cond` for every zone of `list` in one checkpoint, then in the zone table
    /// (an empty list writes nothing).
    fn set_cond(&mut self, list: &[usize], cond: ZoneCond) -> Result<(), Status> {
        if list.is_empty() {
            return Ok(());
        }
        let changes: Vec<_> = list
            .iter()
            .map(|&i| {
                (
                    i,
                    ZoneMeta {
                        cond,
                        ..self.zones.zones[i].meta
                    },
                )
            })
            .collect();
        self.persist(&changes)?;
        for &(i, meta) in &changes {
            self.zones.zones[i].meta = meta;
        }
        Ok(())
    }

    fn reset(&mut self, list: &[usize]) -> Result<(), Status> {
        let mut changes = Vec::new();
        for &i in list {
            let z = &self.zones.zones[i];
            if z.written > 0
                || z.meta.cond != ZoneCond::Normal
                || z.slots.iter().any(Option::is_some)
            {
                changes.push((
                    i,
                    ZoneMeta {
                        gen: z.meta.gen.wrapping_add(1),
                        cond: ZoneCond::Normal,
                    },
                ));
            }
        }
        if !changes.is_empty() {
            self.persist(&changes)?;
        }
        for (i, m) in changes {
            self.zones.zones[i].meta = m;
        }
        for &i in list {
            self.release(i, ZoneState::Empty);
        }
        Ok(())
    }

    fn offline(&mut self, list: &[usize]) -> Result<(), Status> {
        self.set_cond(list, ZoneCond::Offline)?;
        for &i in list {
            self.release(i, ZoneState::Offline);
        }
        Ok(())
    }

    /// Frees zone `i`'s blocks and leaves it in `state` with nothing written.
    fn release(&mut self, i: usize, state: ZoneState) {
        let z = &mut self.zones.zones[i];
        for block in z.slots.iter_mut().filter_map(Option::take) {
            self.in_use[block.0 as usize] = false;
        }
        z.state = state;
        z.written = 0;
        z.finished_by_controller = false;
    }
}
