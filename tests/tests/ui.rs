//! The macro's diagnostics: every misuse is a compile error at the token at fault.
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p tests --test ui`.

#[test]
fn handler_macro_diagnostics() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
    cases.compile_fail("ui/fail/*.rs");
}
