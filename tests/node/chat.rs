//! Chat over WebSocket (docs/protocol.md §3): enter, send, fan-out, unread counts and receipts,
//! presence, typing, history, edits and deletes, idempotency, recovery, `room` events.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestNode, service_token, token};

const G: &str = "team";

#[tokio::test]
async fn hello_ping_and_enter() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "r1", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    assert_eq!(alice.hello["user"], "alice");
    assert_eq!(alice.hello["proto"], 1);
    assert_eq!(alice.hello["node"], 0);
    assert!(alice.hello["heartbeat"].as_u64().is_some_and(|h| h > 0));
    assert_eq!(alice.hello["limits"]["frame"], 65536);
    assert_eq!(alice.hello["limits"]["text"], 16384);
    assert_eq!(alice.hello["limits"]["rate"], 1000);
    let pong = alice.call(json!({"t": "ping"})).await;
    assert_eq!(pong["t"], "pong");
    let entered = alice.enter(G, "r1").await;
    assert_eq!(entered["group"], G);
    assert_eq!(entered["room"], "r1");
    assert_eq!(entered["members"], 2);
    assert_eq!(entered["present"], json!(["alice"]));
    assert_eq!(entered["cursor"], 0);
    assert_eq!(entered["msgs"], json!([]));
    assert_eq!(entered["more"], false);
}

#[tokio::test]
async fn messages_reach_present_connections_with_unread_counts() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "r1", &["bob", "carol"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let mut carol = node.connect("carol").await;
    alice.enter(G, "r1").await;
    bob.enter(G, "r1").await;
    let presence = alice.recv_type("presence").await;
    assert_eq!(presence["user"], "bob");
    assert_eq!(presence["present"], true);

    // Three members, two present: the new message is unread by one (carol).
    let sent = alice.say(G, "r1", "hello", "c-1").await;
    assert_eq!(sent["unread"], 1);
    assert_eq!(sent["cmid"], "c-1");
    let id = sent["id"].as_u64().expect("an unsigned id");
    for client in [&mut alice, &mut bob] {
        let msg = client.recv_type("msg").await;
        assert_eq!(msg["id"], id);
        assert_eq!(msg["from"], "alice");
        assert_eq!(msg["text"], "hello");
        assert_eq!(msg["unread"], 1);
        assert_eq!(msg["kind"], "text");
        assert_eq!(msg["ts"], sent["ts"]);
    }
    // Carol is a member but not present: no `msg`.
    carol.expect_silence(Duration::from_millis(300), &[]).await;

    // Carol enters: her cursor moves to the latest and everyone present gets a receipt.
    let entered = carol.enter(G, "r1").await;
    assert_eq!(entered["cursor"], 0);
    assert_eq!(entered["msgs"][0]["id"], id);
    assert_eq!(entered["msgs"][0]["unread"], 0);
    for client in [&mut alice, &mut bob, &mut carol] {
        let receipt = client.recv_type("receipt").await;
        assert_eq!(receipt["user"], "carol");
        assert_eq!(receipt["from"], 0);
        assert_eq!(receipt["to"], id);
    }
    // Now everyone is present: unread starts at zero.
    let second = bob.say(G, "r1", "hi all", "c-2").await;
    assert_eq!(second["unread"], 0);
    let second_id = second["id"].as_u64().expect("id");
    assert!(second_id > id, "ids increase within a room");
    for client in [&mut alice, &mut bob, &mut carol] {
        let msg = client.recv_type("msg").await;
        assert_eq!(msg["id"], second_id);
    }
}

