//! One change the writer makes, and its line in the journal.

use std::fmt;

/// One change the writer makes; the journal's text form is its `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create(String),
    Write {
        name: String,
        offset: u64,
        len: u64,
        tag: u64,
    },
    Truncate {
        name: String,
        len: u64,
    },
    /// fsync, or fdatasync with `data_only`.
    Fsync {
        name: String,
        data_only: bool,
    },
    /// fsync of both directories.
    SyncDirs,
    /// close(2) of the name's descriptor (a FUSE release, which flushes the file's buffer).
    Close(String),
    Rename {
        from: String,
        to: String,
    },
    Unlink(String),
    /// close(2) of the oldest descriptor of an unlinked file.
    CloseOrphan,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create(n) => write!(f, "create {n}"),
            Op::Write {
                name,
                offset,
                len,
                tag,
            } => write!(f, "write {name} {offset} {len} {tag}"),
            Op::Truncate { name, len } => write!(f, "truncate {name} {len}"),
            Op::Fsync { name, data_only } => {
                write!(
                    f,
                    "{} {name}",
                    if *data_only { "fdatasync" } else { "fsync" }
                )
            }
            Op::SyncDirs => write!(f, "syncdirs"),
            Op::Close(n) => write!(f, "close {n}"),
            Op::Rename { from, to } => write!(f, "rename {from} {to}"),
            Op::Unlink(n) => write!(f, "unlink {n}"),
            Op::CloseOrphan => write!(f, "close-orphan"),
        }
    }
}

impl Op {
    pub fn parse(text: &str) -> Option<Op> {
        let w: Vec<&str> = text.split(' ').collect();
        let name = |i: usize| w.get(i).map(|s| s.to_string());
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
        Some(match *w.first()? {
            "create" => Op::Create(name(1)?),
            "write" => Op::Write {
                name: name(1)?,
                offset: num(2)?,
                len: num(3)?,
                tag: num(4)?,
            },
            "truncate" => Op::Truncate {
                name: name(1)?,
                len: num(2)?,
            },
            "fsync" | "fdatasync" => Op::Fsync {
                name: name(1)?,
                data_only: w[0] == "fdatasync",
            },
            "syncdirs" => Op::SyncDirs,
            "close" => Op::Close(name(1)?),
            "rename" => Op::Rename {
                from: name(1)?,
                to: name(2)?,
            },
            "unlink" => Op::Unlink(name(1)?),
            "close-orphan" => Op::CloseOrphan,
            _ => return None,
        })
    }
}
