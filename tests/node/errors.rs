//! Bad input over WebSocket (docs/protocol.md §3.6): every error code a client can provoke, garbage
//! frames, text frames, the frame limit (1009), the rate limit (and 4009), the slow-consumer close
//! (4008), letting go of a client that never reads again, and the 401 before any upgrade. After an
//! `err` the connection stays usable.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Closed, TestClient, TestNode, token, token_with};

const G: &str = "team";

async fn assert_usable(client: &mut TestClient) {
    assert_eq!(client.call(json!({"t": "ping"})).await["t"], "pong");
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays() {
    let node = TestNode::spawn(&[]);
    let mut c = node.connect("alice").await;
    c.send_raw(Message::Binary(vec![0xc1, 0x00, 0xff].into()))
        .await;
    assert_eq!(c.recv().await["code"], "bad_frame");
    c.send_raw(Message::Binary(
        rmp_serde::to_vec(&[1, 2, 3]).expect("encode").into(),
    ))
    .await;
    assert_eq!(c.recv().await["code"], "bad_frame");
    c.send_raw(Message::Text("{\"t\":\"ping\"}".into())).await;
    assert_eq!(c.recv().await["code"], "bad_frame");
    c.send(json!({"r": 4, "group": G})).await;
    let err = c.recv().await;
    assert_eq!(
        (err["t"].as_str(), err["code"].as_str(), err["r"].as_u64()),
        (Some("err"), Some("bad_frame"), Some(4))
    );
    let err = c.call(json!({"t": "dance"})).await;
    assert_eq!(err["code"], "unknown_type");
    let err = c.call(json!({"t": "enter", "group": G})).await;
    assert_eq!(err["code"], "bad_request");
    let err = c.call(json!({"t": "enter", "group": 7, "room": "r"})).await;
    assert_eq!(err["code"], "bad_request");
    let err = c
        .call(json!({"t": "enter", "group": "no/slash", "room": "r"}))
        .await;
    assert_eq!(err["code"], "bad_request");
    let err = c
        .call(json!({"t": "history", "group": G, "room": "r", "limit": 0}))
        .await;
    assert_eq!(err["code"], "bad_request");
    let err = c
        .call(json!({"t": "send", "group": G, "room": "r", "kind": "text", "text": "x"}))
        .await;
    assert_eq!(err["code"], "bad_request", "cmid is required");
    let err = c.call(json!({"t": "send", "group": G, "room": "r", "kind": "sticker", "text": "x", "cmid": "c"})).await;
    assert_eq!(err["code"], "bad_request");
    let err = c
        .call(json!({"t": "send", "group": G, "room": "r", "kind": "image", "cmid": "c"}))
        .await;
    assert_eq!(err["code"], "bad_request", "media is required for images");
    let err = c
        .call(json!({"t": "send", "group": G, "room": "r", "kind": "text", "text": "x".repeat(16385), "cmid": "c"}))
        .await;
    assert_eq!(err["code"], "too_large");
    // Unknown keys are ignored.
    let pong = c.call(json!({"t": "ping", "whatever": [1, 2]})).await;
    assert_eq!(pong["t"], "pong");
    assert_usable(&mut c).await;
}

#[tokio::test]
async fn access_errors() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "private", &[])
        .await;
    let mut mallory = node.connect("mallory").await;
    for frame in [
        json!({"t": "enter", "group": G, "room": "private"}),
        json!({"t": "send", "group": G, "room": "private", "kind": "text", "text": "x", "cmid": "c"}),
        json!({"t": "history", "group": G, "room": "private"}),
        json!({"t": "read", "group": G, "room": "private", "id": 1}),
        json!({"t": "typing", "group": G, "room": "private"}),
    ] {
        let err = mallory.call(frame.clone()).await;
        assert_eq!(err["code"], "forbidden", "{frame}");
    }
    let err = mallory
        .call(json!({"t": "enter", "group": G, "room": "nowhere"}))
        .await;
    assert_eq!(err["code"], "not_found");
    let err = mallory
        .call(json!({"t": "send", "group": G, "room": "nowhere", "kind": "text", "text": "x", "cmid": "c"}))
        .await;
    assert_eq!(err["code"], "not_found");
    assert_usable(&mut mallory).await;
    // A token limited to other groups is refused here.
    let limited = token_with("alice", 600, Some(vec!["elsewhere".into()]));
    let mut alice = TestClient::connect(&node, &limited).await;
    let err = alice
        .call(json!({"t": "enter", "group": G, "room": "private"}))
        .await;
    assert_eq!(err["code"], "forbidden");
    let err = alice.call(json!({"t": "sub", "group": G})).await;
    assert_eq!(err["code"], "forbidden");
}

