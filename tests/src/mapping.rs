//! Shared memory mappings of a file, for tests of what a mount's page cache holds, made by a
//! small Python program (`python3`'s `mmap`), so the tests hold no `unsafe` code.
//!
//! Pages are faulted in with `MADV_POPULATE_READ`, which reports a page the file system refused
//! as an error (`EFAULT`) where touching it would raise SIGBUS; the bytes are copied out only
//! after that succeeded.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use rustix::io::Errno;

/// `mode path len`: maps the first `len` bytes of `path` shared and read-only.
/// - `hold`: says `mapped`, waits for a line on stdin, faults the pages in, then answers the
///   errno (0 when it worked) and, if 0, the mapped bytes;
/// - `populate`: faults the pages in at once and prints `@child-step ERRNO`, as the child
///   steps of the offload tests report.
const SCRIPT: &str = r#"
import mmap, sys
MADV_POPULATE_READ = 22  # Linux 5.14; Python 3.11 has no name for it
mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
f = open(path, "rb")
m = mmap.mmap(f.fileno(), n, mmap.MAP_SHARED, mmap.PROT_READ)
out = sys.stdout.buffer
if mode == "hold":
    out.write(b"mapped\n")
    out.flush()
    sys.stdin.readline()
try:
    m.madvise(MADV_POPULATE_READ)
    code = 0
except OSError as e:
    code = e.errno
if mode == "populate":
    out.write(b"\n@child-step %d\n" % code)
else:
    out.write(b"%d\n" % code)
    if code == 0:
        out.write(m[:])
out.flush()
"#;

fn python(mode: &str, path: &Path, len: usize) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(SCRIPT)
        .arg(mode)
        .arg(path)
        .arg(len.to_string());
    c
}

/// `len` bytes (more than zero) of a file mapped `PROT_READ`, `MAP_SHARED`, from offset 0, in
/// a process of its own that keeps the mapping until [`SharedMap::read`].
#[derive(Debug)]
pub struct SharedMap {
    process: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    len: usize,
}

impl SharedMap {
    /// Maps the first `len` bytes of `path`; returns once the mapping exists. Nothing is read
    /// yet.
    pub fn new(path: &Path, len: usize) -> std::io::Result<SharedMap> {
        assert!(len > 0, "an empty mapping");
        let mut process = python("hold", path, len)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(to), Some(from)) = (process.stdin.take(), process.stdout.take()) else {
            unreachable!("both pipes were asked for");
        };
        let mut from = BufReader::new(from);
        let mut line = String::new();
        from.read_line(&mut line)?;
        if line != "mapped\n" {
            let _ = process.kill();
            return Err(std::io::Error::other(format!(
                "python3 did not map {}: {line:?}",
                path.display()
            )));
        }
        Ok(SharedMap {
            process,
            to,
            from,
            len,
        })
    }

    /// Faults every page in (the file system is asked for those not in the page cache) and
    /// copies the mapped bytes; the error of a page the file system refused.
    pub fn read(mut self) -> std::io::Result<Result<Vec<u8>, Errno>> {
        self.to.write_all(b"\n")?;
        let mut line = String::new();
        self.from.read_line(&mut line)?;
        let code: i32 = line
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("python3 answered {line:?}")))?;
        let mut bytes = Vec::with_capacity(self.len);
        if code == 0 {
            self.from.read_to_end(&mut bytes)?;
        }
        self.process.wait()?;
        Ok(match code {
            0 => Ok(bytes),
            errno => Err(Errno::from_raw_os_error(errno)),
        })
    }
}

/// Replaces this process (same pid, same credentials, same offload state in a mount) with one
/// that maps the first `len` bytes of `path`, faults them in and prints `@child-step ERRNO`.
/// Returns only if that could not start.
pub fn populate_in_this_process(path: &Path, len: usize) -> std::io::Error {
    let _ = std::io::stdout().flush();
    python("populate", path, len).exec()
}
