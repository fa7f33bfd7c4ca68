//! Fuzz target: arbitrary bytes into `kickq_producer::job::parse` (default limits); it must never panic, and every
//! accepted job must satisfy the invariants in `tests/support/job_invariants.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/job_invariants.rs"]
mod job_invariants;

fuzz_target!(|body: &[u8]| {
    let _ = job_invariants::parse_and_check(body);
});
