//! Inodes: numbers, kinds, attributes, times and the POSIX permission check.

use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{LfsError, Result};

/// An inode number. The root directory is [`InodeNo::ROOT`], as FUSE expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeNo(pub u64);

impl InodeNo {
    pub const ROOT: InodeNo = InodeNo(1);
}

/// What an inode is. The values are the kind byte on the media (docs/FORMAT.md); new kinds
/// are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    /// A named pipe: the kernel carries its data, the file system only its name and mode.
    Fifo = 4,
    /// A character device node: a name for device [`Attr::rdev`], never opened here.
    CharDevice = 5,
    /// A block device node: a name for device [`Attr::rdev`], never opened here.
    BlockDevice = 6,
    /// A Unix domain socket's name.
    Socket = 7,
}

/// The file type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;

impl FileKind {
    pub fn from_u8(v: u8) -> Option<FileKind> {
        match v {
            1 => Some(FileKind::File),
            2 => Some(FileKind::Dir),
            3 => Some(FileKind::Symlink),
            4 => Some(FileKind::Fifo),
            5 => Some(FileKind::CharDevice),
            6 => Some(FileKind::BlockDevice),
            7 => Some(FileKind::Socket),
            _ => None,
        }
    }

    /// The kind whose `S_IFMT` bits `mode` carries, if any.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        [
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::CharDevice,
            FileKind::BlockDevice,
            FileKind::Socket,
        ]
        .into_iter()
        .find(|k| k.mode_bits() == mode & S_IFMT)
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => 0o100000,
            FileKind::Dir => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::Fifo => 0o010000,
            FileKind::CharDevice => 0o020000,
            FileKind::BlockDevice => 0o060000,
            FileKind::Socket => 0o140000,
        }
    }

    /// A character or block device node: the only kinds with a device number.
    pub fn is_device(self) -> bool {
        matches!(self, FileKind::CharDevice | FileKind::BlockDevice)
    }

    /// A FIFO, socket or device node: a name and attributes, never data blocks.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket
        )
    }
}

/// A time stamp: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    /// The wall clock now.
    pub fn now() -> Time {
        Time::from(SystemTime::now())
    }
}

impl From<SystemTime> for Time {
    fn from(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Time {
                        sec: -(d.as_secs() as i64),
                        nsec: 0,
                    }
                } else {
                    Time {
                        sec: -(d.as_secs() as i64) - 1,
                        nsec: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }
}

/// An inode's attributes, as getattr reports them and the metadata log stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: InodeNo,
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Bytes (for a symlink, its target's length).
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// For a directory, the directory holding it (the root's is itself); otherwise unused.
    pub parent: InodeNo,
    /// For a device node, the device it names, as FUSE carries it (the kernel's 32-bit
    /// encoding of major and minor); 0 for every other kind.
    pub rdev: u32,
}

impl Attr {
    /// The full `st_mode`.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }

    /// Clears set-user-ID, and set-group-ID when group execute is set (without it the bit
    /// marks mandatory locking, not privilege), as Linux does when a writer without
    /// `CAP_FSETID` writes a file. Returns whether the mode changed.
    pub fn kill_suid_sgid(&mut self) -> bool {
        let before = self.perm;
        self.perm &= !S_ISUID;
        if self.perm & S_IXGRP != 0 {
            self.perm &= !S_ISGID;
        }
        self.perm != before
    }
}

const S_ISUID: u16 = 0o4000;
const S_ISGID: u16 = 0o2000;
const S_IXGRP: u16 = 0o0010;

/// The attributes a setattr may change; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    /// The caller may keep set-ID bits (Linux's `CAP_FSETID`). Without it, a size change
    /// clears set-user-ID, and set-group-ID when group execute is set; an owner or group
    /// change clears them whoever asks (not on a directory). A mode given in the same change
    /// is kept as given. (Linux's rules, which a FUSE file system that kills set-ID bits
    /// itself applies: see `FUSE_HANDLE_KILLPRIV_V2` in the mount.)
    pub fsetid: bool,
}

/// Access mask bits, as `access(2)` has them.
pub mod access {
    pub const F_OK: u32 = 0;
    pub const X_OK: u32 = 1;
    pub const W_OK: u32 = 2;
    pub const R_OK: u32 = 4;
}

