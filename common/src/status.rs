//! NVMe-shaped completion status codes.
//!
//! A status is the pair (status code type, status code), written here as one `u16`
//! `SCT << 8 | SC` so that the ZNS codes read as in the specification (`0x1B8`..`0x1BF`).
//! Codes in the vendor-specific type 7 belong to the computational-program commands and have
//! no standard number.

use serde::{Deserialize, Serialize};

/// The status of a completed command.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Status {
    // Generic command status (SCT 0).
    /// The command completed without error.
    Success,
    /// The opcode is not supported.
    InvalidOpcode,
    /// A field of the command is invalid (for example a zone action on a non-zone LBA).
    InvalidField,
    /// Moving data to or from the host failed.
    DataTransferError,
    /// The device hit an internal error it could not attribute to the command.
    InternalError,
    /// The command was aborted because the device is shutting down or lost power.
    CommandAborted,
    /// The LBA range goes past the end of the namespace.
    LbaOutOfRange,
    /// The wire version is not the device's. (No longer sent: a host and a device of
    /// different wire versions refuse each other when a link session opens.)
    UnsupportedVersion,

    // Media and data integrity errors (SCT 2).
    /// Programming the NAND failed.
    WriteFault,
    /// Reading the NAND failed (for example an uncorrectable or torn page).
    UnrecoveredReadError,

    // Zoned Namespace command set (SCT 1, 0xB8..0xBF).
    /// The access crosses a zone boundary.
    ZoneBoundaryError,
    /// The zone is full.
    ZoneFull,
    /// The zone is read only.
    ZoneReadOnly,
    /// The zone is offline.
    ZoneOffline,
    /// A write is not at the zone's write pointer.
    ZoneInvalidWrite,
    /// Opening or activating the zone would exceed the maximum number of active zones.
    TooManyActiveZones,
    /// Opening the zone would exceed the maximum number of open zones.
    TooManyOpenZones,
    /// The zone cannot make the requested state transition.
    InvalidZoneStateTransition,

    // Computational programs (vendor specific, SCT 7).
    /// The program slot number does not exist.
    InvalidProgramSlot,
    /// The slot holds no activated program.
    ProgramNotActive,
    /// The program image was rejected by the verifier.
    ProgramRejected,
    /// The program ran out of fuel before finishing.
    ProgramOutOfFuel,
    /// The program faulted (bad memory access, bad helper argument, division rules).
    ProgramFault,
    /// The memory range set is invalid (unknown, too large, or overlapping device memory).
    InvalidMemoryRange,

    // Appended: generic command status (SCT 0).
    /// Capacity Exceeded (generic 81h): the device has no room for the command's data. An
    /// emulated device answers it when the host disk under its image file is full.
    CapacityExceeded,

    // Appended: media and data integrity errors (SCT 2).
    /// Access Denied (media 86h): the host may not change what it asked to change (a raw
    /// write to a running device's zones while a file system holds them).
    AccessDenied,
    /// Command Sequence Error (generic 0Ch): a command before the one it depends on (an NVMe
    /// over Fabrics command before Connect, or before the controller is enabled).
    CommandSequenceError,

    // Appended: generic command status (SCT 0).
    /// Invalid Namespace or Format (generic 0Bh): the command names a namespace the device
    /// does not have, or one its opcode does not belong to.
    InvalidNamespace,

    // Appended: command specific status (SCT 1).
    /// Invalid Log Page (command specific 09h): a Get Log Page for a page the device does not
    /// have.
    InvalidLogPage,
}

impl Status {
    /// Every status, in declaration order (their postcard tags).
    pub const ALL: [Status; 29] = [
        Status::Success,
        Status::InvalidOpcode,
        Status::InvalidField,
        Status::DataTransferError,
        Status::InternalError,
        Status::CommandAborted,
        Status::LbaOutOfRange,
        Status::UnsupportedVersion,
        Status::WriteFault,
        Status::UnrecoveredReadError,
        Status::ZoneBoundaryError,
        Status::ZoneFull,
        Status::ZoneReadOnly,
        Status::ZoneOffline,
        Status::ZoneInvalidWrite,
        Status::TooManyActiveZones,
        Status::TooManyOpenZones,
        Status::InvalidZoneStateTransition,
        Status::InvalidProgramSlot,
        Status::ProgramNotActive,
        Status::ProgramRejected,
        Status::ProgramOutOfFuel,
        Status::ProgramFault,
        Status::InvalidMemoryRange,
        Status::CapacityExceeded,
        Status::AccessDenied,
        Status::CommandSequenceError,
        Status::InvalidNamespace,
        Status::InvalidLogPage,
    ];

