//! Named failpoints for crash tests.
//!
//! When the environment variable `KARTOTEKA_FAILPOINT` names a failpoint, the process prints
//! `failpoint NAME hit` to stderr and aborts there — as abruptly as `kill -9`, with no destructors, no
//! flushing. Tests assert the line was printed, so a failpoint that is never reached fails the test.

/// Abort the process here if `KARTOTEKA_FAILPOINT` equals `name`.
pub fn failpoint(name: &str) {
    if std::env::var("KARTOTEKA_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name} hit");
        std::process::abort();
    }
}
