//! Slow and stalled clients: a request body or head that trickles in gets 408 with a
//! JSON error within its deadline while other clients are served; WebSocket and SSE readers
//! that stop reading are closed within the grace, the node's memory stays bounded (RSS of the
//! real node process) and fast readers get every message.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::errors::node_holds_connection;
use crate::helpers::{TestClient, TestNode, token};

const G: &str = "team";

/// The node's resident memory in KiB (VmRSS of /proc/<pid>/status).
fn rss_kib(node: &TestNode) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Reads a whole HTTP answer (the server closes after it or sends `Content-Length` bytes):
/// its status and body. `None` when the socket ends without one.
pub(crate) async fn read_answer(socket: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = text.get(9..12)?.parse().ok()?;
                return Some((status, text[end + 4..end + 4 + length].to_owned()));
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, socket.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Sends `head`, then `body_bytes` bytes one at a time every `every`, until the server
/// answers; returns the answer and how long it took.
async fn trickle(
    node: &TestNode,
    head: String,
    every: Duration,
) -> (Option<(u16, String)>, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(node.addr).await.expect("connect");
    socket.write_all(head.as_bytes()).await.expect("head");
    let (mut read, mut write) = socket.into_split();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut rejoined = Vec::new();
    let answer = loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(30), read.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                rejoined.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&rejoined).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let body = &text[end + 4..];
                    if serde_json::from_str::<Value>(body).is_ok() || body.is_empty() && n == 0 {
                        break Some((text[9..12].parse().expect("status"), body.to_owned()));
                    }
                }
            }
            _ => {
                let text = String::from_utf8_lossy(&rejoined).to_string();
                break text.find("\r\n\r\n").map(|end| {
                    (
                        text[9..12].parse().expect("status"),
                        text[end + 4..].to_owned(),
                    )
                });
            }
        }
    };
    writer.abort();
    (answer, started.elapsed())
}

/// A normal client is answered at once while slow ones are being received.
async fn served_meanwhile(node: &TestNode) {
    let started = Instant::now();
    let (status, _) = node
        .rest(&token("alice"))
        .get(&format!("/v1/groups/{G}/rooms"))
        .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

fn json_post(declared: usize) -> String {
    format!(
        "POST /v1/groups/{G}/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n[",
        token("alice")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_json_bodies_get_408_and_memory_stays_bounded() {
    let node = TestNode::spawn(&[("CHATNODE_LIMIT_HTTP_BODY_SECS", "4")]);
    served_meanwhile(&node).await;
    let before = rss_kib(&node);
    // 200 bodies that declare 260,000 bytes and send a byte every 500 ms.
    let mut sockets = Vec::new();
    for _ in 0..200 {
        let mut socket = TcpStream::connect(node.addr).await.expect("connect");
        socket
            .write_all(json_post(260_000).as_bytes())
            .await
            .expect("head");
        sockets.push(socket);
    }
    let started = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for socket in &mut sockets {
            let _ = socket.write_all(b" ").await;
        }
    }
    let during = rss_kib(&node);
    served_meanwhile(&node).await;
    eprintln!("rss before {before} KiB, with 200 slow bodies {during} KiB");
    assert!(
        during < before + 24 * 1024,
        "200 slow bodies cost {} KiB",
        during - before
    );
    // Every one is answered with 408 and the JSON error once the deadline passes.
    for socket in &mut sockets {
        let answer = read_answer(socket, Duration::from_secs(10)).await;
        let (status, body) = answer.expect("an answer");
        assert_eq!(status, 408, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON error");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
}

#[tokio::test]
async fn slow_uploads_get_408_within_their_deadline() {
    let node = TestNode::spawn(&[
        ("CHATNODE_LIMIT_HTTP_BODY_SECS", "2"),
        ("CHATNODE_LIMIT_UPLOAD_MIN_RATE", "65536"),
    ]);
    node.rest(&token("alice")).create_room(G, "up", &[]).await;
    // 260,000 bytes at 64 KiB/s at least: about 4 s, plus the 2 s of every body.
    let head = format!(
        "POST /v1/groups/{G}/rooms/up/media HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 260000\r\n\r\n",
        token("alice")
    );
    let trickling = trickle(&node, head, Duration::from_millis(300));
    let ((answer, took), ()) = tokio::join!(trickling, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        served_meanwhile(&node).await;
    });
    let (status, body) = answer.expect("an answer");
    assert_eq!(status, 408, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test]
async fn slow_heads_get_408_and_others_are_served() {
    let node = TestNode::spawn(&[]);
    let head = format!("GET /v1/groups/{G}/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
    let trickling = trickle(&node, head, Duration::from_millis(300));
    let ((answer, took), ()) = tokio::join!(trickling, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        served_meanwhile(&node).await;
    });
    let (status, body) = answer.expect("an answer");
    assert_eq!(status, 408);
    let body: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// Sends `n` messages of `size` bytes as alice, with at most ten unacknowledged.
async fn flood(alice: TestClient, room: &str, n: u64, size: usize) {
    let (mut tx, mut rx) = alice.ws.split();
    let (acked_tx, mut acked) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut sent = 0u64;
        while let Some(Ok(message)) = rx.next().await {
            if let Message::Binary(bytes) = message {
                let frame: Value = rmp_serde::from_slice(&bytes).expect("frame");
                if frame["t"] == "sent" {
                    sent += 1;
                    let _ = acked_tx.send(sent);
                }
            }
        }
    });
    let text = "f".repeat(size);
    for i in 0..n {
        let frame = json!({"t": "send", "group": G, "room": room, "kind": "text", "text": text, "cmid": format!("f{i}")});
        let bytes = rmp_serde::to_vec_named(&frame).expect("encode");
        tx.send(Message::Binary(bytes.into())).await.expect("send");
        if i >= 10 {
            tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|a| *a >= i - 10))
                .await
                .expect("acks keep coming")
                .expect("reader alive");
        }
    }
    tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|a| *a >= n))
        .await
        .expect("all acks")
        .expect("reader alive");
    reader.abort();
}