/// Who asks for access: the caller's user and group ids (the file system ones, as FUSE reports
/// them) and its supplementary groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Whether `gid` is the caller's group or one of its supplementary groups.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// POSIX permission check of `mask` (`R_OK | W_OK | X_OK`) for `who` on `attr`: the owner's
/// bits if the caller owns it, else the group's if its group or one of its supplementary
/// groups is the file's, else the others'. Root may read and write anything, and execute when
/// any execute bit is set (or it is a directory).
pub fn check_access(attr: &Attr, who: &Credentials, mask: u32) -> Result<()> {
    let mask = mask & 0o7;
    if mask == access::F_OK {
        return Ok(());
    }
    let perm = u32::from(attr.perm);
    let uid = who.uid;
    if uid == 0 {
        let exec_ok = attr.kind == FileKind::Dir || perm & 0o111 != 0;
        return if mask & access::X_OK == 0 || exec_ok {
            Ok(())
        } else {
            Err(LfsError::PermissionDenied)
        };
    }
    let bits = if uid == attr.uid {
        (perm >> 6) & 0o7
    } else if who.in_group(attr.gid) {
        (perm >> 3) & 0o7
    } else {
        perm & 0o7
    };
    if bits & mask == mask {
        Ok(())
    } else {
        Err(LfsError::PermissionDenied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(perm: u16, kind: FileKind) -> Attr {
        Attr {
            ino: InodeNo(2),
            kind,
            perm,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            parent: InodeNo::ROOT,
            rdev: 0,
        }
    }

    /// Owner, group and other bits apply in that order of precedence; root bypasses r/w.
    #[test]
    fn posix_access_rules() {
        use access::*;
        let plain = |uid, gid| Credentials {
            uid,
            gid,
            groups: Vec::new(),
        };
        let a = attr(0o640, FileKind::File);
        assert!(check_access(&a, &plain(1000, 1), R_OK | W_OK).is_ok());
        assert!(check_access(&a, &plain(1000, 1), X_OK).is_err());
        assert!(check_access(&a, &plain(2000, 100), R_OK).is_ok());
        assert!(check_access(&a, &plain(2000, 100), W_OK).is_err());
        assert!(check_access(&a, &plain(2000, 7), R_OK).is_err());
        assert!(check_access(&a, &plain(0, 0), R_OK | W_OK).is_ok());
        assert!(check_access(&a, &plain(0, 0), X_OK).is_err());
        assert!(check_access(&attr(0o000, FileKind::Dir), &plain(0, 0), X_OK).is_ok());
        // The owner's bits decide even when the group's would allow more.
        let b = attr(0o070, FileKind::File);
        assert!(check_access(&b, &plain(1000, 100), R_OK).is_err());
    }

    /// Every kind round-trips through its media byte and its `S_IFMT` bits; a directory or
    /// unknown type bits are not a special file.
    #[test]
    fn kinds_round_trip() {
        for v in 1..=7u8 {
            let k = FileKind::from_u8(v).expect("a kind");
            assert_eq!(k as u8, v);
            assert_eq!(FileKind::from_mode(k.mode_bits() | 0o644), Some(k));
        }
        assert_eq!(FileKind::from_u8(8), None);
        assert_eq!(FileKind::from_mode(0o644), None);
        assert!(FileKind::CharDevice.is_device() && !FileKind::Fifo.is_device());
        assert!(FileKind::Socket.is_special() && !FileKind::Dir.is_special());
    }

    /// A write by an unprivileged writer drops set-user-ID always and set-group-ID only
    /// with group execute.
    #[test]
    fn kill_suid_sgid_as_linux() {
        let mut a = attr(0o6777, FileKind::File);
        assert!(a.kill_suid_sgid());
        assert_eq!(a.perm, 0o777);
        let mut b = attr(0o2745, FileKind::File);
        assert!(!b.kill_suid_sgid());
        assert_eq!(b.perm, 0o2745);
        let mut c = attr(0o4700, FileKind::File);
        assert!(c.kill_suid_sgid());
        assert_eq!(c.perm, 0o700);
    }

    /// A supplementary group counts as the caller's group; other groups do not.
    #[test]
    fn supplementary_groups_get_the_group_bits() {
        use access::*;
        let a = attr(0o640, FileKind::File);
        let who = |groups: Vec<u32>| Credentials {
            uid: 2000,
            gid: 7,
            groups,
        };
        assert!(check_access(&a, &who(vec![5, 100]), R_OK).is_ok());
        assert!(check_access(&a, &who(vec![100]), W_OK).is_err());
        assert!(check_access(&a, &who(vec![5, 6]), R_OK).is_err());
        assert!(check_access(&a, &who(Vec::new()), R_OK).is_err());
    }

    /// Times before the epoch keep nanoseconds positive.
    #[test]
    fn time_before_epoch() {
        let t = Time::from(UNIX_EPOCH - std::time::Duration::from_millis(1500));
        assert_eq!(
            t,
            Time {
                sec: -2,
                nsec: 500_000_000
            }
        );
    }
}
