//! Linking: lay out the code and read-only data sections, then apply the relocations.
//!
//! Layout: the section holding `csd_main` comes first, then the other code sections in file
//! order. If `csd_main` is not the first function of its section, one `ja` to it is prepended,
//! so the entry point is instruction 0. Sections move as a whole, so the relative jumps and
//! the intra-section calls clang resolved itself stay correct; calls across functions that
//! clang left to the linker carry an `R_BPF_64_32` relocation and are recomputed here.
//! Read-only data sections are concatenated in file order, each at its own alignment, and the
//! kernel sees the blob at `RODATA_BASE`.

use std::collections::HashMap;

use object::read::elf::ElfFile64;
use object::{
    Endianness, Object, ObjectSection, ObjectSymbol, Relocation, RelocationFlags, RelocationTarget,
    SectionIndex, SymbolKind, SymbolSection,
};

use super::error::LoadError;
use super::image::{ProgramImage, INSN_BYTES};
use super::object_file::KernelObject;
use common::abi::{region::RODATA_BASE, MAX_PROGRAM_INSNS, MAX_RODATA_BYTES};

/// ELF relocation types of eBPF (LLVM's `ELFRelocs/BPF.def`). `object` names only some.
mod r_bpf {
    pub const NONE: u32 = 0;
    pub const R_64_64: u32 = 1;
    pub const ABS64: u32 = 2;
    pub const ABS32: u32 = 3;
    pub const NODYLD32: u32 = 4;
    pub const R_64_32: u32 = 10;
}

/// Opcodes the loader patches or writes.
mod opcode {
    /// `BPF_JMP | BPF_JA`.
    pub const JA: u8 = 0x05;
    /// `BPF_JMP | BPF_CALL`.
    pub const CALL: u8 = 0x85;
    /// `BPF_LD | BPF_IMM | BPF_DW`: the first slot of a 64-bit immediate load.
    pub const LDDW: u8 = 0x18;
}

/// `src_reg` of a call to a function of the program (libbpf's `BPF_PSEUDO_CALL`).
const PSEUDO_CALL: u8 = 1;

/// Offset of the 32-bit immediate in an instruction.
const IMM_OFFSET: usize = 4;

/// Links the checked object into a program image.
pub(crate) fn link(obj: &KernelObject<'_>) -> Result<ProgramImage, LoadError> {
    let (mut text, code) = CodeLayout::new(obj)?;
    let (mut blob, rodata) = RodataLayout::new(obj)?;
    let linker = Linker {
        obj,
        code: &code,
        rodata: &rodata,
    };
    for section in &obj.code {
        let elf_section = obj.elf.section_by_index(section.index)?;
        for (offset, reloc) in elf_section.relocations() {
            linker.apply_in_code(section.index, offset, &reloc, &mut text)?;
        }
    }
    for section in &obj.rodata {
        let elf_section = obj.elf.section_by_index(section.index)?;
        for (offset, reloc) in elf_section.relocations() {
            linker.apply_in_rodata(section.index, offset, &reloc, &mut blob)?;
        }
    }
    Ok(ProgramImage { text, rodata: blob })
}

/// Where each code section landed in the linked text.
struct CodeLayout {
    /// Section -> (first instruction index in the text, instruction count).
    placed: HashMap<SectionIndex, (u64, u64)>,
}

impl CodeLayout {
    /// Lays out the code; returns the unrelocated text and where each section went.
    fn new(obj: &KernelObject<'_>) -> Result<(Vec<u8>, Self), LoadError> {
        let entry_section = obj
            .code_section(obj.entry.section)
            .ok_or(LoadError::MissingEntry)?;
        let entry_insn = obj.entry.offset / INSN_BYTES as u64;
        let prefix: u64 = u64::from(entry_insn != 0);
        let total: u64 = prefix
            + obj
                .code
                .iter()
                .map(|c| (c.data.len() / INSN_BYTES) as u64)
                .sum::<u64>();
        if total > u64::from(MAX_PROGRAM_INSNS) {
            return Err(LoadError::TooManyInstructions {
                insns: total,
                max: MAX_PROGRAM_INSNS,
            });
        }

        let mut text = Vec::with_capacity(total as usize * INSN_BYTES);
        if entry_insn != 0 {
            let off = i16::try_from(entry_insn).map_err(|_| LoadError::EntryOutOfReach {
                section: entry_section.name.to_owned(),
                insn: entry_insn,
            })?;
            text.extend_from_slice(&ja(off));
        }
        let mut placed = HashMap::new();
        let order = std::iter::once(entry_section)
            .chain(obj.code.iter().filter(|c| c.index != entry_section.index));
        for section in order {
            let base = (text.len() / INSN_BYTES) as u64;
            let count = (section.data.len() / INSN_BYTES) as u64;
            placed.insert(section.index, (base, count));
            text.extend_from_slice(section.data);
        }
        Ok((text, CodeLayout { placed }))
    }
}

