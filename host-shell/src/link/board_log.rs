//! The board's log, decoded: defmt frames read back with the table of the ELF that sent them.
//!
//! The board logs through defmt (`boards/mps3-an536/src/log.rs`): each message is a frame that
//! holds an index into the image's `.defmt` table (the interned format strings and their
//! levels) and the arguments' bytes, rzCOBS-encoded and written to semihosting standard output,
//! which QEMU puts in a file. Only the ELF knows what the indices mean, so [`BoardLog`] reads
//! its table once and turns a frame stream into [`LogLine`]s. The table and the frame decoding
//! are the defmt project's own `defmt-decoder`, so the host reads exactly what the board's defmt
//! writes.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use defmt_decoder::{DecodeError, Table};

/// A log level, as the board's `defmt::info!`, `warn!`, ... gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level's name in capitals, as log lines show it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }

    /// The level behind defmt's lower-case name.
    fn from_defmt(name: &str) -> Option<Self> {
        match name {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level; `None` for `defmt::println!`.
    pub level: Option<LogLevel>,
    /// The message with its arguments formatted in.
    pub message: String,
}

impl fmt::Display for LogLine {
    /// `INFO  link: ...`: the level padded to one width, then the message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Some(level) => write!(f, "{:<5} {}", level.name(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why the board's log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BoardLogError {
    #[error("could not read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} has no defmt table (no .defmt section): build the board image with defmt and \
         `-Tdefmt.x`, or name the image the board was started from",
        elf.display()
    )]
    NoTable { elf: PathBuf },
    #[error("the defmt table of {} is unreadable: {reason}", elf.display())]
    BadTable { elf: PathBuf, reason: String },
    #[error(
        "the board's log is corrupt at message {message}: the frame does not decode with the \
         defmt table of {} (bytes were lost, or the board ran another image)",
        elf.display()
    )]
    Corrupt {
        elf: PathBuf,
        /// The corrupt message's position in the stream, from 1.
        message: usize,
    },
}

/// The defmt table of one board ELF, ready to decode what that image logged.
#[derive(Debug)]
pub struct BoardLog {
    elf: PathBuf,
    table: Table,
}

impl BoardLog {
    /// Reads the defmt table of the ELF at `elf`.
    pub fn from_elf(elf: &Path) -> Result<Self, BoardLogError> {
        let bytes = fs::read(elf).map_err(|source| BoardLogError::Read {
            path: elf.to_path_buf(),
            source,
        })?;
        Self::from_elf_bytes(elf, &bytes)
    }

    /// Reads the defmt table of the ELF image `bytes`; `elf` names it in errors.
    pub fn from_elf_bytes(elf: &Path, bytes: &[u8]) -> Result<Self, BoardLogError> {
        let elf = elf.to_path_buf();
        match Table::parse(bytes) {
            Ok(Some(table)) => Ok(BoardLog { elf, table }),
            Ok(None) => Err(BoardLogError::NoTable { elf }),
            Err(e) => Err(BoardLogError::BadTable {
                elf,
                reason: format!("{e:#}"),
            }),
        }
    }

    /// The ELF the table came from.
    pub fn elf(&self) -> &Path {
        &self.elf
    }

    /// Decodes a stream of frames: every complete message, in order. A message cut off at the
    /// end (the board stopped while writing it) is left out; a frame that does not decode is
    /// an error, as it means the stream and the table do not belong together.
    pub fn decode(&self, frames: &[u8]) -> Result<Vec<LogLine>, BoardLogError> {
        let mut stream = self.table.new_stream_decoder();
        stream.received(frames);
        let mut lines = Vec::new();
        loop {
            match stream.decode() {
                Ok(frame) => lines.push(LogLine {
                    level: frame
                        .level()
                        .and_then(|level| LogLevel::from_defmt(level.as_str())),
                    message: frame.display_message().to_string(),
                }),
                Err(DecodeError::UnexpectedEof) => return Ok(lines),
                Err(DecodeError::Malformed) => {
                    return Err(BoardLogError::Corrupt {
                        elf: self.elf.clone(),
                        message: lines.len() + 1,
                    })
                }
            }
        }
    }

    /// Decodes the frames in the file at `path` (a board's standard output).
    pub fn decode_file(&self, path: &Path) -> Result<Vec<LogLine>, BoardLogError> {
        let frames = fs::read(path).map_err(|source| BoardLogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.decode(&frames)
    }
}

#[cfg(test)]
mod tests {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind};

    use super::*;

    /// Indices of the test table's messages.
    const ZONES: u16 = 1;
    const FAILED: u16 = 2;
    const PRINTED: u16 = 3;

