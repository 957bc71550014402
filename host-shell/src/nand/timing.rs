//! The timing model: what the device's NAND operations would take on real hardware.
//!
//! [`Timed`] wraps any [`Nand`] and, without slowing anything down, accounts modeled time:
//! each die is busy for the array time of its operations (read, program, erase), each channel
//! for the page transfers over it, and the host link for the bytes a command moves. A command
//! starts when the previous one ended; its NAND operations queue on their own die and channel,
//! so pages striped across dies overlap as they would on a real controller. Figures for the
//! ZN540 preset follow NVMeVirt's model of that drive (Kim et al., FAST '23): 450 MB/s
//! channels, 3050 MB/s PCIe, 50 us reads, 561 us programs.

use firmware::nand::{BlockId, Geometry, Nand, PageAddr};

/// Latencies and bandwidths of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
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

    fn transfer_ns(bytes: u64, per_s: u64) -> u64 {
        if per_s == 0 {
            return 0;
        }
        (u128::from(bytes) * 1_000_000_000 / u128::from(per_s)) as u64
    }
}

/// A [`Nand`] that accounts modeled time for its operations. See the module docs.
#[derive(Debug)]
pub struct Timed<N> {
    inner: N,
    model: TimingModel,
    /// Modeled time the current command started at.
    command_start_ns: u64,
    /// Latest end of any operation of the current command.
    command_end_ns: u64,
    die_free_ns: Vec<u64>,
    channel_free_ns: Vec<u64>,
}

impl<N: Nand> Timed<N> {
    /// Wraps `inner`; modeled time starts at zero.
    pub fn new(inner: N, model: TimingModel) -> Self {
        let g = inner.geometry();
        Timed {
            inner,
            model,
            command_start_ns: 0,
            command_end_ns: 0,
            die_free_ns: vec![0; g.dies() as usize],
            channel_free_ns: vec![0; g.channels as usize],
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

    /// Starts a command at the end of the previous one.
    pub fn begin_command(&mut self) {
        self.command_start_ns = self.command_end_ns.max(self.command_start_ns);
        self.command_end_ns = self.command_start_ns;
    }

    /// Ends the current command, which moved `link_bytes` over the host link, and returns the
    /// modeled time since the device started, in nanoseconds.
    pub fn end_command(&mut self, link_bytes: u64) -> u64 {
        let link = TimingModel::transfer_ns(link_bytes, self.model.link_bytes_per_s);
        self.command_end_ns = self.command_end_ns.max(self.command_start_ns + link);
        self.command_start_ns = self.command_end_ns;
        self.command_end_ns
    }

    /// Modeled time so far, in nanoseconds.
    pub fn elapsed_ns(&self) -> u64 {
        self.command_end_ns
    }

    fn channel_of(&self, g: &Geometry, block: BlockId) -> usize {
        g.channel_of_die(g.die_of(block)) as usize
    }

    /// Die work of `array_ns`, with a transfer of `bytes` over the channel before (`transfer_first`)
    /// or after it.
    fn account(&mut self, block: BlockId, array_ns: u64, bytes: u64, transfer_first: bool) {
        let g = self.inner.geometry();
        let die = g.die_of(block) as usize;
        let channel = self.channel_of(&g, block);
        let xfer = TimingModel::transfer_ns(bytes, self.model.channel_bytes_per_s);
        let start = self.command_start_ns.max(self.die_free_ns[die]);
        let end = if transfer_first {
            let xfer_start = start.max(self.channel_free_ns[channel]);
            self.channel_free_ns[channel] = xfer_start + xfer;
            xfer_start + xfer + array_ns
        } else {
            let xfer_start = (start + array_ns).max(self.channel_free_ns[channel]);
            self.channel_free_ns[channel] = xfer_start + xfer;
            xfer_start + xfer
        };
        self.die_free_ns[die] = end;
        self.command_end_ns = self.command_end_ns.max(end);
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

#[cfg(test)]
mod tests {
    use firmware::nand::sim::SimNand;

    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            channels: 2,
            dies_per_channel: 2,
            blocks_per_die: 4,
            pages_per_block: 8,
            page_bytes: 4096,
            spare_bytes: 64,
        }
    }

    const MODEL: TimingModel = TimingModel {
        read_ns: 50_000,
        program_ns: 500_000,
        erase_ns: 3_000_000,
        channel_bytes_per_s: 0,
        link_bytes_per_s: 0,
    };

    /// Programs on four different dies overlap: one command takes one program time, not four.
    #[test]
    fn striped_programs_overlap_across_dies() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        let data = vec![0u8; 4096];
        let spare = vec![0u8; 64];
        nand.begin_command();
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
        assert_eq!(nand.end_command(0), 500_000);
    }

    /// Programs on the same die queue behind each other, across commands too.
    #[test]
    fn programs_on_one_die_serialize() {
        let g = geometry();
        let mut nand = Timed::new(SimNand::new(g), MODEL);
        let data = vec![0u8; 4096];
        let spare = vec![0u8; 64];
        for page in 0..3 {
            nand.begin_command();
            nand.program_page(
                PageAddr {
                    block: g.block(0, 0),
                    page,
                },
                &data,
                &spare,
            )
            .unwrap();
            nand.end_command(0);
        }
        assert_eq!(nand.elapsed_ns(), 1_500_000);
    }

    /// Channel transfers and the host link add their bandwidth time.
    #[test]
    fn transfers_cost_bandwidth_time() {
        let g = geometry();
        let model = TimingModel {
            channel_bytes_per_s: 4160 * 1000,
            link_bytes_per_s: 4096 * 1000,
            ..MODEL
        };
        let mut nand = Timed::new(SimNand::new(g), model);
        let (mut data, mut spare) = (vec![0u8; 4096], vec![0u8; 64]);
        nand.begin_command();
        nand.read_page(
            PageAddr {
                block: g.block(0, 0),
                page: 0,
            },
            &mut data,
            &mut spare,
        )
        .unwrap();
        // 50 us array + 1 ms channel transfer of 4160 bytes; the link's 1 ms overlaps.
        assert_eq!(nand.end_command(4096), 1_050_000);
    }
}