/// Encodes `ja +off`.
fn ja(off: i16) -> [u8; INSN_BYTES] {
    let mut insn = [0u8; INSN_BYTES];
    insn[0] = opcode::JA;
    insn[2..4].copy_from_slice(&off.to_le_bytes());
    insn
}

/// Where each read-only data section landed in the linked blob.
struct RodataLayout {
    /// Section -> (byte offset in the blob, length).
    placed: HashMap<SectionIndex, (u64, u64)>,
}

impl RodataLayout {
    /// Lays out the read-only data; returns the unrelocated blob and where each section went.
    fn new(obj: &KernelObject<'_>) -> Result<(Vec<u8>, Self), LoadError> {
        let max = u64::from(MAX_RODATA_BYTES);
        let too_large = |bytes: u64| LoadError::RodataTooLarge {
            bytes,
            max: MAX_RODATA_BYTES,
        };
        // Size first, so a hostile object cannot make the loader allocate much.
        let mut end: u64 = 0;
        let mut placed = HashMap::new();
        for section in &obj.rodata {
            let len = section.data.len() as u64;
            let start = end
                .checked_next_multiple_of(section.align)
                .ok_or_else(|| too_large(u64::MAX))?;
            end = start.checked_add(len).ok_or_else(|| too_large(u64::MAX))?;
            if end > max {
                return Err(too_large(end));
            }
            placed.insert(section.index, (start, len));
        }
        let mut blob = vec![0u8; end as usize];
        for section in &obj.rodata {
            if let Some(&(start, len)) = placed.get(&section.index) {
                blob[start as usize..(start + len) as usize].copy_from_slice(section.data);
            }
        }
        Ok((blob, RodataLayout { placed }))
    }
}

/// Where a relocation's symbol lives.
enum Place {
    Code(SectionIndex),
    Rodata(SectionIndex),
    /// Anywhere else (a section the loader does not load, an absolute symbol).
    Elsewhere,
}

/// A resolved relocation target.
struct Target {
    name: String,
    place: Place,
    /// `st_value`: the symbol's byte offset in its section.
    value: u64,
}

/// A relocation's site, for error messages.
struct Site {
    section: String,
    offset: u64,
    kind: u32,
    symbol: String,
}

impl Site {
    fn unsupported(&self, reason: &'static str) -> LoadError {
        LoadError::UnsupportedRelocation {
            kind: relocation_name(self.kind),
            section: self.section.clone(),
            offset: self.offset,
            symbol: self.symbol.clone(),
            reason,
        }
    }
}

struct Linker<'a, 'data> {
    obj: &'a KernelObject<'data>,
    code: &'a CodeLayout,
    rodata: &'a RodataLayout,
}