#[tokio::test]
async fn read_cursors_and_receipts_for_absent_members() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "r2", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.enter(G, "r2").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let sent = alice.say(G, "r2", &format!("m{i}"), &format!("c{i}")).await;
        assert_eq!(sent["unread"], 1);
        ids.push(sent["id"].as_u64().expect("id"));
    }
    // Bob reads the first two without entering: alice sees a receipt.
    let ok = bob
        .call(json!({"t": "read", "group": G, "room": "r2", "id": ids[1]}))
        .await;
    assert_eq!(ok["t"], "ok");
    let receipt = alice.recv_type("receipt").await;
    assert_eq!(receipt["user"], "bob");
    assert_eq!(receipt["from"], 0);
    assert_eq!(receipt["to"], ids[1]);
    // History shows current counts.
    let page = alice
        .call(json!({"t": "history", "group": G, "room": "r2"}))
        .await;
    assert_eq!(page["t"], "page");
    let unread: Vec<u64> = page["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["unread"].as_u64().expect("unread"))
        .collect();
    assert_eq!(unread, vec![0, 0, 1]);
    // Reading backwards does nothing and produces no receipt.
    let ok = bob
        .call(json!({"t": "read", "group": G, "room": "r2", "id": ids[0]}))
        .await;
    assert_eq!(ok["t"], "ok");
    alice.expect_silence(Duration::from_millis(300), &[]).await;
    // Bob enters: his cursor before entering was ids[1]; a receipt covers the rest.
    let entered = bob.enter(G, "r2").await;
    assert_eq!(entered["cursor"], ids[1]);
    let receipt = alice.recv_type("receipt").await;
    assert_eq!(
        (receipt["from"].as_u64(), receipt["to"].as_u64()),
        (Some(ids[1]), Some(ids[2]))
    );
}

#[tokio::test]
async fn presence_counts_users_not_connections() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "p", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "p").await;
    let mut bob_phone = node.connect("bob").await;
    let mut bob_laptop = node.connect("bob").await;
    bob_phone.enter(G, "p").await;
    let first = alice.recv_type("presence").await;
    assert_eq!(
        (first["user"].as_str(), first["present"].as_bool()),
        (Some("bob"), Some(true))
    );
    let entered = bob_laptop.enter(G, "p").await;
    let mut present: Vec<String> = entered["present"]
        .as_array()
        .expect("present")
        .iter()
        .map(|v| v.as_str().expect("user").to_owned())
        .collect();
    present.sort();
    assert_eq!(present, vec!["alice", "bob"]);
    // The second connection of a present user changes nothing.
    alice.expect_silence(Duration::from_millis(300), &[]).await;
    let ok = bob_phone
        .call(json!({"t": "leave", "group": G, "room": "p"}))
        .await;
    assert_eq!(ok["t"], "ok");
    alice.expect_silence(Duration::from_millis(300), &[]).await;
    // Both connections receive messages while present; the one that left does not.
    alice.say(G, "p", "x", "c1").await;
    assert_eq!(bob_laptop.recv_type("msg").await["text"], "x");
    bob_phone
        .expect_silence(Duration::from_millis(300), &[])
        .await;
    // The last connection going away ends the presence.
    drop(bob_laptop);
    let gone = alice.recv_type("presence").await;
    assert_eq!(
        (gone["user"].as_str(), gone["present"].as_bool()),
        (Some("bob"), Some(false))
    );
}

#[tokio::test]
async fn idempotent_send_returns_the_first_reply() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "i", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "i").await;
    let first = alice.say(G, "i", "once", "same").await;
    assert_eq!(alice.recv_type("msg").await["id"], first["id"]);
    let again = alice.say(G, "i", "once", "same").await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["ts"], first["ts"]);
    // The resend is not broadcast again and is stored once.
    alice.expect_silence(Duration::from_millis(300), &[]).await;
    let page = alice
        .call(json!({"t": "history", "group": G, "room": "i"}))
        .await;
    assert_eq!(page["msgs"].as_array().map(Vec::len), Some(1));
    // Another user's identical cmid is a different message.
    node.rest(&token("alice"))
        .post(
            &format!("/v1/groups/{G}/rooms/i/members"),
            json!({"user": "carol"}),
        )
        .await;
    let mut bob = node.connect("bob").await;
    let bobs = bob.say(G, "i", "once", "same").await;
    assert_ne!(bobs["id"], first["id"]);
}

