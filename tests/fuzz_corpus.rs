//! The fuzz targets in the suite (docs/fuzzing.md): every file of the
//! committed corpus (`fuzz/corpus/<target>/`, seeds and the inputs of fixed
//! crashes) through the target's body (`fuzz/targets/<target>.rs`, the same
//! code the cargo-fuzz binaries run), then a few thousand seeded
//! pseudo-random mutations of them (bit flips, interesting bytes, tokens of
//! the input's language, truncations, deletions, duplications, splices),
//! asserting what the body asserts: no panic, and the target's invariants.
//! The same seeds give the same inputs on every run; a failing input is
//! printed and written to `<target tmp dir>/fuzz-failure-<target>`, ready to
//! be minimized and committed to the corpus. `AUTHZD_FUZZ_REPLAY=<dir>`
//! also replays the corpus libFuzzer grew in `<dir>/<target>/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::path::PathBuf;
use targets::Outcome;

/// The committed corpus of `target`, by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{}: the corpus has {} files, not a few seeds", dir.display(), files.len());
    files
}

/// splitmix64: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Bytes that often matter to parsers.
const BYTES: &[u8] = b"\0\x01\x7f\x80\xff\n\r\t :-[]{},&*!|>'\"#%@`?=+/\\.0179";

/// One input derived from the corpus: a seed with 1 to 4 mutations.
fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)], tokens: &[&[u8]]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = BYTES[rng.below(BYTES.len())];
            }
            2 => v.insert(at, BYTES[rng.below(BYTES.len())]),
            3 => {
                let t = tokens[rng.below(tokens.len())];
                v.splice(at..at, t.iter().copied());
            }
            4 => v.truncate(at),
            5 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            6 => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                let chunk = v[at.min(end)..end].to_vec();
                v.splice(at..at, chunk);
            }
            7 => {
                // Splice: this input's head, another seed's tail.
                let other = &seeds[rng.below(seeds.len())].1;
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                // A varint-sized length or a number where a byte was: protobuf and numbers.
                let n = [0u8, 1, 0x7f, 0x80, 0xff][rng.below(5)];
                v.splice(at..at, [n, 0x01]);
            }
        }
    }
    v
}

/// Runs `run` on every corpus file of `target` and on `mutations` seeded
/// mutations of them; on a panic, shows and saves the input. Some corpus
/// files, and some mutations, must be accepted (reach the target's deep
/// checks), and some mutations refused.
fn exercise(target: &str, run: fn(&[u8]) -> Outcome, mutations: usize, tokens: &[&[u8]]) {
    let seeds = corpus(target);
    let one = |what: &str, input: &[u8]| match std::panic::catch_unwind(|| run(input)) {
        Ok(outcome) => outcome,
        Err(e) => {
            let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-failure-{target}"));
            std::fs::write(&saved, input).unwrap();
            eprintln!(
                "{target}: {what} fails; the input (saved to {}):\n{}",
                saved.display(),
                String::from_utf8_lossy(input).escape_debug()
            );
            std::panic::resume_unwind(e);
        }
    };
    let accepted = seeds.iter().filter(|(name, input)| one(&format!("corpus file {name}"), input) == Outcome::Accepted);
    let accepted_seeds = accepted.count();
    let mut rng = Rng(0x00C0_FFEE ^ target.len() as u64);
    let accepted_mutations = (0..mutations)
        .filter(|i| one(&format!("mutation {i}"), &mutate(&mut rng, &seeds, tokens)) == Outcome::Accepted)
        .count();
    eprintln!(
        "{target}: {accepted_seeds} of {} corpus files and {accepted_mutations} of {mutations} mutations accepted",
        seeds.len()
    );
    assert!(accepted_seeds > 0, "{target}: no corpus file reaches the target's checks");
    // A corpus libFuzzer grew (`AUTHZD_FUZZ_REPLAY=/tmp/fuzz-corpus`: its `<target>/` files), replayed in this build.
    if let Some(dir) = std::env::var_os("AUTHZD_FUZZ_REPLAY") {
        let dir = PathBuf::from(dir).join(target);
        let (mut n, mut ok) = (0, 0);
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            n += 1;
            ok += usize::from(one(&path.display().to_string(), &std::fs::read(&path).unwrap()) == Outcome::Accepted);
        }
        eprintln!("{target}: {ok} of {n} files of {} accepted", dir.display());
    }
    assert!(
        accepted_mutations > 0 && accepted_mutations < mutations,
        "{target}: {accepted_mutations} of {mutations} mutations accepted: they do not exercise both outcomes"
    );
}

const YAML_TOKENS: &[&[u8]] = &[
    b"\n- ",
    b": ",
    b"{}",
    b"[]",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!str ",
    b"---\n",
    b"? ",
    b"~",
    b"null",
    b"true",
    b"\"\\u0000\"",
    b" # c\n",
    b"\n  ",
    b"id: x",
    b"root",
    b"everyone",
    b"{folder: root}",
    b"{person: alice}",
    b"allow: [All]",
    b"parent: root",
    b"members: [alice]",
    b"-1",
    b"18446744073709551616",
];

#[test]
fn tenant_yaml_corpus_and_mutations() {
    exercise("tenant_yaml", targets::tenant_yaml::run, 2000, YAML_TOKENS);
}