impl Linker<'_, '_> {
    /// Applies one relocation of code section `section` at byte `offset` of it.
    fn apply_in_code(
        &self,
        section: SectionIndex,
        offset: u64,
        reloc: &Relocation,
        text: &mut [u8],
    ) -> Result<(), LoadError> {
        let Some((site, target)) = self.site(section, offset, reloc)? else {
            return Ok(());
        };
        let &(base, count) =
            self.code.placed.get(&section).ok_or_else(|| {
                LoadError::malformed(format!("`{}` was not laid out", site.section))
            })?;
        if !offset.is_multiple_of(INSN_BYTES as u64) || offset / INSN_BYTES as u64 >= count {
            return Err(LoadError::malformed(format!(
                "relocation at {}+{offset:#x} is not at an instruction",
                site.section
            )));
        }
        let pc = base + offset / INSN_BYTES as u64;
        let at = pc as usize * INSN_BYTES;
        let code = text[at];
        let src_reg = text[at + 1] >> 4;
        match site.kind {
            r_bpf::R_64_64 => {
                if code != opcode::LDDW || offset / INSN_BYTES as u64 + 1 >= count {
                    return Err(site.unsupported("it is not on a 64-bit immediate load (lddw)"));
                }
                if src_reg != 0 {
                    return Err(site.unsupported(
                        "the lddw has a non-zero src_reg (a map or BTF reference), which csd does not support",
                    ));
                }
                let Place::Rodata(target_section) = target.place else {
                    return Err(site.unsupported(match target.place {
                        Place::Code(_) => "taking the address of a function (function pointers, callbacks) is not supported",
                        _ => "it refers to something outside code and read-only data",
                    }));
                };
                let lo = u64::from(read_u32(text, at + IMM_OFFSET));
                let hi = u64::from(read_u32(text, at + INSN_BYTES + IMM_OFFSET));
                let addend = (hi << 32 | lo) as i64;
                let address = self.rodata_address(target_section, &target, addend, &site)?;
                write_u32(text, at + IMM_OFFSET, address as u32);
                write_u32(text, at + INSN_BYTES + IMM_OFFSET, (address >> 32) as u32);
                Ok(())
            }
            r_bpf::R_64_32 => {
                if code != opcode::CALL || src_reg != PSEUDO_CALL {
                    return Err(
                        site.unsupported("it is not on a bpf-to-bpf call (call with src_reg 1)")
                    );
                }
                let Place::Code(target_section) = target.place else {
                    return Err(site.unsupported("a call must target a function in a code section"));
                };
                let &(target_base, target_count) =
                    self.code.placed.get(&target_section).ok_or_else(|| {
                        LoadError::malformed(format!("`{}` was not laid out", target.name))
                    })?;
                if !target.value.is_multiple_of(INSN_BYTES as u64) {
                    return Err(LoadError::malformed(format!(
                        "function `{}` is not at an instruction boundary",
                        target.name
                    )));
                }
                // libbpf: callee = symbol's instruction + imm + 1 (clang leaves imm = -1 for a
                // call to a function symbol, or the offset for a call via a section symbol).
                let imm = i64::from(read_u32(text, at + IMM_OFFSET) as i32);
                let in_section = (target.value / INSN_BYTES as u64) as i64 + imm + 1;
                if in_section < 0 || in_section as u64 >= target_count {
                    return Err(site.unsupported("the call target lies outside its section"));
                }
                let callee = target_base as i64 + in_section;
                let rel = i32::try_from(callee - (pc as i64 + 1)).map_err(|_| {
                    site.unsupported("the call target is beyond the reach of a call")
                })?;
                write_u32(text, at + IMM_OFFSET, rel as u32);
                Ok(())
            }
            r_bpf::ABS64 | r_bpf::ABS32 | r_bpf::NODYLD32 => {
                Err(site
                    .unsupported("absolute data relocations are meaningful only in data sections"))
            }
            _ => Err(site.unsupported(
                "the loader supports only R_BPF_64_64, R_BPF_64_32 and R_BPF_64_ABS64",
            )),
        }
    }

    /// Applies one relocation of read-only data section `section` at byte `offset` of it: a
    /// pointer stored in a constant (a `static const char *const names[]` table).
    fn apply_in_rodata(
        &self,
        section: SectionIndex,
        offset: u64,
        reloc: &Relocation,
        blob: &mut [u8],
    ) -> Result<(), LoadError> {
        let Some((site, target)) = self.site(section, offset, reloc)? else {
            return Ok(());
        };
        match site.kind {
            r_bpf::ABS64 => {
                let &(start, len) = self.rodata.placed.get(&section).ok_or_else(|| {
                    LoadError::malformed(format!("`{}` was not laid out", site.section))
                })?;
                if offset.checked_add(8).is_none_or(|end| end > len) {
                    return Err(LoadError::malformed(format!(
                        "relocation at {}+{offset:#x} runs past the section",
                        site.section
                    )));
                }
                let Place::Rodata(target_section) = target.place else {
                    return Err(site.unsupported(match target.place {
                        Place::Code(_) => "tables of function pointers are not supported",
                        _ => "it refers to something outside read-only data",
                    }));
                };
                let at = (start + offset) as usize;
                let addend = read_u64(blob, at) as i64;
                let address = self.rodata_address(target_section, &target, addend, &site)?;
                blob[at..at + 8].copy_from_slice(&address.to_le_bytes());
                Ok(())
            }
            r_bpf::ABS32 => Err(site.unsupported(
                "a 32-bit field cannot hold a kernel address (read-only data lives above 4 GiB)",
            )),
            _ => Err(site.unsupported("read-only data supports only R_BPF_64_ABS64 relocations")),
        }
    }