#[tokio::test]
async fn idempotency_survives_a_restart() {
    let mut node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "ir", &["bob"])
        .await;
    let first = {
        let mut alice = node.connect("alice").await;
        alice.say(G, "ir", "durable", "retry-me").await
    };
    node.restart();
    let mut alice = node.connect("alice").await;
    let again = alice.say(G, "ir", "durable", "retry-me").await;
    assert_eq!(again["id"], first["id"]);
    let page = alice
        .call(json!({"t": "history", "group": G, "room": "ir"}))
        .await;
    assert_eq!(page["msgs"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn recovery_with_enter_since() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "rec", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    bob.enter(G, "rec").await;
    let seen = alice.say(G, "rec", "before", "b").await;
    assert_eq!(bob.recv_type("msg").await["id"], seen["id"]);
    drop(bob);
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            alice
                .say(G, "rec", &format!("missed {i}"), &format!("m{i}"))
                .await["id"]
                .clone(),
        );
    }
    let mut bob = node.connect("bob").await;
    let entered = bob
        .call(json!({"t": "enter", "group": G, "room": "rec", "since": seen["id"], "limit": 3}))
        .await;
    assert_eq!(entered["t"], "entered");
    let got: Vec<_> = entered["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, missed[..3].to_vec());
    assert_eq!(entered["more"], true, "more newer messages remain");
    let rest = bob
        .call(json!({"t": "enter", "group": G, "room": "rec", "since": missed[2], "limit": 50}))
        .await;
    let got: Vec<_> = rest["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, missed[3..].to_vec());
    assert_eq!(rest["more"], false);
}

#[tokio::test]
async fn history_pages_backwards() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice")).create_room(G, "h", &[]).await;
    let mut alice = node.connect("alice").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            alice.say(G, "h", &format!("{i}"), &format!("c{i}")).await["id"]
                .as_u64()
                .expect("id"),
        );
    }
    let page = alice
        .call(json!({"t": "history", "group": G, "room": "h", "limit": 3}))
        .await;
    let got: Vec<u64> = page["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(got, ids[4..].to_vec(), "the latest, oldest first");
    assert_eq!(page["more"], true);
    let page = alice
        .call(json!({"t": "history", "group": G, "room": "h", "limit": 3, "before": ids[1]}))
        .await;
    let got: Vec<u64> = page["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(got, vec![ids[0]]);
    assert_eq!(page["more"], false);
    let clamped = alice
        .call(json!({"t": "history", "group": G, "room": "h", "limit": 5000}))
        .await;
    assert_eq!(clamped["t"], "page");
    assert_eq!(clamped["msgs"].as_array().map(Vec::len), Some(7));
}

#[tokio::test]
async fn typing_is_forwarded_to_others_and_throttled() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "t", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.enter(G, "t").await;
    bob.enter(G, "t").await;
    alice.recv_type("presence").await;
    alice
        .send(json!({"t": "typing", "group": G, "room": "t"}))
        .await;
    alice
        .send(json!({"t": "typing", "group": G, "room": "t"}))
        .await;
    let typing = bob.recv_type("typing").await;
    assert_eq!(typing["user"], "alice");
    // The second one within 2 s is not forwarded, and the typist hears nothing.
    bob.expect_silence(Duration::from_millis(400), &[]).await;
    alice.expect_silence(Duration::from_millis(100), &[]).await;
}

