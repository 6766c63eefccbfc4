//! What the Unix socket's `:authority` fix (`src/authority.rs`) costs per
//! request, without a server: the client→server bytes of 1,000 unary gRPC
//! calls on one connection (a grpcio-like header block, its dynamic table
//! warm after the first call, and a 60-byte DATA frame each) fed through a
//! connection's `Rewriter`:
//!
//! - `valid`: the client sends `:authority: localhost` (authzd's own CLI and
//!   bench): each block is decoded and passed on byte for byte;
//! - `socket_path`: the client sends the percent-encoded socket path
//!   (grpcio): each block is decoded, rewritten and re-encoded;
//! - `copy`: the same bytes only copied once, the floor of any wrapper.
//!
//! Run: `cargo bench --bench authority` (criterion; per 1,000 calls). The
//! end-to-end figure is `authzd bench` over the socket with
//! `AUTHZD_UNIX_AUTHORITY_FIX` on and off (README, "Over the Unix socket").
#![allow(missing_docs)] // criterion_group! generates an undocumented function
#![allow(clippy::panic)] // a bench whose input does not go through stops

/// The allocator the server binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use authzd::authority::Rewriter;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CALLS: u32 = 1_000;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The client's bytes of `CALLS` Check calls with this authority.
fn connection(authority: &str) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut out = PREFACE.to_vec();
    frame(&mut out, 0x4, 0, 0, &[0, 2, 0, 0, 0, 0]); // SETTINGS: ENABLE_PUSH 0
    for i in 0..CALLS {
        let stream = 1 + 2 * i;
        let headers: [(&[u8], &[u8]); 9] = [
            (b":scheme", b"http"),
            (b":method", b"POST"),
            (b":authority", authority.as_bytes()),
            (b":path", b"/authzd.v1.DecisionService/Check"),
            (b"te", b"trailers"),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-python/1.85.3 grpc-c/52.0.0 (linux; chttp2)"),
            (b"grpc-accept-encoding", b"identity, deflate, gzip"),
            (b"grpc-timeout", b"10S"),
        ];
        let block = encoder.encode(headers.iter().copied());
        frame(&mut out, 0x1, 0x4, stream, &block); // HEADERS, END_HEADERS
        frame(&mut out, 0x0, 0x1, stream, &[0u8; 60]); // DATA, END_STREAM
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("authority");
    g.throughput(Throughput::Elements(u64::from(CALLS)));
    for (name, authority) in [("valid", "localhost"), ("socket_path", "%2Frun%2Fauthzd%2Fauthzd.sock")] {
        let bytes = connection(authority);
        g.bench_function(name, |b| {
            b.iter_batched(
                Rewriter::new,
                |mut r| {
                    // As the socket delivers them: 16 KiB reads.
                    for piece in bytes.chunks(16 * 1024) {
                        r.feed(piece).unwrap_or_else(|e| panic!("the rewriter refused the input: {e}"));
                        let n = r.output().len();
                        r.consume_output(n);
                    }
                    assert_eq!(r.rewritten(), if authority == "localhost" { 0 } else { u64::from(CALLS) });
                    r
                },
                BatchSize::SmallInput,
            );
        });
    }
    let bytes = connection("localhost");
    g.bench_function("copy", |b| {
        let mut out = Vec::with_capacity(16 * 1024);
        b.iter(|| {
            for piece in bytes.chunks(16 * 1024) {
                out.clear();
                out.extend_from_slice(piece);
                std::hint::black_box(&out);
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
