//! Micro-benchmarks: the frame codec and chunk hashing, the per-message and per-chunk
//! costs on the hot paths.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use qchat_shared::codec;
use qchat_shared::frame::{ChatSend, Deliver, MessageId, Open};
use qchat_shared::limits::CHUNK;

fn codec_benches(c: &mut Criterion) {
    let send = Open::Send(ChatSend { id: MessageId([1; 16]), room: "alice+bob".into(), sealed: vec![7; 200] });
    let deliver = Deliver {
        index: 42,
        id: MessageId([2; 16]),
        seq: 1234,
        room: "team".into(),
        room_seq: 77,
        from: "alice".into(),
        body: qchat_shared::frame::Body::Text("x".repeat(200)),
        time_ms: 1_700_000_000_000,
    };
    let bytes = codec::encode(&deliver).unwrap();
    c.bench_function("encode chat send", |b| b.iter(|| codec::encode(black_box(&send)).unwrap()));
    c.bench_function("decode deliver (200 B text)", |b| {
        b.iter(|| codec::decode::<Deliver>(black_box(&bytes)).unwrap())
    });
}

fn hash_benches(c: &mut Criterion) {
    let chunk = vec![0x5au8; CHUNK];
    let mut group = c.benchmark_group("blake3");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.bench_function("one chunk", |b| {
        b.iter(|| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(black_box(&chunk));
            hasher.finalize()
        })
    });
    group.finish();
}

criterion_group!(benches, codec_benches, hash_benches);
criterion_main!(benches);