#[tokio::test]
async fn media_kinds_need_an_existing_media_id() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice")).create_room(G, "m", &[]).await;
    let mut alice = node.connect("alice").await;
    let err = alice
        .call(json!({"t": "send", "group": G, "room": "m", "kind": "image", "media": "nope", "cmid": "c"}))
        .await;
    assert_eq!(err["code"], "not_found");
}

#[tokio::test]
async fn unauthenticated_upgrades_get_401() {
    let node = TestNode::spawn(&[]);
    for url in [node.ws_url(), format!("{}?token=garbage", node.ws_url())] {
        let err = tokio_tungstenite::connect_async(url)
            .await
            .expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
            other => panic!("expected an HTTP 401, got {other:?}"),
        }
    }
    // An expired token too.
    let claims = serde_json::json!({"sub": "alice", "exp": 1_000_000});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    )
    .expect("encode");
    let err = tokio_tungstenite::connect_async(format!("{}?token={expired}", node.ws_url()))
        .await
        .expect_err("refused");
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 401));
    // A token in the query string works.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}?token={}", node.ws_url(), token("alice")))
            .await
            .expect("accepted");
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn oversize_frames_close_with_1009() {
    let node = TestNode::spawn(&[
        ("CHATNODE_LIMIT_FRAME", "4096"),
        ("CHATNODE_LIMIT_TEXT", "1024"),
    ]);
    let mut c = node.connect("alice").await;
    assert_eq!(c.hello["limits"]["frame"], 4096);
    c.send(json!({"t": "ping", "pad": "x".repeat(5000)})).await;
    assert_eq!(c.closed(Duration::from_secs(5)).await, Closed::Code(1009));
}

#[tokio::test]
async fn rate_limit_then_abuse_close() {
    let node = TestNode::spawn(&[
        ("CHATNODE_LIMIT_RATE", "5"),
        ("CHATNODE_LIMIT_BURST", "5"),
        ("CHATNODE_LIMIT_ABUSE", "20"),
    ]);
    let mut c = node.connect("alice").await;
    for _ in 0..5 {
        assert_eq!(c.call(json!({"t": "ping"})).await["t"], "pong");
    }
    let limited = c.call(json!({"t": "ping"})).await;
    assert_eq!(limited["code"], "rate_limited");
    // Keep hammering: past the abuse threshold the node closes with 4009.
    for _ in 0..40 {
        c.send(json!({"t": "ping"})).await;
    }
    assert_eq!(c.closed(Duration::from_secs(5)).await, Closed::Code(4009));
}

/// Whether the node (process `pid`, listening on `node_port`) still holds its end of the TCP
/// connection that comes from `client_port`: the connection's inode, from /proc/net/tcp, among
/// the node's descriptors. (A socket the node has let go of may live on in the kernel for a
/// while, sending what it holds, but no longer as the node's.)
pub(crate) fn node_holds_connection(pid: u32, node_port: u16, client_port: u16) -> bool {
    let port = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && port(f[1]) == Some(node_port) && port(f[2]) == Some(client_port))
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the node's descriptors")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .any(|target| {
            inodes
                .iter()
                .any(|inode| target.to_string_lossy() == *inode)
        })
}