    /// An Arm ELF object with a defmt table: version and encoding markers and, in `.defmt`, one
    /// symbol per message as defmt's macros name them (JSON), its address being its index.
    fn table_elf(with_table: bool) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Arm, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0; 4], 4);
        if with_table {
            let defmt = obj.add_section(Vec::new(), b".defmt".to_vec(), SectionKind::Other);
            obj.append_section_data(defmt, &[0; 8], 1);
            let mut add = |name: String, value: u64, section: SymbolSection| {
                obj.add_symbol(Symbol {
                    name: name.into_bytes(),
                    value,
                    size: 0,
                    kind: SymbolKind::Data,
                    scope: object::SymbolScope::Linkage,
                    weak: false,
                    section,
                    flags: SymbolFlags::None,
                });
            };
            add("_defmt_version_ = 4".into(), 0, SymbolSection::Absolute);
            add(
                "_defmt_encoding_ = rzcobs".into(),
                0,
                SymbolSection::Absolute,
            );
            let messages = [
                (ZONES, "defmt_info", "link: {=u32} zones of {=u32} LBAs"),
                (FAILED, "defmt_error", "link: {=str}: it failed"),
                (PRINTED, "defmt_println", "plain {=u8}"),
            ];
            for (index, tag, data) in messages {
                let name = serde_json::json!({
                    "package": "board",
                    "tag": tag,
                    "data": data,
                    "disambiguator": index.to_string(),
                    "crate_name": "board",
                });
                add(
                    name.to_string(),
                    u64::from(index),
                    SymbolSection::Section(defmt),
                );
            }
        }
        obj.write().expect("the test ELF is written")
    }

    fn board_log() -> BoardLog {
        BoardLog::from_elf_bytes(Path::new("board.elf"), &table_elf(true)).expect("table")
    }

    /// Appends one frame, encoded by defmt's own encoder as the board's logger does.
    fn frame(stream: &mut Vec<u8>, index: u16, args: &[u8]) {
        let mut encoder = defmt::Encoder::new();
        encoder.start_frame(|b| stream.extend_from_slice(b));
        encoder.write(&index.to_le_bytes(), |b| stream.extend_from_slice(b));
        encoder.write(args, |b| stream.extend_from_slice(b));
        encoder.end_frame(|b| stream.extend_from_slice(b));
    }

    fn zones_frame(stream: &mut Vec<u8>) {
        let args: Vec<u8> = [30u32.to_le_bytes(), 128u32.to_le_bytes()].concat();
        frame(stream, ZONES, &args);
    }

    /// Messages of each kind come back in order with their levels and arguments, and print as
    /// `LEVEL message`.
    #[test]
    fn decodes_levels_and_arguments_in_order() {
        let mut stream = Vec::new();
        zones_frame(&mut stream);
        let what = b"could not mount";
        let args = [&(what.len() as u32).to_le_bytes()[..], what].concat();
        frame(&mut stream, FAILED, &args);
        frame(&mut stream, PRINTED, &[7]);
        let lines = board_log().decode(&stream).expect("decodes");
        let shown: Vec<String> = lines.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "INFO  link: 30 zones of 128 LBAs",
                "ERROR link: could not mount: it failed",
                "plain 7",
            ]
        );
        assert_eq!(lines[0].level, Some(LogLevel::Info));
        assert_eq!(lines[1].level, Some(LogLevel::Error));
        assert_eq!(lines[2].level, None);
    }

    /// An empty stream is an empty log; a message cut off at the end (the board was stopped
    /// while writing it) is left out.
    #[test]
    fn an_unfinished_last_message_is_left_out() {
        let log = board_log();
        assert_eq!(log.decode(&[]).expect("empty"), []);
        let mut stream = Vec::new();
        zones_frame(&mut stream);
        let whole = stream.len();
        zones_frame(&mut stream);
        let cut = &stream[..stream.len() - 3];
        assert!(cut.len() > whole);
        let lines = log.decode(cut).expect("decodes");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].message, "link: 30 zones of 128 LBAs");
    }

    /// A frame whose index is not in the table (a stream from another image) and a frame with
    /// its arguments cut short are corrupt, and the error names the message and the ELF.
    #[test]
    fn a_frame_the_table_does_not_know_is_corrupt() {
        let log = board_log();
        let mut stream = Vec::new();
        zones_frame(&mut stream);
        frame(&mut stream, 99, &[]);
        let err = log.decode(&stream).expect_err("unknown index");
        assert!(
            matches!(err, BoardLogError::Corrupt { message: 2, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("corrupt at message 2") && text.contains("board.elf"),
            "{text}"
        );

        let mut short = Vec::new();
        frame(&mut short, ZONES, &30u32.to_le_bytes());
        let err = log.decode(&short).expect_err("arguments cut short");
        assert!(
            matches!(err, BoardLogError::Corrupt { message: 1, .. }),
            "{err:?}"
        );
    }

    /// An ELF without a defmt table, and bytes that are no ELF at all, are refused with an
    /// error that names the file.
    #[test]
    fn an_image_without_a_table_is_refused_by_name() {
        let err = BoardLog::from_elf_bytes(Path::new("plain.elf"), &table_elf(false))
            .expect_err("no table");
        assert!(matches!(err, BoardLogError::NoTable { .. }), "{err:?}");
        assert!(err.to_string().starts_with("plain.elf has no defmt table"));

        let err = BoardLog::from_elf_bytes(Path::new("notes.txt"), b"not an ELF image")
            .expect_err("not an ELF");
        assert!(matches!(err, BoardLogError::BadTable { .. }), "{err:?}");
        assert!(err.to_string().contains("notes.txt"));

        let missing = Path::new("/nonexistent/board.elf");
        let err = BoardLog::from_elf(missing).expect_err("missing file");
        assert!(matches!(err, BoardLogError::Read { .. }), "{err:?}");
    }
}