    /// The kernel address of byte `target.value + addend` of rodata section `section`.
    fn rodata_address(
        &self,
        section: SectionIndex,
        target: &Target,
        addend: i64,
        site: &Site,
    ) -> Result<u64, LoadError> {
        let &(start, len) =
            self.rodata.placed.get(&section).ok_or_else(|| {
                LoadError::malformed(format!("`{}` was not laid out", target.name))
            })?;
        let in_section = i128::from(target.value) + i128::from(addend);
        if in_section < 0 || in_section > i128::from(len) {
            return Err(site.unsupported("the address lies outside its read-only data section"));
        }
        Ok(RODATA_BASE + start + in_section as u64)
    }

    /// The site and target of the relocation at byte `offset` of `section`; `None` for
    /// `R_BPF_NONE`, which asks for nothing.
    fn site(
        &self,
        section: SectionIndex,
        offset: u64,
        reloc: &Relocation,
    ) -> Result<Option<(Site, Target)>, LoadError> {
        let kind = relocation_type(reloc);
        if kind == r_bpf::NONE {
            return Ok(None);
        }
        let section_name = self.section_name(section);
        let target = self.resolve(reloc, &section_name, offset)?;
        let site = Site {
            section: section_name,
            offset,
            kind,
            symbol: target.name.clone(),
        };
        Ok(Some((site, target)))
    }

    /// Resolves a relocation's symbol, rejecting undefined (external) ones.
    fn resolve(
        &self,
        reloc: &Relocation,
        section_name: &str,
        offset: u64,
    ) -> Result<Target, LoadError> {
        let elf: &ElfFile64<'_, Endianness> = &self.obj.elf;
        let RelocationTarget::Symbol(index) = reloc.target() else {
            return Ok(Target {
                name: "<no symbol>".to_owned(),
                place: Place::Elsewhere,
                value: 0,
            });
        };
        let symbol = elf.symbol_by_index(index)?;
        let name = match symbol.name() {
            Ok(n) if !n.is_empty() => n.to_owned(),
            _ if symbol.kind() == SymbolKind::Section => symbol
                .section_index()
                .map(|s| self.section_name(s))
                .unwrap_or_else(|| format!("<symbol {}>", index.0)),
            _ => format!("<symbol {}>", index.0),
        };
        let place = match symbol.section() {
            SymbolSection::Undefined => {
                return Err(LoadError::UndefinedSymbol {
                    symbol: name,
                    section: section_name.to_owned(),
                    offset,
                })
            }
            SymbolSection::Common => {
                return Err(LoadError::WritableData {
                    section: format!("COMMON (symbol `{name}`)"),
                })
            }
            SymbolSection::Section(s) if self.code.placed.contains_key(&s) => Place::Code(s),
            SymbolSection::Section(s) if self.rodata.placed.contains_key(&s) => Place::Rodata(s),
            _ => Place::Elsewhere,
        };
        Ok(Target {
            name,
            place,
            value: symbol.address(),
        })
    }

    fn section_name(&self, index: SectionIndex) -> String {
        self.obj
            .elf
            .section_by_index(index)
            .ok()
            .and_then(|s| s.name().ok().map(str::to_owned))
            .unwrap_or_else(|| format!("<section {}>", index.0))
    }
}

/// The ELF `r_type` of a relocation.
fn relocation_type(reloc: &Relocation) -> u32 {
    match reloc.flags() {
        RelocationFlags::Elf { r_type } => r_type.0,
        _ => u32::MAX,
    }
}

/// The name LLVM gives an eBPF relocation type.
pub(crate) fn relocation_name(kind: u32) -> String {
    match kind {
        r_bpf::NONE => "R_BPF_NONE".to_owned(),
        r_bpf::R_64_64 => "R_BPF_64_64".to_owned(),
        r_bpf::ABS64 => "R_BPF_64_ABS64".to_owned(),
        r_bpf::ABS32 => "R_BPF_64_ABS32".to_owned(),
        r_bpf::NODYLD32 => "R_BPF_64_NODYLD32".to_owned(),
        r_bpf::R_64_32 => "R_BPF_64_32".to_owned(),
        other => format!("of type {other}"),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn write_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}
