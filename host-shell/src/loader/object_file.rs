//! Parsing and classifying the clang-built object: the ELF header checks, which sections are
//! code, read-only data, ignored or rejected, and where `csd_main` is.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader as _};
use object::{
    Endianness, FileKind, Object, ObjectSection, ObjectSymbol, SectionFlags, SectionIndex,
    SymbolKind,
};

use super::error::LoadError;
use super::image::INSN_BYTES;
use common::abi::ENTRY_SYMBOL;

/// An executable section, copied into the linked text.
#[derive(Debug)]
pub(crate) struct CodeSection<'data> {
    pub index: SectionIndex,
    pub name: &'data str,
    pub data: &'data [u8],
}

/// A read-only data section, copied into the linked rodata.
#[derive(Debug)]
pub(crate) struct RodataSection<'data> {
    pub index: SectionIndex,
    pub data: &'data [u8],
    /// `sh_addralign`, at least 1.
    pub align: u64,
}

/// Where `csd_main` is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub section: SectionIndex,
    /// Byte offset in that section.
    pub offset: u64,
}

/// A checked eBPF relocatable object with its sections sorted by role.
#[derive(Debug)]
pub(crate) struct KernelObject<'data> {
    pub elf: ElfFile64<'data, Endianness>,
    /// Non-empty executable sections, in file order.
    pub code: Vec<CodeSection<'data>>,
    /// Read-only data sections (`.rodata`, `.rodata.*`), in file order.
    pub rodata: Vec<RodataSection<'data>>,
    pub entry: Entry,
}

impl<'data> KernelObject<'data> {
    /// Checks that `bytes` are a little-endian ELF64 eBPF relocatable object, sorts its
    /// sections, rejects the ones a kernel may not have, and finds `csd_main`.
    pub fn parse(bytes: &'data [u8]) -> Result<Self, LoadError> {
        match FileKind::parse(bytes) {
            Ok(FileKind::Elf64) => {}
            Ok(FileKind::Elf32) => return Err(LoadError::NotElf64),
            Ok(_) | Err(_) => return Err(LoadError::NotElf),
        }
        let elf = ElfFile64::<Endianness>::parse(bytes)?;
        let endian = elf.endian();
        if endian != Endianness::Little {
            return Err(LoadError::BigEndian);
        }
        let header = elf.elf_header();
        let machine = header.e_machine(endian);
        if machine != elf::EM_BPF {
            return Err(LoadError::WrongMachine {
                machine: machine.0,
                name: machine_name(machine.0),
            });
        }
        let e_type = header.e_type(endian);
        if e_type != elf::ET_REL {
            return Err(LoadError::NotRelocatable { e_type: e_type.0 });
        }

        let mut code = Vec::new();
        let mut rodata = Vec::new();
        for section in elf.sections() {
            let name = section.name()?;
            let SectionFlags::Elf { sh_type, sh_flags } = section.flags() else {
                return Err(LoadError::malformed(format!(
                    "section `{name}` has no ELF flags"
                )));
            };
            let flags = sh_flags.0;
            let alloc = flags & elf::SHF_ALLOC.0 != 0;
            let write = flags & elf::SHF_WRITE.0 != 0;
            let exec = flags & elf::SHF_EXECINSTR.0 != 0;
            if is_maps_section(name) {
                return Err(LoadError::MapsSection {
                    section: name.to_owned(),
                });
            }
            if !alloc {
                // Symbols, strings, relocations, .BTF, .BTF.ext, .debug_*, .llvm_addrsig,
                // notes: nothing the program needs at run time.
                continue;
            }
            if exec {
                if sh_type != elf::SHT_PROGBITS {
                    return Err(LoadError::malformed(format!(
                        "code section `{name}` is not SHT_PROGBITS"
                    )));
                }
                let data = section.data()?;
                if data.is_empty() {
                    continue;
                }
                if !data.len().is_multiple_of(INSN_BYTES) {
                    return Err(LoadError::malformed(format!(
                        "code section `{name}` is {} bytes, not a whole number of 8-byte instructions",
                        data.len()
                    )));
                }
                code.push(CodeSection {
                    index: section.index(),
                    name,
                    data,
                });
            } else if write {
                return Err(LoadError::WritableData {
                    section: name.to_owned(),
                });
            } else if is_rodata_section(name) && sh_type == elf::SHT_PROGBITS {
                let align = section.align().max(1);
                if !align.is_power_of_two() {
                    return Err(LoadError::malformed(format!(
                        "section `{name}` has alignment {align}, not a power of two"
                    )));
                }
                rodata.push(RodataSection {
                    index: section.index(),
                    data: section.data()?,
                    align,
                });
            } else {
                return Err(LoadError::UnsupportedSection {
                    section: name.to_owned(),
                });
            }
        }

        let entry = find_entry(&elf, &code)?;
        Ok(KernelObject {
            elf,
            code,
            rodata,
            entry,
        })
    }

    /// The code section with ELF index `index`, if the object has one.
    pub fn code_section(&self, index: SectionIndex) -> Option<&CodeSection<'data>> {
        self.code.iter().find(|c| c.index == index)
    }
}

/// Finds the defined function `csd_main` in a code section.
fn find_entry(
    elf: &ElfFile64<'_, Endianness>,
    code: &[CodeSection<'_>],
) -> Result<Entry, LoadError> {
    let symbol = elf
        .symbols()
        .find(|s| s.name() == Ok(ENTRY_SYMBOL) && s.is_definition() && s.kind() == SymbolKind::Text)
        .ok_or(LoadError::MissingEntry)?;
    let section = symbol.section_index().ok_or(LoadError::MissingEntry)?;
    let code_section = code
        .iter()
        .find(|c| c.index == section)
        .ok_or(LoadError::MissingEntry)?;
    let offset = symbol.address();
    if !offset.is_multiple_of(INSN_BYTES as u64) || offset >= code_section.data.len() as u64 {
        return Err(LoadError::malformed(format!(
            "`{ENTRY_SYMBOL}` is at byte {offset} of `{}`, not at an instruction of it",
            code_section.name
        )));
    }
    Ok(Entry { section, offset })
}

/// libbpf's map section names: legacy `maps`, `maps/...`, and BTF-defined `.maps`.
fn is_maps_section(name: &str) -> bool {
    name == "maps" || name.starts_with("maps/") || name == ".maps" || name.starts_with(".maps.")
}

/// `.rodata`, and clang's `.rodata.str1.1`, `.rodata.cst16`, `.rodata.<symbol>` variants.
fn is_rodata_section(name: &str) -> bool {
    name == ".rodata" || name.starts_with(".rodata.")
}

/// A readable name for the ELF machines a wrong object is most likely built for.
fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "x86",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "not eBPF",
    }
}
