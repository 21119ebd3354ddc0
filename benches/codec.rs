//! Frame encode and decode: a typical `msg` event (encoded once per message by the room) and a
//! typical `send` request (decoded once per request by the connection).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use chatnode::protocol::frame::{Id, MessageKind, ServerFrame};
use chatnode::protocol::{decode_request, encode};

/// The node's allocator, so the bench measures what the node runs (see [`chatnode::Allocator`]).
#[global_allocator]
static ALLOCATOR: chatnode::Allocator = chatnode::Allocator;

fn send_frame() -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Send<'a> {
        t: &'a str,
        r: u32,
        group: &'a str,
        room: &'a str,
        kind: &'a str,
        text: &'a str,
        cmid: &'a str,
    }
    rmp_serde::to_vec_named(&Send {
        t: "send",
        r: 1234,
        group: "acme-corp",
        room: "general",
        kind: "text",
        text: "Hey team, the deploy is done. Let me know if anything looks off on your side!",
        cmid: "9f1c2e7a-5b7d-4c1e-9a55-2f0d6b1e8c3a",
    })
    .expect("encode")
}

fn codec(c: &mut Criterion) {
    let text = "Hey team, the deploy is done. Let me know if anything looks off on your side!";
    let msg = || ServerFrame::Msg {
        group: "acme-corp",
        room: "general",
        id: Id(382_714_054_050_840_576),
        from: "alice",
        kind: MessageKind::Text,
        text: Some(text),
        media: None,
        ts: 1_795_313_340_969,
        unread: 7,
        cmid: Some("9f1c2e7a-5b7d-4c1e-9a55-2f0d6b1e8c3a"),
    };
    let request = send_frame();
    let encoded = encode(&msg());
    c.bench_function("encode msg frame", |b| b.iter(|| encode(black_box(&msg()))));
    c.bench_function("decode send request", |b| {
        b.iter(|| decode_request(black_box(&request), 16 * 1024))
    });
    c.bench_function("encode msg + decode send", |b| {
        b.iter(|| {
            let bytes = encode(black_box(&msg()));
            let request = decode_request(black_box(&request), 16 * 1024);
            (bytes, request)
        })
    });
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct MsgFrame<'a> {
        t: &'a str,
        group: &'a str,
        room: &'a str,
        id: u64,
        from: &'a str,
        kind: &'a str,
        text: Option<&'a str>,
        ts: i64,
        unread: u32,
        cmid: Option<&'a str>,
    }
    c.bench_function("decode msg frame (typed, as a client does)", |b| {
        b.iter(|| rmp_serde::from_slice::<MsgFrame<'_>>(black_box(&encoded)).map(|m| m.id))
    });
    c.bench_function("encode + decode msg frame", |b| {
        b.iter(|| {
            let bytes = encode(black_box(&msg()));
            rmp_serde::from_slice::<MsgFrame<'_>>(&bytes).map(|m| m.id)
        })
    });
    c.bench_function("decode msg frame (generic rmpv::Value)", |b| {
        b.iter(|| rmpv::decode::read_value(&mut black_box(&encoded[..])))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
