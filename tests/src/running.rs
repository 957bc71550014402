//! A device `csd device start` keeps running, for tests: [`RunningDevice`] and the walk through
//! zone states that the in-process device and the board in QEMU both pass.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use crate::{csd, csd_fails, csd_json, csd_ok};

/// A device `csd device start` keeps running over an image, for a test: stopped (or, if it will
/// not stop, killed) when dropped, so that a failing test leaves no daemon behind.
#[derive(Debug)]
pub struct RunningDevice {
    image: PathBuf,
    /// The daemon's pid.
    pub pid: u32,
}

impl RunningDevice {
    /// `csd [global] device start IMAGE --json`; panics if it fails.
    pub fn start(global: &[&str], image: &Path) -> RunningDevice {
        RunningDevice::launch(global, image, &[])
    }

    /// `csd device start IMAGE ARGS --json`; panics if it fails.
    pub fn start_with(image: &Path, args: &[&str]) -> RunningDevice {
        RunningDevice::launch(&[], image, args)
    }

    /// `csd GLOBAL device start IMAGE ARGS --json`.
    fn launch(global: &[&str], image: &Path, args: &[&str]) -> RunningDevice {
        let mut argv: Vec<OsString> = global.iter().map(OsString::from).collect();
        argv.extend(["device".into(), "start".into(), image.into()]);
        argv.extend(args.iter().map(OsString::from));
        argv.push("--json".into());
        let json = csd_json(&argv);
        let pid = json["pid"].as_u64().expect("device start reports its pid") as u32;
        RunningDevice {
            image: image.to_path_buf(),
            pid,
        }
    }

    /// `csd device stop IMAGE`: its output if it stopped, or why not.
    pub fn stop(&mut self) -> Result<String, String> {
        let out = csd(["device".as_ref(), "stop".as_ref(), self.image.as_os_str()]);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.success() {
            self.pid = 0;
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }
}

impl Drop for RunningDevice {
    fn drop(&mut self) {
        if self.pid != 0 && self.stop().is_err() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// Each zone's state, from `csd zone report --json`.
fn states(image: &Path) -> Vec<String> {
    let report = csd_json([
        "zone".as_ref(),
        "report".as_ref(),
        image.as_os_str(),
        "--json".as_ref(),
    ]);
    report
        .as_array()
        .expect("a zone array")
        .iter()
        .map(|z| z["state"].as_str().expect("a state").to_string())
        .collect()
}

/// With at most 2 open and 3 active zones: an append leaves its zone implicitly open; two
/// explicit opens stay open and close the implicitly opened zone (the oldest); a third open
/// goes past the active limit and is refused; `device stop` powers off, which closes zones with
/// data and empties explicitly opened zones without.
pub fn zone_states_follow_the_commands_until_power_off(global: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("dev.img");
    let img = image.to_str().expect("a UTF-8 path");
    csd_ok([
        "device",
        "create",
        img,
        "--capacity",
        "64M",
        "--max-open",
        "2",
        "--max-active",
        "3",
    ]);
    let data = dir.path().join("data.bin");
    std::fs::write(&data, vec![0x5a; 8192]).expect("write the data");
    let data = data.to_str().expect("a UTF-8 path");

    let mut device = RunningDevice::start(global, &image);
    let err = csd_fails(1, ["device", "start", img]);
    assert!(err.contains("already running"), "{err}");

    csd_ok(["zone", "append", img, "0", "--input", data]);
    assert_eq!(states(&image)[..3], ["implicit_open", "empty", "empty"]);
    csd_ok(["zone", "open", img, "1"]);
    assert_eq!(
        states(&image)[..3],
        ["implicit_open", "explicit_open", "empty"]
    );
    csd_ok(["zone", "open", img, "2"]);
    assert_eq!(
        states(&image)[..3],
        ["closed", "explicit_open", "explicit_open"],
        "opening a zone past the open limit closes the oldest implicitly opened one"
    );
    let err = csd_fails(1, ["zone", "open", img, "3"]);
    assert!(err.contains("Too Many Active Zones"), "{err}");
    // The zone written through the running device reads back.
    let back = csd_ok(["zone", "read", img, "0", "--len", "8192"]);
    assert_eq!(back, vec![0x5a; 8192]);

    let stopped = device.stop().expect("device stop");
    assert!(stopped.contains("powered off"), "{stopped}");
    assert!(!image.with_extension("img.sock").exists());
    assert_eq!(states(&image)[..4], ["closed", "empty", "empty", "empty"]);
    let err = csd_fails(1, ["device", "stop", img]);
    assert!(err.contains("no device is running"), "{err}");
}
