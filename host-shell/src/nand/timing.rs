//! The timing model: what the device's NAND operations would take on real hardware.
//!
//! [`Timed`] wraps any [`Nand`] and, without slowing anything down, accounts modeled time:
//! each die is busy for the array time of its operations (read, program, erase), each channel
//! for the page transfers over it. Each keeps its recent busy intervals ([`Timeline`]), so an
//! operation given at an earlier modeled time than work already booked (a kernel whose modeled
//! time runs behind another's) still finds the idle gaps before that work. Whoever issues operations (a command, a kernel's slice) says
//! when they start ([`Timed::start_at`], a time the device's clock chooses, see
//! `device::clock`) and learns when the last of them ends ([`Timed::finished_ns`]); they queue
//! on their own die and channel, so pages striped across dies overlap as they would on a real
//! controller, and work of concurrent commands and kernels contends for the same dies. Figures for the
//! ZN540 preset follow NVMeVirt's model of that drive (Kim et al., FAST '23): 450 MB/s
//! channels, 3050 MB/s PCIe, 50 us reads, 561 us programs.

use firmware::nand::{BlockId, Geometry, Nand, PageAddr};

/// Latencies and bandwidths of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingModel {
    /// Array time of a page read, in nanoseconds.
    pub read_ns: u64,
    /// Array time of a page program, in nanoseconds.
    pub program_ns: u64,
    /// Array time of a block erase, in nanoseconds.
    pub erase_ns: u64,
    /// Bytes per second over one channel.
    pub channel_bytes_per_s: u64,
    /// Bytes per second over the host link.
    pub link_bytes_per_s: u64,
}

impl TimingModel {
    /// No modeled time at all (timing off).
    pub const OFF: TimingModel = TimingModel {
        read_ns: 0,
        program_ns: 0,
        erase_ns: 0,
        channel_bytes_per_s: 0,
        link_bytes_per_s: 0,
    };

    /// The WD ZN540 as NVMeVirt models it.
    pub const ZN540: TimingModel = TimingModel {
        read_ns: 50_000,
        program_ns: 561_000,
        erase_ns: 3_000_000,
        channel_bytes_per_s: 450_000_000,
        link_bytes_per_s: 3_050_000_000,
    };

    /// Nanoseconds to move `bytes` at `per_s` bytes per second (0 when `per_s` is 0: untimed).
    pub fn transfer_ns(bytes: u64, per_s: u64) -> u64 {
        if per_s == 0 {
            return 0;
        }
        (u128::from(bytes) * 1_000_000_000 / u128::from(per_s)) as u64
    }
}

/// Busy intervals of one die or channel: recent ones, sorted and disjoint.
#[derive(Debug, Clone, Default)]
struct Timeline {
    busy: std::collections::VecDeque<(u64, u64)>,
}

/// Intervals a [`Timeline`] keeps; older ones are forgotten (work given before them finds the
/// resource free).
const KEPT_INTERVALS: usize = 256;

impl Timeline {
    /// Books `len` nanoseconds at the earliest time from `at` on when the resource is free;
    /// returns when the booking starts.
    fn book(&mut self, at: u64, len: u64) -> u64 {
        let mut start = at;
        // The first interval that ends after `at` (ends are sorted): a search from the back,
        // as new work mostly comes after what is booked already.
        let mut i = self.busy.len();
        while i > 0 && self.busy[i - 1].1 > at {
            i -= 1;
        }
        while let Some(&(s, e)) = self.busy.get(i) {
            if start + len <= s {
                break;
            }
            start = start.max(e);
            i += 1;
        }
        if len > 0 {
            self.busy.insert(i, (start, start + len));
            if self.busy.len() > KEPT_INTERVALS {
                self.busy.pop_front();
            }
        }
        start
    }

    /// When the last booking ends.
    fn until(&self) -> u64 {
        self.busy.back().map_or(0, |&(_, end)| end)
    }
}

