//! A csd mount for the benchmarks: a fresh ZN540-shaped image in a temporary directory, the
//! device in this process (so its counters are readable), the file system served by a thread
//! of this process. Clients are other threads or processes doing ordinary syscalls.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use host_shell::{
    device::{create_image, inprocess::Stats, DeviceOptions, FileDevice},
    fuse::{self, Background, MountConfig},
    lfs::Lfs,
    nand::{image::Header, preset::Preset},
};
use tempfile::TempDir;

/// The preset every mount here uses.
pub const PRESET: Preset = Preset::Zn540;

/// A mounted csd file system.
#[derive(Debug)]
pub struct CsdMount {
    device: Arc<FileDevice>,
    background: Option<Background>,
    root: PathBuf,
    _dir: TempDir,
}

impl CsdMount {
    /// A fresh image with room for `data_bytes` of files (at least the preset's default 1 GiB,
    /// as the file system needs a few of its 32 MiB zones), the ZN540 timing model on, mounted
    /// as `csd mount` mounts by default.
    pub fn new(data_bytes: u64) -> Result<CsdMount> {
        let step = 32 << 20;
        let capacity = (data_bytes * 4)
            .next_multiple_of(step)
            .max(PRESET.default_capacity());
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let image = dir.path().join("device.img");
        let root = dir.path().join("mnt");
        std::fs::create_dir(&root).context("the mount point")?;
        let geometry = PRESET.geometry(capacity)?;
        let zones = firmware::zns::ZoneConfig::for_geometry(&geometry);
        create_image(
            &image,
            Header {
                geometry,
                zones,
                timing_preset: PRESET.id(),
            },
        )?;
        // The image records its preset, and the device follows it.
        let device = Arc::new(FileDevice::open(&image, DeviceOptions::default())?);
        Lfs::mkfs(&device.driver(), 0, 0)?;
        let counters = Arc::clone(&device);
        let link = Box::new(move || Some(counters.stats()));
        let mounted = fuse::mount(&device.driver(), &root, &MountConfig::default(), link)?;
        let background = Background::serve(mounted)?;
        Ok(CsdMount {
            device,
            background: Some(background),
            root,
            _dir: dir,
        })
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The device's counters so far.
    pub fn stats(&self) -> Stats {
        self.device.stats()
    }

    /// Unmounts (the file system checkpoints) and powers the device off.
    pub fn finish(mut self) -> Result<()> {
        if let Some(background) = self.background.take() {
            background
                .finish()
                .context("the mount did not end cleanly")?;
        }
        let device = Arc::try_unwrap(self.device)
            .map_err(|_| anyhow::anyhow!("the device is still shared after the unmount"))?;
        device.close().context("the device did not close cleanly")?;
        Ok(())
    }
}