/// Waits until the node holds none of `ports` (client ports of its connections).
async fn let_go(node: &TestNode, ports: &[u16], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let held: Vec<_> = ports
            .iter()
            .filter(|p| node_holds_connection(node.pid(), node.addr.port(), **p))
            .collect();
        if held.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still held: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Floods `room` as alice past stalled readers (client `ports`) and a fast one (counting its
/// `msg`s): the fast one gets every message, the stalled ones are let go of within the 10 s
/// grace, and the node's memory grows by less than 48 MiB.
async fn flood_past(
    node: &TestNode,
    room: &str,
    fast_reader: tokio::task::JoinHandle<u64>,
    ports: &[u16],
) {
    let mut alice = node.connect("alice").await;
    alice.enter(G, room).await;
    let before = rss_kib(node);
    flood(alice, room, FLOOD, SIZE).await;
    let after = rss_kib(node);
    eprintln!("{room}: rss before {before} KiB, after the flood {after} KiB");
    assert_eq!(fast_reader.await.expect("fast reader"), FLOOD);
    let_go(node, ports, Duration::from_secs(15)).await;
    assert!(
        after < before + 48 * 1024,
        "the flood cost {} KiB",
        after - before
    );
}

/// A node whose connections queue at most 64 frames, and `room` with alice, `fast` and the
/// stalled members, whose names it returns.
async fn stalled_room(room: &str) -> (TestNode, Vec<String>) {
    let node = TestNode::spawn(&[("CHATNODE_LIMIT_OUTBOUND_QUEUE", "64")]);
    let members: Vec<String> = (0..STALLED).map(|i| format!("s{i}")).collect();
    let mut all: Vec<&str> = members.iter().map(String::as_str).collect();
    all.push("fast");
    node.rest(&token("alice")).create_room(G, room, &all).await;
    (node, members)
}

const STALLED: usize = 10;
const FLOOD: u64 = 400;
const SIZE: usize = 16_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_websockets_are_closed_and_fast_readers_get_everything() {
    let (node, members) = stalled_room("ws").await;
    let mut stalled = Vec::new();
    let mut ports = Vec::new();
    for user in &members {
        let mut c = node.connect(user).await;
        c.enter(G, "ws").await;
        if let tokio_tungstenite::MaybeTlsStream::Plain(s) = c.ws.get_ref() {
            ports.push(s.local_addr().expect("addr").port());
        }
        stalled.push(c);
    }
    let mut fast = node.connect("fast").await;
    fast.enter(G, "ws").await;
    let fast_reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < FLOOD {
            let frame = fast.recv().await;
            if frame["t"] == "msg" {
                got += 1;
            }
        }
        got
    });
    flood_past(&node, "ws", fast_reader, &ports).await;
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sse_streams_are_closed_and_fast_readers_get_everything() {
    let (node, members) = stalled_room("sse").await;
    // Stalled streams: the request is sent and nothing is ever read.
    let mut stalled = Vec::new();
    let mut ports = Vec::new();
    for user in &members {
        let mut socket = TcpStream::connect(node.addr).await.expect("connect");
        let request = format!(
            "GET /v1/groups/{G}/rooms/sse/events?token={} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            token(user)
        );
        socket.write_all(request.as_bytes()).await.expect("request");
        // Read up to the stream's first event (it is attached then), and never again.
        let mut got = Vec::new();
        while !got.windows(5).any(|w| w == b"retry") {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk))
                .await
                .expect("the stream starts")
                .expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        ports.push(socket.local_addr().expect("addr").port());
        stalled.push(socket);
    }
    // The fast stream reads everything.
    let resp = reqwest::Client::new()
        .get(node.http(&format!(
            "/v1/groups/{G}/rooms/sse/events?token={}",
            token("fast")
        )))
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let fast_reader = tokio::spawn(async move {
        let mut text = String::new();
        let mut got = 0u64;
        while got < FLOOD {
            let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
                .await
                .expect("events keep coming")
                .expect("open")
                .expect("chunk");
            text.push_str(std::str::from_utf8(&chunk).expect("utf8"));
            while let Some(end) = text.find("\n\n") {
                if text[..end].contains("event: msg") {
                    got += 1;
                }
                text.drain(..end + 2);
            }
        }
        got
    });
    flood_past(&node, "sse", fast_reader, &ports).await;
    drop(stalled);
}
