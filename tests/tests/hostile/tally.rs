//! Shared by the hostile-input modules: a tally of inputs tried and mishandled, printed as the
//! machine-readable line `cargo xtask reliability` sums up:
//! `reliability: hostile <class> tried=N mishandled=M`.

use std::{
    fmt::Display,
    panic::{catch_unwind, AssertUnwindSafe},
};

/// Inputs of one class tried, and what was mishandled (a panic, or an outcome that is not a
/// clear error or a clean result).
#[derive(Debug)]
pub struct Tally {
    class: &'static str,
    tried: u64,
    mishandled: Vec<String>,
}

impl Tally {
    pub fn new(class: &'static str) -> Self {
        Tally {
            class,
            tried: 0,
            mishandled: Vec::new(),
        }
    }

    /// Tries one input: `case` returns `Err(why)` when the input was mishandled; a panic is
    /// mishandled too.
    pub fn check(&mut self, what: impl Display, case: impl FnOnce() -> Result<(), String>) {
        self.tried += 1;
        match catch_unwind(AssertUnwindSafe(case)) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => self.mishandled.push(format!("{what}: {why}")),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.mishandled.push(format!("{what}: panicked: {msg}"));
            }
        }
    }

    /// Prints the summary line and fails the test if anything was mishandled.
    pub fn finish(self) {
        println!(
            "reliability: hostile {} tried={} mishandled={}",
            self.class,
            self.tried,
            self.mishandled.len()
        );
        assert!(self.tried > 0, "no {} input was tried", self.class);
        let shown: Vec<&String> = self.mishandled.iter().take(20).collect();
        assert!(
            self.mishandled.is_empty(),
            "{} of {} {} inputs mishandled, first ones: {shown:#?}",
            self.mishandled.len(),
            self.tried,
            self.class
        );
    }
}

/// A clear error: a non-empty sentence without debug formatting noise.
pub fn clear(msg: &str) -> Result<(), String> {
    if msg.trim().is_empty() {
        return Err("an empty error message".into());
    }
    if msg.contains("panicked") {
        return Err(format!("a panic in the error: {msg}"));
    }
    Ok(())
}
