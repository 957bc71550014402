//! The DMA-like window on a command's host memory.
//!
//! The runner hands the controller one [`Dma`] per command: in-process it is the host's buffer
//! itself ([`SliceDma`]), over a serial link the bytes of a frame. The controller never owns a
//! transport.

/// A transfer fell outside the host memory the command provided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DmaError {
    /// Offset of the transfer in the command's host memory.
    pub offset: usize,
    /// Bytes it moved.
    pub len: usize,
    /// Bytes of host memory the command provided.
    pub host_len: usize,
}

impl core::fmt::Display for DmaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "a transfer of {} bytes at offset {} passes the command's {} bytes of host memory",
            self.len, self.offset, self.host_len
        )
    }
}

impl core::error::Error for DmaError {}

/// A command's host memory, as the controller sees it.
pub trait Dma {
    /// Bytes of host memory the command provided.
    fn host_len(&self) -> usize;

    /// Copies host memory at `offset` into `dst` (host to device).
    fn read_from_host(&mut self, offset: usize, dst: &mut [u8]) -> Result<(), DmaError>;

    /// Copies `src` into host memory at `offset` (device to host).
    fn write_to_host(&mut self, offset: usize, src: &[u8]) -> Result<(), DmaError>;

    /// The host memory itself, when the device can address it directly (in-process), so data
    /// moves without a bounce buffer. `None` over a link.
    fn host_memory(&mut self) -> Option<&mut [u8]> {
        None
    }
}

/// Host memory the device addresses directly: a slice of the host's own buffer.
#[derive(Debug)]
pub struct SliceDma<'a> {
    memory: &'a mut [u8],
}

impl<'a> SliceDma<'a> {
    /// A window on `memory`.
    pub fn new(memory: &'a mut [u8]) -> Self {
        SliceDma { memory }
    }

    fn range(&self, offset: usize, len: usize) -> Result<core::ops::Range<usize>, DmaError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.memory.len() => Ok(offset..end),
            _ => Err(DmaError {
                offset,
                len,
                host_len: self.memory.len(),
            }),
        }
    }
}

impl Dma for SliceDma<'_> {
    fn host_len(&self) -> usize {
        self.memory.len()
    }

    fn read_from_host(&mut self, offset: usize, dst: &mut [u8]) -> Result<(), DmaError> {
        let range = self.range(offset, dst.len())?;
        dst.copy_from_slice(&self.memory[range]);
        Ok(())
    }

    fn write_to_host(&mut self, offset: usize, src: &[u8]) -> Result<(), DmaError> {
        let range = self.range(offset, src.len())?;
        self.memory[range].copy_from_slice(src);
        Ok(())
    }

    fn host_memory(&mut self) -> Option<&mut [u8]> {
        Some(self.memory)
    }
}

/// Host memory that starts with a command's parameter data, followed by the window `rest` (an
/// Execute Program's offset and length before its input, see
/// `common::nvme::cp::EXECUTE_PARAMETER_BYTES`), without copying `rest`. Writes may only
/// land in `rest`.
pub struct ParameterDma<'a> {
    parameters: &'a [u8],
    rest: &'a mut dyn Dma,
}

impl core::fmt::Debug for ParameterDma<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ParameterDma")
            .field("parameters", &self.parameters.len())
            .field("rest", &self.rest.host_len())
            .finish()
    }
}

impl<'a> ParameterDma<'a> {
    /// `parameters`, then `rest`.
    pub fn new(parameters: &'a [u8], rest: &'a mut dyn Dma) -> Self {
        ParameterDma { parameters, rest }
    }

    fn error(&self, offset: usize, len: usize) -> DmaError {
        DmaError {
            offset,
            len,
            host_len: self.host_len(),
        }
    }
}

impl Dma for ParameterDma<'_> {
    fn host_len(&self) -> usize {
        self.parameters.len() + self.rest.host_len()
    }

    fn read_from_host(&mut self, offset: usize, dst: &mut [u8]) -> Result<(), DmaError> {
        let p = self.parameters.len();
        let head = p.saturating_sub(offset).min(dst.len());
        if head > 0 {
            dst[..head].copy_from_slice(&self.parameters[offset..offset + head]);
        }
        if head == dst.len() {
            return Ok(());
        }
        let at = (offset + head) - p;
        self.rest
            .read_from_host(at, &mut dst[head..])
            .map_err(|_| self.error(offset, dst.len()))
    }

    fn write_to_host(&mut self, offset: usize, src: &[u8]) -> Result<(), DmaError> {
        let p = self.parameters.len();
        if offset < p {
            return Err(self.error(offset, src.len()));
        }
        self.rest
            .write_to_host(offset - p, src)
            .map_err(|_| self.error(offset, src.len()))
    }
}