#[test]
fn proto_mutations_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[b"\x12\x04alice", b"\x0a\x04fuzz", b"\x08\x01", b"\x10\xff\xff\xff\xff\x0f", b"\x00", b""];
    exercise("proto_mutations", targets::proto_mutations::run, 4000, tokens);
}

#[test]
fn page_token_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[b"MTo", b"OjE", b"fA", b"=", b"-", b"_", b"+", b"/", b"AAAA", b"%3D"];
    exercise("page_token", targets::page_token::run, 4000, tokens);
}

#[test]
fn config_file_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[
        b"\nlisten: ",
        b"\nstore: ",
        b"\ndemo: true",
        b"\nadmin-token: ",
        b"\nmax_batch: ",
        b"\ntls-cert: ",
        b"\nfollow: http://",
        b"\ndecision-log: ",
        b"\ncors-allowed-origin: [",
        b"0",
        b"-1",
        b"[]",
        b"{}",
        b"~",
        b"1e400",
        b"0.5",
    ];
    exercise("config_file", targets::config_file::run, 2000, tokens);
}

/// Writes the generated seeds of `fuzz/corpus/proto_mutations/` (encoded
/// `WriteRequest`s): `cargo test --test fuzz_corpus -- --ignored write_proto_seeds`.
#[test]
#[ignore = "writes the corpus; run by hand after changing the seeds"]
fn write_proto_seeds() {
    use authzd::model::{Mutation, TenantFile};
    use authzd::proto::authzd::v1 as pb;
    use authzd::service::convert;
    use prost::Message as _;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/proto_mutations");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, tenant: &str, mutations: Vec<Mutation>, actor: Option<&str>| {
        let req = pb::WriteRequest {
            tenant: tenant.to_owned(),
            mutations: mutations.into_iter().map(convert::mutation_pb).collect(),
            actor: actor.map(str::to_owned),
            ..Default::default()
        };
        std::fs::write(dir.join(name), req.encode_to_vec()).unwrap();
    };
    let batch = |yaml: &str| -> Vec<Mutation> { authzd::model::yaml::from_str(yaml, "seed").unwrap() };
    // Creating a tenant: the base tenant's own batch, under another id.
    let base = TenantFile::from_yaml(targets::BASE_TENANT_YAML).unwrap().to_mutations().unwrap();
    write("create-base-as-new", "new", base, None);
    write(
        "create-small",
        "small",
        batch("[{create_tenant: {name: Small, presets: [], defaults: true}}, {set_restricted_mode: {on: true}}]"),
        None,
    );
    let edits: [(&str, &str, Option<&str>); 12] = [
        ("put-person", "[{put_person: {id: erin, username: erin, folder: Persons, properties: {team: red}}}]", None),
        ("delete-person", "[{delete_person: {id: alice}}]", None),
        (
            "group-members",
            "[{add_group_member: {group: clerks, person: dave}}, {remove_group_member: {group: clerks, person: bob}}]",
            None,
        ),
        (
            "roles",
            "[{assign_role: {role: viewer, to: {person: dave}}}, {unassign_role: {role: refunder, from: {person: alice}}}, {put_role: {id: r2, name: R2, privileges: {Callback: [Callback - View]}}}]",
            None,
        ),
        (
            "folders",
            "[{put_folder: {id: reports/new, name: New, parent: reports}}, {move_object: {target: {object: {type: Report, id: daily}}, folder: reports/new}}]",
            None,
        ),
        ("delete-folder", "[{delete_object: {type: Report, id: payroll}}, {delete_folder: {id: reports/old}}]", None),
        (
            "aces",
            "[{put_ace: {target: {folder: root}, subject: {person: dave}, allow: [Read], deny: [Delete], propagate: true}}, {delete_ace: {target: {folder: reports}, subject: {group: clerks}}}]",
            None,
        ),
        (
            "objects-partitions",
            "[{put_partition: {id: us, name: US, members: [bob]}}, {put_object: {type: Report, id: weekly, name: Weekly, folder: reports, partitions: [us], properties: {secret: x}}}]",
            None,
        ),
        (
            "catalog",
            "[{put_catalog: {name: Shop, privileges: [{name: Shop - Sell, permission: Change}, {name: Shop - Refund, requires: [Shop - Sell]}], roles: [{name: Seller, privileges: [Shop - Sell]}]}}, {delete_catalog: {name: Orders}}]",
            None,
        ),
        (
            "queue-rename",
            "[{provision_virtual_queue: {queue: Sales_VQ}}, {rename_tenant: {name: Fuzz Two}}, {set_restricted_mode: {on: true}}]",
            None,
        ),
        ("actor-edit", "[{put_object: {type: Report, id: monthly, name: Monthly, folder: reports}}]", Some("dave")),
        (
            "delete-group",
            "[{delete_group: {id: clerks}}, {delete_partition: {id: eu}}, {delete_role: {id: viewer}}]",
            Some("alice"),
        ),
    ];
    for (name, yaml, actor) in edits {
        let mutations = batch(yaml);
        // Seeds that reach the end of the body: valid edits of the base tenant.
        if let Err(e) = targets::base().config.apply_batch(&mutations) {
            panic!("seed {name} does not apply to the base tenant: {e}");
        }
        write(name, "fuzz", mutations, actor);
    }
}
