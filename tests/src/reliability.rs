//! Shared by the reliability tests (`tests/tests/reliability_*.rs`): their seed and their time
//! budget. Their generator is `testkit::rng`, the one every test uses.
//!
//! Short by default (a fixed number of rounds from a fixed seed, so CI repeats itself); long
//! when `CSD_RELIABILITY_SECONDS=N` is set (rounds until N seconds are spent). The seed comes
//! from `CSD_RELIABILITY_SEED` (decimal or `0x` hex) and is printed with every finding, so a
//! finding can be run again.

use std::time::{Duration, Instant};

/// The variable that names the seed.
pub const SEED_ENV: &str = "CSD_RELIABILITY_SEED";
/// The variable that asks for a long run of that many seconds.
pub const SECONDS_ENV: &str = "CSD_RELIABILITY_SECONDS";
/// The seed without `CSD_RELIABILITY_SEED`.
pub const DEFAULT_SEED: u64 = 0x00C5_D5EE_D001;

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

/// The campaign's seed.
///
/// # Panics
/// If `CSD_RELIABILITY_SEED` is set but not a number.
pub fn seed() -> u64 {
    env_number(SEED_ENV).unwrap_or(DEFAULT_SEED)
}

/// How long a test may run: `short_rounds` rounds, or until `CSD_RELIABILITY_SECONDS` are
/// spent.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Rounds(u64),
    Until(Instant),
}

impl Budget {
    /// The budget this run has.
    ///
    /// # Panics
    /// If `CSD_RELIABILITY_SECONDS` is set but not a number.
    pub fn from_env(short_rounds: u64) -> Budget {
        match env_number(SECONDS_ENV) {
            Some(seconds) => Budget::Until(Instant::now() + Duration::from_secs(seconds)),
            None => Budget::Rounds(short_rounds),
        }
    }

    /// Whether another round may start after `done` rounds (a long run always does at least
    /// one).
    pub fn more(&self, done: u64) -> bool {
        match self {
            Budget::Rounds(n) => done < *n,
            Budget::Until(end) => done == 0 || Instant::now() < *end,
        }
    }

    pub fn is_long(&self) -> bool {
        matches!(self, Budget::Until(_))
    }
}
