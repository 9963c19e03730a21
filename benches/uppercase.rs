//! The uppercasing alone, per byte: ASCII (the fast path, in place) and mixed-script text (the
//! full Unicode mapping), each next to `str::to_uppercase` for scale.
//!
//! Run: `cargo bench --bench uppercase`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use formatdata::uppercase::uppercase;

fn inputs() -> [(&'static str, String); 2] {
    let ascii = "hello, world! the quick brown fox jumps over the lazy dog. ".repeat(64);
    let mixed = "straße ﬁne αβγ привет բարեւ 日本語 😀 hello ".repeat(64);
    [("ascii", ascii), ("mixed-script", mixed)]
}

fn bench(c: &mut Criterion) {
    for (name, text) in inputs() {
        let mut group = c.benchmark_group(format!("uppercase/{name}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        // The service owns the request's text, so cloning it is not part of the cost measured.
        group.bench_function("formatdata", |b| {
            b.iter_batched(
                || text.clone(),
                |text| black_box(uppercase(text)),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("str::to_uppercase", |b| {
            b.iter(|| black_box(black_box(text.as_str()).to_uppercase()))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