/// A node whose connections queue at most 64 frames, and its room `flood`, which bob and then
/// alice have entered.
async fn flood_room() -> (TestNode, TestClient, TestClient) {
    let node = TestNode::spawn(&[("CHATNODE_LIMIT_OUTBOUND_QUEUE", "64")]);
    node.rest(&token("alice"))
        .create_room(G, "flood", &["bob"])
        .await;
    let mut bob = node.connect("bob").await;
    bob.enter(G, "flood").await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "flood").await;
    (node, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_again_is_let_go() {
    let (node, mut alice, bob) = flood_room().await;
    let port_of = |client: &TestClient| match client.ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(stream) => {
            stream.local_addr().expect("local address").port()
        }
        _ => panic!("a plain TCP connection"),
    };
    let (bob_port, alice_port) = (port_of(&bob), port_of(&alice));
    let holds = |port| node_holds_connection(node.pid(), node.addr.port(), port);
    assert!(
        holds(bob_port) && holds(alice_port),
        "both connections are found"
    );
    // Bob stops reading for good; his socket's buffers fill, then his queue overflows, and
    // his connection ends with a close frame the node can never write.
    let text = "f".repeat(16_000);
    for i in 0..1000u64 {
        alice.say(G, "flood", &text, &format!("f{i}")).await;
    }
    // Ten seconds after the end (the writer's grace for a socket that does not drain), the
    // node lets go of bob's socket and keeps alice's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while holds(bob_port) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node still holds bob's socket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(holds(alice_port), "the node keeps alice's socket");
    assert_usable(&mut alice).await;
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_4008() {
    let (_node, alice, mut bob) = flood_room().await;
    // Alice reads everything she is sent on her own task and sends with a window of ten
    // unacknowledged messages, so only bob is slow.
    let (mut alice_tx, mut alice_rx) = alice.ws.split();
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut frames = 0u64; // `msg` frames
        let mut sent = 0u64;
        while let Some(Ok(message)) = alice_rx.next().await {
            if let Message::Binary(bytes) = message {
                let frame: serde_json::Value = rmp_serde::from_slice(&bytes).expect("frame");
                if frame["t"] == "msg" {
                    frames += 1;
                }
                if frame["t"] == "sent" {
                    sent += 1;
                    let _ = acked_tx.send(sent);
                }
                if frame["t"] == "pong" {
                    break;
                }
            }
        }
        frames
    });
    let text = "f".repeat(16_000);
    for i in 0..1000u64 {
        let frame = json!({"t": "send", "group": G, "room": "flood", "kind": "text", "text": text, "cmid": format!("f{i}")});
        let bytes = rmp_serde::to_vec_named(&frame).expect("encode");
        alice_tx
            .send(Message::Binary(bytes.into()))
            .await
            .expect("alice sends");
        if i >= 10 {
            tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|n| *n >= i - 10))
                .await
                .expect("acks keep coming")
                .expect("reader alive");
        }
    }
    // Bob reads again: his backlog, then the close frame.
    assert_eq!(
        bob.closed(Duration::from_secs(30)).await,
        Closed::Code(4008)
    );
    // Alice was never cut off: everything she was sent arrives, then the pong.
    tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|n| *n >= 1000))
        .await
        .expect("all acks")
        .expect("reader alive");
    let ping = rmp_serde::to_vec_named(&json!({"t": "ping"})).expect("encode");
    alice_tx
        .send(Message::Binary(ping.into()))
        .await
        .expect("alice is still connected");
    let frames = reader.await.expect("reader");
    assert_eq!(frames, 1000, "alice got every msg: {frames}");
}

#[tokio::test]
async fn token_expiry_closes_with_4001() {
    let node = TestNode::spawn(&[("CHATNODE_AUTH_LEEWAY_SECS", "0")]);
    let short = token_with("alice", 2, None);
    let mut c = TestClient::connect(&node, &short).await;
    let started = std::time::Instant::now();
    assert_eq!(c.closed(Duration::from_secs(8)).await, Closed::Code(4001));
    assert!(started.elapsed() <= Duration::from_secs(7));
}