/// A [`Nand`] that accounts modeled time for its operations. See the module docs.
#[derive(Debug)]
pub struct Timed<N> {
    inner: N,
    model: TimingModel,
    /// Modeled time the current operations start at.
    start_ns: u64,
    /// Latest end of any operation since `start_ns` was set.
    end_ns: u64,
    dies: Vec<Timeline>,
    channels: Vec<Timeline>,
}

impl<N: Nand> Timed<N> {
    /// Wraps `inner`; modeled time starts at zero.
    pub fn new(inner: N, model: TimingModel) -> Self {
        let g = inner.geometry();
        Timed {
            inner,
            model,
            start_ns: 0,
            end_ns: 0,
            dies: vec![Timeline::default(); g.dies() as usize],
            channels: vec![Timeline::default(); g.channels as usize],
        }
    }

    /// The wrapped NAND.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// The wrapped NAND, mutably.
    pub fn inner_mut(&mut self) -> &mut N {
        &mut self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> N {
        self.inner
    }

    /// Operations from now on start no earlier than `ns` (modeled time since power-on).
    pub fn start_at(&mut self, ns: u64) {
        self.start_ns = ns;
        self.end_ns = ns;
    }

    /// When every die and channel is done with the work given so far.
    pub fn busy_until_ns(&self) -> u64 {
        let until = |t: &[Timeline]| t.iter().map(Timeline::until).max().unwrap_or(0);
        until(&self.dies).max(until(&self.channels))
    }

    /// When the last operation since [`Timed::start_at`] ends (its start if there was none).
    pub fn finished_ns(&self) -> u64 {
        self.end_ns
    }

    fn channel_of(&self, g: &Geometry, block: BlockId) -> usize {
        g.channel_of_die(g.die_of(block)) as usize
    }

    /// Die work of `array_ns`, with a transfer of `bytes` over the channel before (`transfer_first`,
    /// a program) or after it (a read). (A read's die is booked for its array time and the
    /// transfer together, even when the channel takes the data later.)
    fn account(&mut self, block: BlockId, array_ns: u64, bytes: u64, transfer_first: bool) {
        let g = self.inner.geometry();
        let die = g.die_of(block) as usize;
        let channel = self.channel_of(&g, block);
        let xfer = TimingModel::transfer_ns(bytes, self.model.channel_bytes_per_s);
        let end = if transfer_first {
            let sent = self.channels[channel].book(self.start_ns, xfer) + xfer;
            self.dies[die].book(sent, array_ns) + array_ns
        } else {
            let read = self.dies[die].book(self.start_ns, array_ns + xfer) + array_ns;
            self.channels[channel].book(read, xfer) + xfer
        };
        self.end_ns = self.end_ns.max(end);
    }
}

impl<N: Nand> Nand for Timed<N> {
    type Error = N::Error;

    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn read_page(
        &mut self,
        addr: PageAddr,
        data: &mut [u8],
        spare: &mut [u8],
    ) -> Result<(), Self::Error> {
        let result = self.inner.read_page(addr, data, spare);
        let bytes = (data.len() + spare.len()) as u64;
        self.account(addr.block, self.model.read_ns, bytes, false);
        result
    }

    fn program_page(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        spare: &[u8],
    ) -> Result<(), Self::Error> {
        let result = self.inner.program_page(addr, data, spare);
        let bytes = (data.len() + spare.len()) as u64;
        self.account(addr.block, self.model.program_ns, bytes, true);
        result
    }

