//! Pins the compile errors users see when they misuse `#[rpc::service]`.
#![allow(missing_docs)]

#[test]
fn misuse_gives_readable_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