#[tokio::test]
async fn silent_connections_are_dropped_after_two_heartbeats() {
    let node = TestNode::spawn(&[("CHATNODE_WS_HEARTBEAT_SECS", "1")]);
    let mut c = node.connect("alice").await;
    assert_eq!(c.hello["heartbeat"], 1);
    // Without reading, the client never answers pings; after about two heartbeats the node
    // drops it. Reading afterwards sees the end of the connection.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ended = c.closed(Duration::from_secs(5)).await;
    assert!(matches!(ended, Closed::NoCode | Closed::Code(_)));
    // A client that keeps reading (and so answers pings) stays.
    let mut d = node.connect("bob").await;
    d.expect_silence(Duration::from_millis(3500), &[]).await;
    assert_usable(&mut d).await;
}

/// One HTTP exchange on a fresh socket: writes `request`, reads until the server closes or
/// the head and `Content-Length` bytes of body are in.
pub(crate) async fn raw_exchange(node: &TestNode, request: &[u8]) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    socket.write_all(request).await.expect("write");
    crate::slow_clients::read_answer(&mut socket, crate::helpers::WAIT)
        .await
        .expect("an answer in time")
}

pub(crate) fn handshake(path: &str, method: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test]
async fn upgrades_elsewhere_are_refused_with_json_errors() {
    let node = TestNode::spawn(&[]);
    let with_token = format!("/v1/ws?token={}", token("alice"));
    // A handshake on another path, or with another method.
    let (status, body) = raw_exchange(&node, handshake("/v1/elsewhere", "GET").as_bytes()).await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = raw_exchange(&node, handshake(&with_token, "POST").as_bytes()).await;
    assert_eq!(status, 405);
    // A handshake without a token, and a plain GET that is no handshake.
    let (status, body) = raw_exchange(&node, handshake("/v1/ws", "GET").as_bytes()).await;
    assert_eq!(status, 401);
    assert!(body.contains("unauthorized"), "{body}");
    let plain =
        format!("GET {with_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (status, _) = raw_exchange(&node, plain.as_bytes()).await;
    assert_eq!(status, 400);
    // A handshake of another protocol version: 426 Upgrade Required (RFC 6455 §4.4).
    let bad = handshake(&with_token, "GET").replace("Version: 13", "Version: 8");
    let (status, _) = raw_exchange(&node, bad.as_bytes()).await;
    assert_eq!(status, 426);
}

#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let node = TestNode::spawn(&[]);
    // The handshake and a masked `ping` request in one write: the frame arrives in the
    // same read as the request's head and must not be lost with the HTTP buffers.
    let mut bytes = handshake(&format!("/v1/ws?token={}", token("alice")), "GET").into_bytes();
    let payload = rmp_serde::to_vec_named(&json!({"t": "ping", "r": 7})).expect("encode");
    let mask = [0x11, 0x22, 0x33, 0x44];
    bytes.extend_from_slice(&[0x82, 0x80 | u8::try_from(payload.len()).expect("short")]);
    bytes.extend_from_slice(&mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut socket = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    socket.write_all(&bytes).await.expect("write");
    // Read the 101's head; whatever follows it is the first WebSocket bytes.
    let mut got = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = socket.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed during the handshake");
        got.extend_from_slice(&chunk[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut ws = tokio_tungstenite::WebSocketStream::from_partially_read(
        socket,
        got[end..].to_vec(),
        Role::Client,
        None,
    )
    .await;
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let message = tokio::time::timeout(crate::helpers::WAIT, ws.next())
            .await
            .expect("frames in time")
            .expect("open")
            .expect("frame");
        if let Message::Binary(data) = message {
            let frame: serde_json::Value = rmp_serde::from_slice(&data).expect("msgpack");
            frames.push(frame);
        }
    }
    assert_eq!(frames[0]["t"], "hello");
    assert_eq!(frames[1]["t"], "pong");
    assert_eq!(frames[1]["r"], 7);
}

#[tokio::test]
async fn a_client_close_is_answered_with_1000() {
    let node = TestNode::spawn(&[]);
    let mut c = node.connect("alice").await;
    assert_usable(&mut c).await;
    c.send_raw(Message::Close(None)).await;
    assert!(matches!(
        c.closed(Duration::from_secs(5)).await,
        Closed::Code(1000)
    ));
}

/// An open WebSocket on a raw socket, past its 101, for frames no client library would send.
pub(crate) async fn raw_websocket(node: &TestNode) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    let request = handshake(&format!("/v1/ws?token={}", token("alice")), "GET");
    socket.write_all(request.as_bytes()).await.expect("write");
    // Read byte by byte up to the end of the 101's head, so no frame is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = socket.read(&mut byte).await.expect("read");
        assert!(n > 0, "closed during the handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    socket
}

/// Reads server frames (unmasked) until the close frame and returns its code; `None` when
/// the socket ends without one.
pub(crate) async fn close_code_of(socket: &mut tokio::net::TcpStream) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        // A whole frame at the front of `buf`: header, then payload.
        if buf.len() >= 2 {
            let (len, start) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&buf[2..10]);
                    (usize::try_from(u64::from_be_bytes(n)).expect("length"), 10)
                }
                126 | 127 => (usize::MAX, 0),
                n => (usize::from(n), 2),
            };
            if len != usize::MAX && buf.len() >= start + len {
                if buf[0] & 0x0f == 0x8 {
                    let payload = &buf[start..start + len];
                    return (payload.len() >= 2)
                        .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                }
                buf.drain(..start + len);
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
            .await
            .expect("the node answers in time")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A client frame, masked as RFC 6455 requires, with the first byte given as is.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first, 0x80 | u8::try_from(payload.len()).expect("short")];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn protocol_violations_close_with_1002_or_1007() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::spawn(&[]);
    let ping = rmp_serde::to_vec_named(&json!({"t": "ping"})).expect("encode");
    let mut unmasked = vec![0x82, u8::try_from(ping.len()).expect("short")];
    unmasked.extend_from_slice(&ping);
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("reserved bits", masked(0x82 | 0x40, &ping), 1002),
        ("unknown opcode", masked(0x83, &ping), 1002),
        ("unmasked frame", unmasked, 1002),
        ("continuation without a start", masked(0x80, &ping), 1002),
        (
            "text that is not UTF-8",
            masked(0x81, &[0x7b, 0xff, 0xfe, 0x7d]),
            1007,
        ),
    ];
    for (name, frame, code) in cases {
        let mut socket = raw_websocket(&node).await;
        socket.write_all(&frame).await.expect("write");
        assert_eq!(close_code_of(&mut socket).await, Some(code), "{name}");
    }
}

