//! Shared by the reliability tests (`tests/tests/reliability_*.rs`): their seed, their time
//! budget and a small seeded generator.
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

/// splitmix64: every seed, zero included, gives a well-mixed sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// splitmix64's finaliser: a seed for round `round` of a campaign seeded with `seed`, or any
/// other well-spread function of one number.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
