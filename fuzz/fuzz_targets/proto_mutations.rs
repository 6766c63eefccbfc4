//! cargo-fuzz target `proto_mutations`: the body is `authzd_fuzz::proto_mutations::run` (fuzz/targets/proto_mutations.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    authzd_fuzz::proto_mutations::run(data);
});