#[tokio::test]
async fn an_err_echoes_the_r_of_a_frame_that_did_not_parse() {
    let node = TestNode::spawn(&[]);
    let mut c = node.connect("alice").await;
    // A map of three entries with `r` first, then `t`, then a value that is no MessagePack
    // (0xc1 is never used), and one whose last entry is cut off.
    let mut bad_value = vec![0x83, 0xa1, b'r', 0x09, 0xa1, b't', 0xa4];
    bad_value.extend_from_slice(b"ping");
    bad_value.extend_from_slice(&[0xa1, b'x', 0xc1]);
    let mut cut = vec![0x83, 0xa1, b'r', 0x0a, 0xa1, b't', 0xa4];
    cut.extend_from_slice(b"ping");
    cut.extend_from_slice(&[0xa5, b'g', b'r']);
    for (frame, r) in [(bad_value, 9), (cut, 10)] {
        c.send_raw(Message::Binary(frame.into())).await;
        let err = c.recv().await;
        assert_eq!(err["t"], "err");
        assert_eq!(err["r"], r, "{err}");
    }
    assert_usable(&mut c).await;
}

#[tokio::test]
async fn enter_limits_above_200_are_treated_as_200() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice")).create_room(G, "big", &[]).await;
    let mut c = node.connect("alice").await;
    for i in 0..3 {
        c.say(G, "big", "hi", &format!("c{i}")).await;
    }
    let entered = c
        .call(json!({"t": "enter", "group": G, "room": "big", "limit": 1000}))
        .await;
    assert_eq!(entered["t"], "entered", "{entered}");
    assert_eq!(entered["msgs"].as_array().map(Vec::len), Some(3));
    for limit in [0, -1] {
        let err = c
            .call(json!({"t": "enter", "group": G, "room": "big", "limit": limit}))
            .await;
        assert_eq!(err["code"], "bad_request", "limit {limit}");
    }
}
