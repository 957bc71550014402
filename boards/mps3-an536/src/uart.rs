//! A driver for the Arm CMSDK APB UART (UART0 of the MPS3 AN536), polled, no interrupts.
//!
//! QEMU's model (hw/char/cmsdk-apb-uart.c) has a one-byte buffer each way: a byte is taken from
//! the chardev only when the receive buffer is empty, so a host talking through a socket never
//! loses a byte however slowly the firmware reads. The baud divisor only matters to real
//! hardware; it is set to the smallest valid value.

use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering};

/// Base address of UART0 on the AN536.
const UART0_BASE: usize = 0xE7C0_0000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_ENABLE: u32 = 1 << 0;
const CTRL_RX_ENABLE: u32 = 1 << 1;
const MIN_BAUDDIV: u32 = 16;

static UART0_TAKEN: AtomicBool = AtomicBool::new(false);

/// UART0, enabled for both directions. At most one exists (see [`Uart::take_uart0`]).
#[derive(Debug)]
pub struct Uart {
    base: usize,
}

impl Uart {
    /// UART0, enabled; `None` if it was taken before.
    pub fn take_uart0() -> Option<Self> {
        if UART0_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        let uart = Uart { base: UART0_BASE };
        uart.write_reg(BAUDDIV, MIN_BAUDDIV);
        uart.write_reg(CTRL, CTRL_TX_ENABLE | CTRL_RX_ENABLE);
        Some(uart)
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base + offset` is one of the UART's 32-bit registers (offsets are the consts
        // above), device memory mapped by the AN536 at a fixed address, and only this `Uart`
        // (a singleton, see `take_uart0`) accesses it.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`: a register of the UART this singleton owns.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// The next received byte, if one is waiting.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        if self.read_reg(STATE) & STATE_RX_FULL == 0 {
            return None;
        }
        Some(self.read_reg(DATA) as u8)
    }

    /// Waits for the next received byte.
    pub fn read_byte(&mut self) -> u8 {
        loop {
            if let Some(b) = self.try_read_byte() {
                return b;
            }
            core::hint::spin_loop();
        }
    }

    /// Sends `byte`, waiting for room first.
    pub fn write_byte(&mut self, byte: u8) {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {
            core::hint::spin_loop();
        }
        self.write_reg(DATA, u32::from(byte));
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Uart {
    /// Waits for at least one byte, then takes what is waiting, up to `buf.len()`.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        *first = self.read_byte();
        let mut n = 1;
        for slot in rest {
            match self.try_read_byte() {
                Some(b) => *slot = b,
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.read_reg(STATE) & STATE_RX_FULL != 0)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    /// Waits until the last byte has left the transmit buffer.
    fn flush(&mut self) -> Result<(), Infallible> {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {
            core::hint::spin_loop();
        }
        Ok(())
    }
}
