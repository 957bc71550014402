//! Sizes as people type them: `4096`, `64K`, `16MiB`, `1G` (powers of 1024), and as we print them.

use std::fmt;

/// A size argument that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a size: use a number of bytes with an optional K, M, G or T suffix (powers of 1024), e.g. 64M")]
pub struct SizeError {
    input: String,
}

/// Parses a byte count with an optional binary suffix (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`, `T`,
/// `TiB`, case-insensitive; `B` alone is bytes).
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        input: input.to_string(),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| err())?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(err()),
    };
    value.checked_mul(1u64 << shift).ok_or_else(err)
}

/// A byte count printed the way people read it (`1.5 GiB`, `512 B`).
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

/// A duration in nanoseconds printed the way people read it (`1.250 ms`, `3.2 s`).
#[derive(Debug, Clone, Copy)]
pub struct Nanos(pub u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0 as f64;
        match self.0 {
            0..1_000 => write!(f, "{} ns", self.0),
            1_000..1_000_000 => write!(f, "{:.1} us", ns / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.3} ms", ns / 1e6),
            _ => write!(f, "{:.3} s", ns / 1e9),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations pick the unit that keeps them readable.
    #[test]
    fn nanos_read_well() {
        assert_eq!(Nanos(999).to_string(), "999 ns");
        assert_eq!(Nanos(1_500).to_string(), "1.5 us");
        assert_eq!(Nanos(1_250_000).to_string(), "1.250 ms");
        assert_eq!(Nanos(3_200_000_000).to_string(), "3.200 s");
    }

    /// Plain numbers are bytes and binary suffixes multiply by powers of 1024.
    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2 TiB"), Ok(2 << 40));
    }

    /// Garbage, unknown suffixes and overflow are refused, never truncated.
    #[test]
    fn refuses_bad_sizes() {
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    /// Sizes print in the largest unit that keeps the number at least 1.
    #[test]
    fn prints_sizes() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
    }
}
