//! cargo-fuzz target `page_token`: the body is `authzd_fuzz::page_token::run` (fuzz/targets/page_token.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    authzd_fuzz::page_token::run(data);
});
