//! Compile-time checks of the macros and the typed builder: each file in
//! `ui/fail` breaks one rule and its `.stderr` is the error the user
//! sees; the files in `ui/pass` compile and run.
//!
//! Regenerate the snapshots with `TRYBUILD=overwrite` after reading the
//! diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
