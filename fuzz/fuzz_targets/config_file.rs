//! cargo-fuzz target `config_file`: the body is `authzd_fuzz::config_file::run` (fuzz/targets/config_file.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    authzd_fuzz::config_file::run(data);
});