    /// The status whose `SCT << 8 | SC` is `code` (as a completion queue entry carries it),
    /// if this device knows it.
    pub fn from_code(code: u16) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The NVMe status as `SCT << 8 | SC`.
    pub const fn code(self) -> u16 {
        match self {
            Status::Success => 0x000,
            Status::InvalidOpcode => 0x001,
            Status::InvalidField => 0x002,
            Status::DataTransferError => 0x004,
            Status::InternalError => 0x006,
            Status::CommandAborted => 0x007,
            Status::LbaOutOfRange => 0x080,
            Status::UnsupportedVersion => 0x0C0,
            Status::WriteFault => 0x280,
            Status::UnrecoveredReadError => 0x281,
            Status::ZoneBoundaryError => 0x1B8,
            Status::ZoneFull => 0x1B9,
            Status::ZoneReadOnly => 0x1BA,
            Status::ZoneOffline => 0x1BB,
            Status::ZoneInvalidWrite => 0x1BC,
            Status::TooManyActiveZones => 0x1BD,
            Status::TooManyOpenZones => 0x1BE,
            Status::InvalidZoneStateTransition => 0x1BF,
            Status::InvalidProgramSlot => 0x701,
            Status::ProgramNotActive => 0x702,
            Status::ProgramRejected => 0x703,
            Status::ProgramOutOfFuel => 0x704,
            Status::ProgramFault => 0x705,
            Status::InvalidMemoryRange => 0x706,
            Status::CapacityExceeded => 0x081,
            Status::AccessDenied => 0x286,
            Status::CommandSequenceError => 0x00C,
            Status::InvalidNamespace => 0x00B,
            Status::InvalidLogPage => 0x109,
        }
    }

    /// The status's name as a person reads it, e.g. `Too Many Open Zones`.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "Success",
            Status::InvalidOpcode => "Invalid Command Opcode",
            Status::InvalidField => "Invalid Field in Command",
            Status::DataTransferError => "Data Transfer Error",
            Status::InternalError => "Internal Error",
            Status::CommandAborted => "Command Aborted",
            Status::LbaOutOfRange => "LBA Out of Range",
            Status::UnsupportedVersion => "Unsupported Wire Version",
            Status::WriteFault => "Write Fault",
            Status::UnrecoveredReadError => "Unrecovered Read Error",
            Status::ZoneBoundaryError => "Zone Boundary Error",
            Status::ZoneFull => "Zone Is Full",
            Status::ZoneReadOnly => "Zone Is Read Only",
            Status::ZoneOffline => "Zone Is Offline",
            Status::ZoneInvalidWrite => "Zone Invalid Write",
            Status::TooManyActiveZones => "Too Many Active Zones",
            Status::TooManyOpenZones => "Too Many Open Zones",
            Status::InvalidZoneStateTransition => "Invalid Zone State Transition",
            Status::InvalidProgramSlot => "Invalid Program Slot",
            Status::ProgramNotActive => "Program Not Active",
            Status::ProgramRejected => "Program Rejected by Verifier",
            Status::ProgramOutOfFuel => "Program Out of Fuel",
            Status::ProgramFault => "Program Fault",
            Status::InvalidMemoryRange => "Invalid Memory Range",
            Status::CapacityExceeded => "Capacity Exceeded",
            Status::AccessDenied => "Access Denied",
            Status::CommandSequenceError => "Command Sequence Error",
            Status::InvalidNamespace => "Invalid Namespace or Format",
            Status::InvalidLogPage => "Invalid Log Page",
        }
    }

    /// Whether the command succeeded.
    pub const fn is_success(self) -> bool {
        matches!(self, Status::Success)
    }
}

impl core::fmt::Display for Status {
    /// Formats as `Too Many Open Zones (1BEh)`, the way the CLI reports device errors.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:03X}h)", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ZNS statuses carry the codes the NVMe ZNS specification assigns.
    #[test]
    fn zns_codes_match_the_specification() {
        assert_eq!(Status::ZoneBoundaryError.code(), 0x1B8);
        assert_eq!(Status::ZoneFull.code(), 0x1B9);
        assert_eq!(Status::ZoneReadOnly.code(), 0x1BA);
        assert_eq!(Status::ZoneOffline.code(), 0x1BB);
        assert_eq!(Status::ZoneInvalidWrite.code(), 0x1BC);
        assert_eq!(Status::TooManyActiveZones.code(), 0x1BD);
        assert_eq!(Status::TooManyOpenZones.code(), 0x1BE);
        assert_eq!(Status::InvalidZoneStateTransition.code(), 0x1BF);
    }

    /// The display form names the status and its code the way the CLI prints it.
    #[test]
    fn display_names_status_and_code() {
        extern crate alloc;
        use alloc::string::ToString;
        assert_eq!(
            Status::TooManyOpenZones.to_string(),
            "Too Many Open Zones (1BEh)"
        );
        assert_eq!(Status::LbaOutOfRange.to_string(), "LBA Out of Range (080h)");
    }

    /// Variants are append-only: their postcard tags are pinned.
    #[test]
    fn golden_tags() {
        let bytes = postcard::to_allocvec(&Status::ZoneFull).unwrap();
        assert_eq!(bytes, [11]);
        let bytes = postcard::to_allocvec(&Status::InvalidMemoryRange).unwrap();
        assert_eq!(bytes, [23]);
        let bytes = postcard::to_allocvec(&Status::CapacityExceeded).unwrap();
        assert_eq!(bytes, [24]);
        assert_eq!(Status::CapacityExceeded.code(), 0x081);
    }

    /// `ALL` holds every status once, in tag order (so a new variant must join it), and each
    /// code maps back to its status.
    #[test]
    fn all_statuses_and_their_codes() {
        for (tag, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(postcard::to_allocvec(&status).unwrap(), [tag as u8]);
            assert_eq!(Status::from_code(status.code()), Some(status));
        }
        let past = postcard::from_bytes::<Status>(&[Status::ALL.len() as u8]);
        assert!(past.is_err(), "a status is missing from Status::ALL");
        assert_eq!(Status::from_code(0x3ff), None);
    }
}
