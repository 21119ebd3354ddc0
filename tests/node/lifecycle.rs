//! The node's life: restart durability (history and cursors survive), SIGTERM drain with close
//! 1001 and exit 0, and the operations endpoints.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Closed, TestNode, node_store_is_scylla, token};

const G: &str = "team";

#[tokio::test]
async fn history_and_cursors_survive_a_restart() {
    let mut node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "d", &["bob"])
        .await;
    let (ids, bob_cursor) = {
        let mut alice = node.connect("alice").await;
        let mut bob = node.connect("bob").await;
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(alice.say(G, "d", &format!("m{i}"), &format!("c{i}")).await["id"].clone());
        }
        let ok = bob
            .call(json!({"t": "read", "group": G, "room": "d", "id": ids[1]}))
            .await;
        assert_eq!(ok["t"], "ok");
        let cursor = ids[1].clone();
        (ids, cursor)
    };
    node.restart();
    let mut bob = node.connect("bob").await;
    let entered = bob.enter(G, "d").await;
    assert_eq!(entered["cursor"], bob_cursor, "bob's read cursor survived");
    let got: Vec<_> = entered["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids);
    assert_eq!(entered["msgs"][0]["text"], "m0");
    // New ids stay above the old ones after the restart.
    let mut alice = node.connect("alice").await;
    let next = alice.say(G, "d", "after", "after").await;
    assert!(next["id"].as_u64() > ids[3].as_u64());
    let (status, list) = node
        .rest(&token("alice"))
        .get(&format!("/v1/groups/{G}/rooms"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["room"], "d");
    assert_eq!(list[0]["last"]["text"], "after");
}

#[tokio::test]
async fn sigterm_drains_with_1001_and_exits_zero() {
    let mut node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "s", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.enter(G, "s").await;
    bob.enter(G, "s").await;
    let ok = bob
        .call(json!({"t": "read", "group": G, "room": "s", "id": 0}))
        .await;
    assert_eq!(ok["t"], "ok");
    alice.say(G, "s", "last words", "lw").await;
    let pid = node.pid();
    let waiter = std::thread::spawn(move || {
        let code = node.terminate();
        (code, node)
    });
    assert_eq!(
        alice.closed(Duration::from_secs(15)).await,
        Closed::Code(1001)
    );
    assert_eq!(
        bob.closed(Duration::from_secs(15)).await,
        Closed::Code(1001)
    );
    let (code, mut node) = waiter.join().expect("join");
    assert_eq!(code, Some(0), "node {pid} exits 0 after draining");
    // The message acknowledged before the drain is there after a restart.
    node.restart();
    let mut bob = node.connect("bob").await;
    let entered = bob.enter(G, "s").await;
    assert_eq!(entered["msgs"][0]["text"], "last words");
}

/// The metrics text once it contains every one of `wanted` (recorders update as the actors run,
/// so a scrape right after a reply may be a moment early), or after 5 s whatever it is.
async fn metrics_with(client: &reqwest::Client, node: &TestNode, wanted: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = client
            .get(node.http("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        if wanted.iter().all(|w| text.contains(w)) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn operations_endpoints() {
    let node = TestNode::spawn(&[]);
    let client = reqwest::Client::new();
    let health = client
        .get(node.http("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(node.http("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    node.rest(&token("alice")).create_room(G, "m", &[]).await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "m").await;
    alice.say(G, "m", "counted", "c").await;
    let metrics = metrics_with(&client, &node, &["chatnode_messages_stored_total 1"]).await;
    for name in [
        "chatnode_connections{transport=\"ws\"} 1",
        "chatnode_messages_stored_total 1",
        "chatnode_active_rooms 1",
        "chatnode_active_groups 1",
        "chatnode_present_users 1",
        "chatnode_frames_in_total{type=\"send\"} 1",
        "chatnode_frames_out_total{type=\"msg\"} 1",
        "chatnode_store_write_seconds_bucket",
        "chatnode_fanout_size_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    if node_store_is_scylla() {
        // Each ScyllaDB request is timed by operation; that store has no idempotency filter
        // (it claims every cmid with a conditional insert).
        assert!(
            metrics.contains("chatnode_store_scylla_seconds_bucket{op=\"append\""),
            "metrics lack the scylla append time:\n{metrics}"
        );
    } else {
        // The embedded store's idempotency filter ruled the new cmid out.
        let skipped = "chatnode_store_idem_lookups_total{result=\"skipped\"} 1";
        assert!(
            metrics.contains(skipped),
            "metrics lack {skipped}:\n{metrics}"
        );
        // The filter's first link, sized for a million keys, is built at start.
        let filter_bytes: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("chatnode_store_idem_filter_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no idempotency filter size:\n{metrics}"));
        assert!(filter_bytes > 1_000_000.0, "filter of {filter_bytes} bytes");
    }
    // Presence is counted down again when the user leaves.
    assert_eq!(
        alice
            .call(json!({"t": "leave", "group": G, "room": "m"}))
            .await["t"],
        "ok"
    );
    let metrics = metrics_with(&client, &node, &["chatnode_present_users 0"]).await;
    assert!(metrics.contains("chatnode_present_users 0"), "{metrics}");
    let unknown = client.get(node.http("/nope")).send().await.expect("404");
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
}
