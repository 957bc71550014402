//! The loader's error: one variant per way an object can fail to link, each naming the
//! offending file, section, symbol or relocation in one sentence.

use std::path::PathBuf;

/// Why a kernel object could not be linked into a program image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The object file could not be read.
    #[error("could not read kernel object {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ELF file at all.
    #[error(
        "the kernel object is not an ELF file: compile the kernel with `clang -O2 -target bpf -c`"
    )]
    NotElf,
    /// The file is a 32-bit ELF; eBPF objects are ELF64.
    #[error("the kernel object is a 32-bit ELF file, not an eBPF object (ELF64): compile it with `clang -target bpf`")]
    NotElf64,
    /// The file is a big-endian object (`-target bpfeb`); the device runs little-endian eBPF.
    #[error("the kernel object is big-endian eBPF: compile it with `-target bpf` (or `bpfel`) on a little-endian host")]
    BigEndian,
    /// The file is an ELF object for another machine.
    #[error("the kernel object is for ELF machine {machine} ({name}), not eBPF (EM_BPF, 247): compile it with `clang -target bpf`")]
    WrongMachine {
        /// `e_machine`.
        machine: u16,
        /// A readable name for it.
        name: &'static str,
    },
    /// The file is not a relocatable object (`e_type` is not `ET_REL`).
    #[error("the kernel object has ELF type {e_type}, not a relocatable object (ET_REL, 1): compile with `-c` and do not link it")]
    NotRelocatable {
        /// `e_type`.
        e_type: u16,
    },
    /// The ELF structure itself is broken (truncated, bad offsets, bad sizes).
    #[error("the kernel object is malformed: {detail}")]
    Malformed {
        /// What is broken, naming the section or symbol.
        detail: String,
    },
    /// No executable function named `csd_main` is defined.
    #[error("the kernel object defines no `csd_main` function: every kernel needs `uint64_t csd_main(const struct csd_ctx *ctx)`")]
    MissingEntry,
    /// `csd_main` starts further into its section than one `ja` can reach.
    #[error("`csd_main` starts at instruction {insn} of section `{section}`, beyond the reach of the entry jump (32767): put csd_main first in its section")]
    EntryOutOfReach {
        /// The section holding `csd_main`.
        section: String,
        /// Its instruction index in that section.
        insn: u64,
    },
    /// A section holds writable data: globals and non-const statics are not supported.
    #[error("section `{section}` holds writable data: global and static variables are not supported (make them `const`, or keep state in scratch memory)")]
    WritableData {
        /// The section (`.data`, `.bss`, ...).
        section: String,
    },
    /// A section declares eBPF maps, which the device does not have.
    #[error("section `{section}` declares eBPF maps, which csd does not support: use scratch memory and csd_emit instead")]
    MapsSection {
        /// The section (`maps`, `.maps`, ...).
        section: String,
    },
    /// An allocated section the loader does not know how to place.
    #[error("section `{section}` is not supported: only code and read-only data (.rodata*) can be loaded")]
    UnsupportedSection {
        /// The section.
        section: String,
    },
    /// A symbol referenced by a relocation is not defined in the object.
    #[error("`{symbol}` (referenced at {section}+{offset:#x}) is not defined in the kernel object: kernels cannot use external functions or variables, only the csd.h helpers")]
    UndefinedSymbol {
        /// The symbol.
        symbol: String,
        /// The section holding the reference.
        section: String,
        /// Byte offset of the reference in that section.
        offset: u64,
    },
    /// A relocation the loader does not support, or one it supports used where it cannot be.
    #[error(
        "relocation {kind} at {section}+{offset:#x} against `{symbol}` is not supported: {reason}"
    )]
    UnsupportedRelocation {
        /// The relocation type's name (`R_BPF_64_ABS32`, or `type N`).
        kind: String,
        /// The section being relocated.
        section: String,
        /// Byte offset of the relocation in that section.
        offset: u64,
        /// The symbol it refers to.
        symbol: String,
        /// Why it cannot be applied.
        reason: &'static str,
    },
    /// The linked code has more instructions than a program may have.
    #[error(
        "the kernel has {insns} instructions, over the limit of {max}: split it or simplify it"
    )]
    TooManyInstructions {
        /// Instruction slots after linking.
        insns: u64,
        /// [`common::abi::MAX_PROGRAM_INSNS`].
        max: u32,
    },
    /// The read-only data is larger than a program may have.
    #[error("the kernel has {bytes} bytes of read-only data, over the limit of {max}: shrink its constant tables")]
    RodataTooLarge {
        /// Bytes of read-only data after linking.
        bytes: u64,
        /// [`common::abi::MAX_RODATA_BYTES`].
        max: u32,
    },
}

impl LoadError {
    /// A [`LoadError::Malformed`] with `detail`.
    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        LoadError::Malformed {
            detail: detail.into(),
        }
    }
}

impl From<object::read::Error> for LoadError {
    fn from(e: object::read::Error) -> Self {
        LoadError::malformed(e.to_string())
    }
}