#[tokio::test]
async fn edits_and_deletes() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "e", &["bob", "carol"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.enter(G, "e").await;
    bob.enter(G, "e").await;
    let by_bob = bob.say(G, "e", "tpyo", "b1").await;
    let id = by_bob["id"].clone();
    // Only the author edits.
    let denied = alice
        .call(json!({"t": "edit", "group": G, "room": "e", "id": id, "text": "x"}))
        .await;
    assert_eq!(
        (denied["t"].as_str(), denied["code"].as_str()),
        (Some("err"), Some("forbidden"))
    );
    let ok = bob
        .call(json!({"t": "edit", "group": G, "room": "e", "id": id, "text": "typo"}))
        .await;
    assert_eq!(ok["t"], "ok");
    let edited = alice.recv_type("edited").await;
    assert_eq!(
        (edited["id"].clone(), edited["text"].as_str()),
        (id.clone(), Some("typo"))
    );
    assert!(edited["edited"].as_i64().is_some());
    // The owner may delete anyone's message; carol (a member, not the author) may not.
    let mut carol = node.connect("carol").await;
    let denied = carol
        .call(json!({"t": "delete", "group": G, "room": "e", "id": id}))
        .await;
    assert_eq!(denied["code"], "forbidden");
    let ok = alice
        .call(json!({"t": "delete", "group": G, "room": "e", "id": id}))
        .await;
    assert_eq!(ok["t"], "ok");
    assert_eq!(bob.recv_type("deleted").await["id"], id);
    let page = alice
        .call(json!({"t": "history", "group": G, "room": "e"}))
        .await;
    let tomb = &page["msgs"][0];
    assert_eq!(tomb["id"], id);
    assert_eq!(tomb["deleted"], true);
    assert!(tomb.get("text").is_none(), "the text is gone: {tomb}");
    // A deleted message cannot be edited back.
    let gone = bob
        .call(json!({"t": "edit", "group": G, "room": "e", "id": id, "text": "back"}))
        .await;
    assert_eq!(gone["code"], "not_found");
    let missing = bob
        .call(json!({"t": "delete", "group": G, "room": "e", "id": 12345}))
        .await;
    assert_eq!(missing["code"], "not_found");
}

#[tokio::test]
async fn room_events_reach_subscribed_members_who_are_not_present() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "lobby", &["bob", "carol"])
        .await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let mut carol = node.connect("carol").await;
    alice.enter(G, "lobby").await;
    assert_eq!(bob.call(json!({"t": "sub", "group": G})).await["t"], "ok");
    assert_eq!(carol.call(json!({"t": "sub", "group": G})).await["t"], "ok");
    carol.enter(G, "lobby").await;
    let sent = alice.say(G, "lobby", &"x".repeat(150), "c1").await;
    let event = bob.recv_type("room").await;
    assert_eq!(event["group"], G);
    assert_eq!(event["room"], "lobby");
    assert_eq!(event["kind"], "updated");
    assert_eq!(event["unread"], 1);
    assert_eq!(event["last"]["id"], sent["id"]);
    assert_eq!(event["last"]["from"], "alice");
    assert_eq!(
        event["last"]["text"].as_str().map(|t| t.chars().count()),
        Some(100)
    );
    // Carol is present: she gets the `msg`, not a `room` event.
    carol.recv_type("msg").await;
    carol
        .expect_silence(Duration::from_millis(300), &["receipt", "presence"])
        .await;
    // After unsub, bob hears nothing.
    assert_eq!(bob.call(json!({"t": "unsub", "group": G})).await["t"], "ok");
    alice.say(G, "lobby", "again", "c2").await;
    bob.expect_silence(Duration::from_millis(300), &[]).await;
}

#[tokio::test]
async fn service_tokens_send_as_members() {
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "svc", &["bob"])
        .await;
    let mut bot = crate::helpers::TestClient::connect(&node, &service_token("backend")).await;
    let sent = bot
        .call(json!({"t": "send", "group": G, "room": "svc", "kind": "text", "text": "from the backend", "cmid": "s1", "from": "bob"}))
        .await;
    assert_eq!(sent["t"], "sent");
    let mut alice = node.connect("alice").await;
    let entered = alice.enter(G, "svc").await;
    assert_eq!(entered["msgs"][0]["from"], "bob");
    // A user token may not send as someone else.
    let denied = alice
        .call(json!({"t": "send", "group": G, "room": "svc", "kind": "text", "text": "x", "cmid": "s2", "from": "bob"}))
        .await;
    assert_eq!(denied["code"], "forbidden");
}