    fn erase_block(&mut self, block: BlockId) -> Result<(), Self::Error> {
        let result = self.inner.erase_block(block);
        self.account(block, self.model.erase_ns, 0, true);
        result
    }
    fn volatile_cache(&self) -> bool {
        self.inner.volatile_cache()
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

/// A small NAND and its model, for the timing tests here and in `device::clock`.
#[cfg(test)]
pub(crate) mod fixtures {
    use firmware::nand::Geometry;

    use super::TimingModel;

    /// 2 channels x 2 dies, 4 blocks of 8 pages each.
    pub fn geometry() -> Geometry {
        Geometry {
            channels: 2,
            dies_per_channel: 2,
            blocks_per_die: 4,
            pages_per_block: 8,
            page_bytes: 4096,
            spare_bytes: 64,
        }
    }

    /// 50 us reads, 500 us programs, 3 ms erases; transfers untimed.
    pub const MODEL: TimingModel = TimingModel {
        read_ns: 50_000,
        program_ns: 500_000,
        erase_ns: 3_000_000,
        channel_bytes_per_s: 0,
        link_bytes_per_s: 0,
    };
}

#[cfg(test)]
mod tests {
    use firmware::nand::sim::SimNand;

    use super::fixtures::{geometry, MODEL};
    use super::*;

    /// Programs on four different dies overlap: one command takes one program time, not four.
    #[test]
    fn striped_programs_overlap_across_dies() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        let data = vec![0u8; 4096];
        let spare = vec![0u8; 64];
        nand.start_at(0);
        for die in 0..4 {
            nand.program_page(
                PageAddr {
                    block: g.block(die, 0),
                    page: 0,
                },
                &data,
                &spare,
            )
            .unwrap();
        }
        assert_eq!(nand.finished_ns(), 500_000);
    }

    /// Programs on the same die queue behind each other, across commands too (each starting
    /// at time 0 here: the die, not the start, orders them).
    #[test]
    fn programs_on_one_die_serialize() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        let data = vec![0u8; 4096];
        let spare = vec![0u8; 64];
        for page in 0..3 {
            nand.start_at(0);
            nand.program_page(
                PageAddr {
                    block: g.block(0, 0),
                    page,
                },
                &data,
                &spare,
            )
            .unwrap();
        }
        assert_eq!(nand.finished_ns(), 1_500_000);
    }

    /// Work given at an earlier modeled time than work already booked on its die uses the
    /// idle time before it; work that does not fit there goes after.
    #[test]
    fn earlier_work_fills_the_gaps() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        let (data, spare) = (vec![0u8; 4096], vec![0u8; 64]);
        let (mut out, mut out_spare) = (vec![0u8; 4096], vec![0u8; 64]);
        let addr = |page| PageAddr {
            block: g.block(0, 0),
            page,
        };
        // A program at 10 ms: the die is busy 10-10.5 ms.
        nand.start_at(10_000_000);
        nand.program_page(addr(0), &data, &spare).unwrap();
        assert_eq!(nand.finished_ns(), 10_500_000);
        // A read at 0 fits before it.
        nand.start_at(0);
        nand.read_page(addr(0), &mut out, &mut out_spare).unwrap();
        assert_eq!(nand.finished_ns(), 50_000);
        // A program at 9.8 ms does not fit before 10 ms: it follows the first.
        nand.start_at(9_800_000);
        nand.program_page(addr(1), &data, &spare).unwrap();
        assert_eq!(nand.finished_ns(), 11_000_000);
        assert_eq!(nand.busy_until_ns(), 11_000_000);
    }

    /// Channel transfers add their bandwidth time after a read's array time.
    #[test]
    fn transfers_cost_bandwidth_time() {
        let g = geometry();
        let model = TimingModel {
            channel_bytes_per_s: 4160 * 1000,
            ..MODEL
        };
        let mut nand = Timed::new(SimNand::new(g), model);
        let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
        nand.start_at(1_000);
        nand.read_page(
            PageAddr {
                block: g.block(0, 0),
                page: 0,
            },
            &mut data,
            &mut spare,
        )
        .unwrap();
        // From 1 us: 50 us array + 1 ms channel transfer of 4160 bytes.
        assert_eq!(nand.finished_ns(), 1_051_000);
    }
}
