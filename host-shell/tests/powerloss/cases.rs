//! The campaign's bookkeeping: cases that print and parse, tallies of each class, the time
//! budget of the random classes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::workload::{Rng, Spec};
use super::{Bench, Cut, Keep, Phase};

/// A case of any class, as failures print it and `CSD_POWERCUT_CASE` takes it:
/// `every-op seed=S steps=N cut=C`, `torn seed=S steps=N bytes=B`,
/// `random-pairs seed=S steps=N a=A then=T b=B` (the second workload's seed is T; `b=end`
/// cuts after it is done), `host-crash seed=S steps=N cut=C keep=K` (`none`, `all`, or the
/// seed of a random half).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    EveryOp {
        spec: Spec,
        cut: u64,
    },
    Torn {
        spec: Spec,
        bytes: u64,
    },
    /// `b: None` cuts the second time only after the second workload is done.
    Pair {
        spec: Spec,
        a: u64,
        then: u64,
        b: Option<u64>,
    },
    HostCrash {
        spec: Spec,
        cut: u64,
        keep: Keep,
    },
}

impl Case {
    pub fn run(&self, bench: &Bench) -> Result<(), String> {
        match *self {
            Case::EveryOp { spec, cut } => bench.single(spec, Cut::Ops(cut)),
            Case::Torn { spec, bytes } => bench.single(spec, Cut::ProgramBytes(bytes)),
            Case::Pair { spec, a, then, b } => {
                bench.pair(spec, a, second(spec, then), b).map(|_| ())
            }
            Case::HostCrash { spec, cut, keep } => bench.host_crash(spec, cut, keep),
        }
    }

    pub fn parse(text: &str) -> Option<Case> {
        let mut words = text.split_whitespace();
        let class = words.next()?;
        let mut get = |key: &str| -> Option<u64> {
            let word = words.next()?;
            word.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
        };
        let spec = Spec {
            seed: get("seed")?,
            steps: get("steps")? as usize,
        };
        match class {
            "every-op" => Some(Case::EveryOp {
                spec,
                cut: get("cut")?,
            }),
            "torn" => Some(Case::Torn {
                spec,
                bytes: get("bytes")?,
            }),
            "host-crash" => Some(Case::HostCrash {
                spec,
                cut: get("cut")?,
                keep: match words.next()?.strip_prefix("keep=")? {
                    "none" => Keep::None,
                    "all" => Keep::All,
                    seed => Keep::Random(seed.parse().ok()?),
                },
            }),
            "random-pairs" => Some(Case::Pair {
                spec,
                a: get("a")?,
                then: get("then")?,
                b: match words.next()?.strip_prefix("b=")? {
                    "end" => None,
                    n => Some(n.parse().ok()?),
                },
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Case::EveryOp { spec, cut } => {
                write!(
                    f,
                    "every-op seed={} steps={} cut={cut}",
                    spec.seed, spec.steps
                )
            }
            Case::Torn { spec, bytes } => {
                write!(
                    f,
                    "torn seed={} steps={} bytes={bytes}",
                    spec.seed, spec.steps
                )
            }
            Case::Pair { spec, a, then, b } => write!(
                f,
                "random-pairs seed={} steps={} a={a} then={then} b={}",
                spec.seed,
                spec.steps,
                b.map_or("end".to_string(), |b| b.to_string())
            ),
            Case::HostCrash { spec, cut, keep } => write!(
                f,
                "host-crash seed={} steps={} cut={cut} keep={}",
                spec.seed,
                spec.steps,
                match keep {
                    Keep::None => "none".to_string(),
                    Keep::All => "all".to_string(),
                    Keep::Random(seed) => seed.to_string(),
                }
            ),
        }
    }
}

/// The workload after a first cut: as long as the first, from its own seed.
pub fn second(first: Spec, seed: u64) -> Spec {
    Spec {
        seed,
        steps: first.steps,
    }
}

/// Runs `f`, turning a panic into an error.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(format!("panicked: {what}"))
    })
}

/// Failures printed in full per class; the rest are counted.
const SHOWN_FAILURES: usize = 5;

/// Cases tried and failed in one class.
#[derive(Debug)]
pub struct Tally {
    class: &'static str,
    tried: u64,
    failures: u64,
}

impl Tally {
    pub fn new(class: &'static str) -> Tally {
        Tally {
            class,
            tried: 0,
            failures: 0,
        }
    }

    /// Runs `case` and counts it.
    pub fn run(&mut self, bench: &Bench, case: Case) {
        let result = guarded(|| case.run(bench));
        self.record(&case.to_string(), result);
    }

    pub fn record<T>(&mut self, case: &str, result: Result<T, String>) {
        self.tried += 1;
        if let Err(why) = result {
            self.failures += 1;
            if self.failures <= SHOWN_FAILURES as u64 {
                println!(
                    "powercut failure: {case}: {why}\n  replay: CSD_POWERCUT_CASE='{case}' cargo \
                     test --release -p host-shell --test lfs_powerloss replay -- --ignored \
                     --nocapture"
                );
            }
        }
    }

    /// The dry run of `spec` (no cut), or `None` with its failure counted.
    pub fn dry_run(&mut self, bench: &Bench, spec: Spec) -> Option<Phase> {
        let result = guarded(|| bench.dry_run(spec));
        let case = format!("dry run seed={} steps={}", spec.seed, spec.steps);
        match result {
            Ok(phase) => Some(phase),
            Err(e) => {
                self.record(&case, Err::<(), _>(e));
                None
            }
        }
    }

    /// Prints the summary line; fails the test if any case failed.
    pub fn finish(self) {
        println!(
            "reliability: powercut {} tried={} failures={}",
            self.class, self.tried, self.failures
        );
        assert!(self.tried > 0, "no {} case was tried", self.class);
        assert!(
            self.failures == 0,
            "{} of {} {} cases failed (the first {SHOWN_FAILURES} are printed above)",
            self.failures,
            self.tried,
            self.class
        );
    }
}

/// How long the random classes run.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Short mode: this many cases from a fixed seed.
    Cases(u64),
    /// Long mode: until this instant.
    Until(Instant),
}

impl Budget {
    /// Short mode with `cases`, or long mode when `CSD_RELIABILITY_SECONDS` is set.
    pub fn from_env(cases: u64) -> Budget {
        match std::env::var("CSD_RELIABILITY_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(s) => Budget::Until(Instant::now() + Duration::from_secs(s)),
            None => Budget::Cases(cases),
        }
    }

    /// Whether case number `n` (from 0) should run.
    pub fn allows(&self, n: u64) -> bool {
        match *self {
            Budget::Cases(c) => n < c,
            Budget::Until(t) => Instant::now() < t,
        }
    }

    /// The seed of the random classes: fixed in short mode.
    pub fn seed(&self) -> u64 {
        match self {
            Budget::Cases(_) => 1,
            Budget::Until(_) => std::env::var("CSD_RELIABILITY_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                }),
        }
    }
}

/// A random workload for the random classes: its length varies so cuts meet the file system
/// at every size of its log and data.
pub fn random_spec(rng: &mut Rng) -> Spec {
    Spec {
        seed: rng.next(),
        steps: 30 + rng.below(150) as usize,
    }
}
