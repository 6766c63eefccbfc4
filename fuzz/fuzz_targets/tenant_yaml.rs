//! cargo-fuzz target `tenant_yaml`: the body is `authzd_fuzz::tenant_yaml::run` (fuzz/targets/tenant_yaml.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    authzd_fuzz::tenant_yaml::run(data);
});
