//! Project automation (written next).
fn main() {}
