//! Push (docs/protocol.md §7) against a local mock of FCM HTTP v1 and of the OAuth2 token endpoint
//! (`fcm_mock.rs`), which checks every request: the bearer token, the project path, the JSON
//! shape. Covered: devices and mutes over REST, one push per coalescing window for a burst,
//! none for present, subscribed or muted members (nor the sender), silent read notices, the
//! retry after 503 with `Retry-After` and after 429, deletion of unregistered tokens, the access
//! token's refresh before it expires, chat unaffected by an FCM outage, and a bad key file.
//! The mock refuses what Google's FCM refuses (reserved data keys, unknown fields, oversized
//! payloads, ...); one test here shows it does, on the node's own request bodies.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::fcm_mock::{FcmMock, Script, Send, check_google};
use crate::helpers::{SECRET, TestNode, token};

const G: &str = "team";
const PROJECT: &str = "test-project";
const LONG: Duration = Duration::from_secs(15);

/// A node whose push goes to a fresh mock.
struct PushNode {
    mock: FcmMock,
    node: TestNode,
    _key_dir: tempfile::TempDir,
}

fn start(coalesce_ms: u64, expires_in: u64, extra: &[(&str, &str)]) -> PushNode {
    let mock = FcmMock::start(PROJECT, expires_in);
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key = mock.write_key_file(key_dir.path());
    let key = key.to_str().expect("utf-8 path").to_owned();
    let endpoint = mock.base();
    let coalesce = coalesce_ms.to_string();
    let mut env = vec![
        ("CHATNODE_PUSH_FCM_KEY_FILE", key.as_str()),
        ("CHATNODE_PUSH_FCM_ENDPOINT", endpoint.as_str()),
        ("CHATNODE_PUSH_COALESCE_MS", coalesce.as_str()),
    ];
    env.extend_from_slice(extra);
    let node = TestNode::spawn(&env);
    PushNode {
        mock,
        node,
        _key_dir: key_dir,
    }
}

async fn put(node: &TestNode, user: &str, path: &str, body: Value) -> (u16, Value) {
    node.rest(&token(user))
        .call(Method::PUT, path, Some(body))
        .await
}

async fn register(node: &TestNode, user: &str, device: &str, platform: &str) {
    let (status, body) = put(
        node,
        user,
        "/v1/devices",
        json!({"token": device, "platform": platform}),
    )
    .await;
    assert_eq!(status, 204, "register {device}: {body}");
}

async fn mute(node: &TestNode, user: &str, room: &str, muted: bool) -> u16 {
    put(
        node,
        user,
        &format!("/v1/groups/{G}/rooms/{room}/mute"),
        json!({ "muted": muted }),
    )
    .await
    .0
}

/// Sends a text over REST; returns the message id.
async fn say(node: &TestNode, user: &str, room: &str, text: &str, cmid: &str) -> u64 {
    let (status, sent) = node
        .rest(&token(user))
        .post(
            &format!("/v1/groups/{G}/rooms/{room}/messages"),
            json!({"kind": "text", "text": text, "cmid": cmid}),
        )
        .await;
    assert_eq!(status, 201, "send: {sent}");
    sent["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a message id")
}

/// Waits `within` for anything else to arrive, then returns every send so far.
async fn settle(mock: &FcmMock, within: Duration) -> Vec<Send> {
    let deadline = tokio::time::Instant::now() + within;
    // Nothing is waited for but the deadline: every send in the meantime is recorded.
    let _ = tokio::time::timeout_at(deadline, mock.wait_for(within * 2, |_| false)).await;
    mock.sends()
}

fn accepted<'a>(sends: &'a [Send], device: &str) -> Vec<&'a Send> {
    sends
        .iter()
        .filter(|s| s.token() == device && s.status == 200)
        .collect()
}

/// The value of a metric line (`name{labels} value`) from `/metrics`, or 0.
async fn metric(node: &TestNode, line_start: &str) -> f64 {
    let text = reqwest::get(node.http("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `line_start` reaches `at_least` (the actor counts just after FCM
/// answers).
async fn wait_metric(node: &TestNode, line_start: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + LONG;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let value = metric(node, line_start).await;
        if value >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line_start} stayed at {value}, expected {at_least}"
        );
    }
}

#[tokio::test]
async fn device_and_mute_routes_check_their_input() {
    // Push is off by default; the routes work regardless.
    let node = TestNode::spawn(&[]);
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob"])
        .await;
    register(&node, "bob", "fcm-token:APA91b_x-y", "android").await;
    register(&node, "bob", "fcm-token:APA91b_x-y", "ios").await;
    for body in [
        json!({"token": "t", "platform": "symbian"}),
        json!({"token": "has space", "platform": "web"}),
        json!({"token": "a/b", "platform": "web"}),
        json!({"token": "a".repeat(4096), "platform": "web"}),
        json!({"token": "", "platform": "web"}),
        json!({"platform": "web"}),
    ] {
        let (status, err) = put(&node, "bob", "/v1/devices", body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("bad_request"))
        );
    }
    let (status, _) = put(
        &node,
        "bob",
        "/v1/devices",
        json!({"token": "a".repeat(4095), "platform": "web"}),
    )
    .await;
    assert_eq!(status, 204, "a 4095-byte token is fine");
    let bob = node.rest(&token("bob"));
    assert_eq!(bob.delete("/v1/devices/fcm-token:APA91b_x-y").await.0, 204);
    assert_eq!(bob.delete("/v1/devices/never-registered").await.0, 204);
    let anonymous = node.rest("not-a-token");
    assert_eq!(anonymous.delete("/v1/devices/x").await.0, 401);
    assert_eq!(
        anonymous
            .call(
                Method::PUT,
                "/v1/devices",
                Some(json!({"token": "t", "platform": "web"}))
            )
            .await
            .0,
        401
    );

    // Mutes: members only, of rooms that exist.
    assert_eq!(mute(&node, "bob", "r", true).await, 204);
    assert_eq!(mute(&node, "bob", "r", false).await, 204);
    assert_eq!(mute(&node, "zed", "r", true).await, 403);
    assert_eq!(mute(&node, "bob", "nowhere", true).await, 404);
    let (status, _) = put(
        &node,
        "bob",
        &format!("/v1/groups/{G}/rooms/r/mute"),
        json!({"muted": "yes"}),
    )
    .await;
    assert_eq!(status, 400);

    let doc: Value = reqwest::get(node.http("/v1/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for (path, method) in [
        ("/v1/devices", "put"),
        ("/v1/devices/{token}", "delete"),
        ("/v1/groups/{group}/rooms/{room}/mute", "put"),
    ] {
        assert!(
            doc["paths"][path].get(method).is_some(),
            "{method} {path} is not documented"
        );
    }
}

#[tokio::test]
async fn a_burst_becomes_one_push_per_window() {
    let push = start(1000, 3600, &[]);
    let node = &push.node;
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob"])
        .await;
    register(node, "bob", "bob-phone", "android").await;
    register(node, "alice", "alice-phone", "ios").await;

    // 50 messages at once over WebSocket (the sender is not present in the room).
    let mut alice = node.connect("alice").await;
    for i in 0..50 {
        alice
            .request(json!({"t": "send", "group": G, "room": "r", "kind": "text",
                "text": format!("message {i}"), "cmid": format!("c{i}")}))
            .await;
    }
    let mut last = 0;
    for _ in 0..50 {
        let sent = alice.recv_type("sent").await;
        last = last.max(sent["id"].as_u64().expect("id"));
    }
    push.mock.wait_sends_to("bob-phone", 1, LONG).await;
    // Longer than a window: the burst gave exactly one push, and the sender got none.
    let sends = settle(&push.mock, Duration::from_millis(1500)).await;
    let bob = accepted(&sends, "bob-phone");
    assert_eq!(bob.len(), 1, "one push for the burst: {sends:#?}");
    assert!(
        accepted(&sends, "alice-phone").is_empty(),
        "the sender is never pushed"
    );
    let m = &bob[0].body["message"];
    assert_eq!(bob[0].bearer, "mock-token-1");
    assert_eq!(bob[0].project, PROJECT);
    assert_eq!(m["notification"]["title"], "alice");
    assert_eq!(m["notification"]["body"], "50 new messages: message 49");
    assert_eq!(m["data"]["type"], "message");
    assert_eq!(m["data"]["group"], G);
    assert_eq!(m["data"]["room"], "r");
    assert_eq!(m["data"]["message_id"], last.to_string());
    assert_eq!(m["data"]["sender"], "alice");
    assert_eq!(m["data"]["unread"], "50");
    assert_eq!(m["data"]["count"], "50");
    assert_eq!(m["android"]["collapse_key"], "team/r");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "team/r");

    // The next window is a new push, with the unread count that keeps the badge right.
    for i in 50..53 {
        alice
            .request(json!({"t": "send", "group": G, "room": "r", "kind": "text",
                "text": format!("message {i}"), "cmid": format!("c{i}")}))
            .await;
    }
    let bob = push.mock.wait_sends_to("bob-phone", 2, LONG).await;
    let m = &bob[1].body["message"];
    assert_eq!(m["notification"]["body"], "3 new messages: message 52");
    assert_eq!(m["data"]["unread"], "53");
    assert_eq!(push.mock.token_requests(), 1, "the access token is cached");
    assert_eq!(push.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn every_sender_in_a_window_reaches_every_other_member() {
    // Nobody is subscribed, so a room passes "one more" instead of the full list while the
    // sender stays the same; another sender must still reach the first one.
    let push = start(800, 3600, &[]);
    let node = &push.node;
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob", "carol"])
        .await;
    for user in ["alice", "bob", "carol"] {
        register(node, user, &format!("{user}-phone"), "ios").await;
    }
    say(node, "alice", "r", "one", "a1").await;
    say(node, "alice", "r", "two", "a2").await;
    let last = say(node, "bob", "r", "three", "b1").await;
    let alice = push.mock.wait_sends_to("alice-phone", 1, LONG).await;
    let carol = push.mock.wait_sends_to("carol-phone", 1, LONG).await;
    let bob = push.mock.wait_sends_to("bob-phone", 1, LONG).await;
    let sends = settle(&push.mock, Duration::from_millis(1200)).await;
    assert_eq!(sends.len(), 3, "one push each: {sends:#?}");
    let a = &alice[0].body["message"];
    assert_eq!(a["notification"]["body"], "three");
    assert_eq!(a["notification"]["title"], "bob");
    assert_eq!(a["data"]["unread"], "1");
    let c = &carol[0].body["message"];
    assert_eq!(c["notification"]["body"], "3 new messages: three");
    assert_eq!(c["data"]["message_id"], last.to_string());
    assert_eq!(c["data"]["unread"], "3");
    // Bob's own send read the room for him: his alert became a silent notice.
    let b = &bob[0].body["message"];
    assert_eq!(b["data"]["type"], "read");
    assert_eq!(b["data"]["cursor"], last.to_string());
    assert_eq!(b["data"]["unread"], "0");
    assert_eq!(push.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn present_subscribed_and_muted_members_get_no_push() {
    let push = start(300, 3600, &[]);
    let node = &push.node;
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob", "carol", "dave", "erin"])
        .await;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        register(node, user, &format!("{user}-phone"), "android").await;
    }
    assert_eq!(mute(node, "erin", "r", true).await, 204);
    let mut bob = node.connect("bob").await;
    bob.enter(G, "r").await;
    let mut carol = node.connect("carol").await;
    assert_eq!(carol.call(json!({"t": "sub", "group": G})).await["t"], "ok");

    let id = say(node, "alice", "r", "hello", "h1").await;
    push.mock.wait_sends_to("dave-phone", 1, LONG).await;
    let sends = settle(&push.mock, Duration::from_millis(700)).await;
    let tokens: Vec<&str> = sends.iter().map(Send::token).collect();
    assert_eq!(tokens, ["dave-phone"], "only the absent, unmuted member");
    let m = &sends[0].body["message"];
    assert_eq!(m["notification"]["title"], "alice");
    assert_eq!(m["notification"]["body"], "hello");
    assert_eq!(m["data"]["message_id"], id.to_string());
    assert_eq!(m["data"]["unread"], "1");

    // Unmuted, erin hears the next message; dave's count goes on.
    assert_eq!(mute(node, "erin", "r", false).await, 204);
    say(node, "alice", "r", "again", "h2").await;
    let erin = push.mock.wait_sends_to("erin-phone", 1, LONG).await;
    assert_eq!(erin[0].body["message"]["data"]["unread"], "2");
    let dave = push.mock.wait_sends_to("dave-phone", 2, LONG).await;
    assert_eq!(dave[1].body["message"]["data"]["unread"], "2");

    // Dave reads the room on one device: his devices get a silent notice.
    let mut dave_ws = node.connect("dave").await;
    dave_ws.enter(G, "r").await;
    let dave = push.mock.wait_sends_to("dave-phone", 3, LONG).await;
    let m = &dave[2].body["message"];
    assert_eq!(m["data"]["type"], "read");
    assert_eq!(m["data"]["cursor"], m["data"]["message_id"]);
    assert_eq!(m["data"]["unread"], "0");
    assert!(m.get("notification").is_none(), "a read notice is silent");
    let sends = settle(&push.mock, Duration::from_millis(500)).await;
    for quiet in ["alice-phone", "bob-phone", "carol-phone"] {
        assert!(accepted(&sends, quiet).is_empty(), "{quiet} was pushed");
    }
    assert_eq!(push.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn unavailable_and_throttled_answers_are_retried() {
    let push = start(200, 3600, &[]);
    let node = &push.node;
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob", "carol"])
        .await;
    register(node, "bob", "bob-phone", "android").await;
    register(node, "carol", "carol-phone", "ios").await;
    push.mock
        .script("bob-phone", &[Script::Unavailable { retry_after: 1 }]);
    push.mock.script("carol-phone", &[Script::TooMany]);

    say(node, "alice", "r", "hello", "h1").await;
    let bob = push.mock.wait_sends_to("bob-phone", 2, LONG).await;
    assert_eq!((bob[0].status, bob[1].status), (503, 200));
    let waited = bob[1].at.duration_since(bob[0].at);
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    assert_eq!(bob[0].body, bob[1].body, "the same message is sent again");
    let carol = push.mock.wait_sends_to("carol-phone", 2, LONG).await;
    assert_eq!((carol[0].status, carol[1].status), (429, 200));
    wait_metric(node, "chatnode_push_sent_total", 2.0).await;
    assert_eq!(
        metric(node, "chatnode_push_retried_total{reason=\"5xx\"}").await,
        1.0
    );
    assert_eq!(
        metric(node, "chatnode_push_retried_total{reason=\"429\"}").await,
        1.0
    );
    assert_eq!(push.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn unregistered_and_invalid_tokens_are_deleted() {
    let push = start(200, 3600, &[]);
    let node = &push.node;
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob"])
        .await;
    register(node, "bob", "bob-old", "android").await;
    register(node, "bob", "bob-bad", "web").await;
    register(node, "bob", "bob-new", "ios").await;
    push.mock.script("bob-old", &[Script::Unregistered]);
    push.mock.script("bob-bad", &[Script::InvalidToken]);

    say(node, "alice", "r", "one", "m1").await;
    for device in ["bob-old", "bob-bad", "bob-new"] {
        push.mock.wait_sends_to(device, 1, LONG).await;
    }
    wait_metric(node, "chatnode_push_devices_removed_total", 2.0).await;

    say(node, "alice", "r", "two", "m2").await;
    push.mock.wait_sends_to("bob-new", 2, LONG).await;
    let sends = settle(&push.mock, Duration::from_millis(500)).await;
    let count = |device: &str| sends.iter().filter(|s| s.token() == device).count();
    assert_eq!(
        (count("bob-old"), count("bob-bad"), count("bob-new")),
        (1, 1, 2)
    );
    assert_eq!(
        metric(node, "chatnode_push_failed_total{reason=\"unregistered\"}").await,
        2.0
    );
    assert_eq!(push.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn the_access_token_is_refreshed_before_it_expires() {
    // Tokens live 3 s: the node must switch to a new one before the mock would refuse the old.
    let push = start(150, 3, &[]);
    let node = &push.node;
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob"])
        .await;
    register(node, "bob", "bob-phone", "android").await;
    let mut sends = Vec::new();
    for i in 0..60 {
        say(node, "alice", "r", &format!("m{i}"), &format!("c{i}")).await;
        sends = push.mock.wait_sends_to("bob-phone", i + 1, LONG).await;
        if sends.iter().any(|s| s.bearer != sends[0].bearer) {
            break;
        }
    }
    let bearers: Vec<&str> = sends.iter().map(|s| s.bearer.as_str()).collect();
    assert_eq!(bearers[0], "mock-token-1");
    assert_eq!(bearers[1], "mock-token-1", "cached between pushes");
    assert_eq!(
        bearers.last(),
        Some(&"mock-token-2"),
        "refreshed: {bearers:?}"
    );
    assert!(sends.iter().all(|s| s.status == 200));
    assert_eq!(push.mock.unauthorized(), 0, "never sent an expired token");
    assert_eq!(
        push.mock.token_requests(),
        2,
        "one token request per refresh"
    );
    assert_eq!(push.mock.errors(), Vec::<String>::new());
}

#[tokio::test]
async fn an_fcm_outage_does_not_slow_chat() {
    // FCM refuses connections (nothing listens there); the token endpoint works.
    let mock = FcmMock::start(PROJECT, 3600);
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key = mock.write_key_file(key_dir.path());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let node = TestNode::spawn(&[
        ("CHATNODE_PUSH_FCM_KEY_FILE", key.to_str().expect("path")),
        ("CHATNODE_PUSH_FCM_ENDPOINT", &endpoint),
        ("CHATNODE_PUSH_COALESCE_MS", "50"),
        ("CHATNODE_PUSH_RETRY_SECS", "3"),
    ]);
    node.rest(&token("alice"))
        .create_room(G, "r", &["bob"])
        .await;
    register(&node, "bob", "bob-phone", "android").await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "r").await;
    let started = std::time::Instant::now();
    for i in 0..30 {
        alice.say(G, "r", &format!("m{i}"), &format!("c{i}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "30 sends took {:?}",
        started.elapsed()
    );
    wait_metric(&node, "chatnode_push_failed_total{reason=\"gave_up\"}", 1.0).await;
    // Chat still answers at once while pushes fail.
    alice.say(G, "r", "still here", "c-last").await;
}

#[tokio::test]
async fn a_bad_key_file_stops_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.json");
    std::fs::write(
        &key,
        r#"{"type": "service_account", "project_id": "p", "private_key": "not a key",
            "client_email": "a@b", "token_uri": "http://127.0.0.1:1/token"}"#,
    )
    .expect("write");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatnode"))
        .arg("serve")
        .env_clear()
        .env("CHATNODE_LISTEN", "127.0.0.1:0")
        .env("CHATNODE_DATA_DIR", dir.path())
        .env("CHATNODE_AUTH_SECRET", crate::helpers::SECRET)
        .env("CHATNODE_PUSH_FCM_KEY_FILE", &key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chatnode");
    // It must exit by itself; a node that started anyway is killed so the test cannot hang.
    let deadline = std::time::Instant::now() + LONG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = child.wait_with_output().expect("output");
    assert!(
        status.is_some_and(|s| !s.success()),
        "the node did not refuse the key"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("push.fcm_key_file") && stderr.contains("private_key"),
        "{stderr}"
    );
}

/// The node's own request bodies pass the stand-in's rules of Google's `messages:send`, and
/// each way FCM refuses a request makes the stand-in refuse it too, so those rules can fail.
#[test]
fn the_fcm_stand_in_refuses_what_google_refuses() {
    use chatnode::push::fcm::{Alert, alert_body, silent_body};
    let data = [
        ("type", "message"),
        ("group", G),
        ("room", "r"),
        ("sender", "alice"),
    ];
    let alert = alert_body(
        "device-1",
        &Alert {
            title: "alice",
            body: "hello",
            data: &data,
            collapse_key: "team/r",
        },
    );
    let alert: Value = serde_json::from_slice(&alert).expect("json");
    let silent = silent_body("device-1", &[("type", "read"), ("cursor", "7")], "team/r");
    let silent: Value = serde_json::from_slice(&silent).expect("json");
    for body in [&alert, &silent] {
        if let Err(v) = check_google(body) {
            panic!(
                "the node's body is refused: {}: {}\n{body:#}",
                v.field, v.description
            );
        }
    }

    /// One way to spoil a request, by name.
    type Spoil = (&'static str, fn(&mut Value));
    let refused: Vec<Spoil> = vec![
        ("reserved key from", |b| {
            b["message"]["data"]["from"] = json!("x")
        }),
        ("reserved key message_type", |b| {
            b["message"]["data"]["message_type"] = json!("x")
        }),
        ("reserved prefix google", |b| {
            b["message"]["data"]["google.c.a.e"] = json!("1")
        }),
        ("reserved prefix gcm", |b| {
            b["message"]["data"]["gcm.n.e"] = json!("1")
        }),
        ("reserved key in android.data", |b| {
            b["message"]["android"]["data"] = json!({"from": "x"})
        }),
        ("a number in data", |b| {
            b["message"]["data"]["unread"] = json!(3)
        }),
        ("an unknown message field", |b| {
            b["message"]["priority"] = json!("high")
        }),
        ("an unknown android field", |b| {
            b["message"]["android"]["collapseId"] = json!("x")
        }),
        ("a bad android priority", |b| {
            b["message"]["android"]["priority"] = json!("urgent")
        }),
        ("a ttl without unit", |b| {
            b["message"]["android"]["ttl"] = json!("60")
        }),
        ("a notification field of the wrong type", |b| {
            b["message"]["notification"]["title"] = json!(1)
        }),
        ("no target", |b| {
            b["message"].as_object_mut().map(|m| m.remove("token"));
        }),
        ("two targets", |b| b["message"]["topic"] = json!("news")),
        ("an empty token", |b| b["message"]["token"] = json!("")),
        ("a bad apns-priority", |b| {
            b["message"]["apns"]["headers"]["apns-priority"] = json!("7")
        }),
        ("a long apns-collapse-id", |b| {
            b["message"]["apns"]["headers"]["apns-collapse-id"] = json!("k".repeat(65))
        }),
        ("a payload over 4096 bytes", |b| {
            b["message"]["notification"]["body"] = json!("é".repeat(2100))
        }),
    ];
    for (what, change) in &refused {
        let mut body = alert.clone();
        change(&mut body);
        assert!(check_google(&body).is_err(), "{what} passed: {body:#}");
    }
    let mut loud = silent.clone();
    loud["message"]["apns"]["headers"]["apns-priority"] = json!("10");
    assert!(
        check_google(&loud).is_err(),
        "a background push at priority 10 passed"
    );
}

/// The longest names and texts the node takes still make pushes FCM accepts: 64-character ids,
/// a 200-character room title, a sender's display name of 1,000 four-byte characters, a
/// 4,000-character message.
#[tokio::test]
async fn pushes_of_the_longest_names_and_texts_fit_fcm_limits() {
    let push = start(200, 3600, &[]);
    let node = &push.node;
    let (group, room, sender) = ("g".repeat(64), "r".repeat(64), "s".repeat(64));
    let name = "😀".repeat(1000);
    let sender_token =
        chatnode::auth::mint(SECRET.as_bytes(), &sender, Some(&name), 3600, false, None)
            .expect("mint");
    let rest = node.rest(&sender_token);
    let (status, body) = rest
        .post(
            &format!("/v1/groups/{group}/rooms"),
            json!({"room": room, "title": "제".repeat(200), "kind": "group", "members": ["bob"]}),
        )
        .await;
    assert_eq!(status, 201, "create: {body}");
    register(node, "bob", "bob-phone", "ios").await;
    let (status, sent) = rest
        .post(
            &format!("/v1/groups/{group}/rooms/{room}/messages"),
            json!({"kind": "text", "text": "😀".repeat(4000), "cmid": "long-1"}),
        )
        .await;
    assert_eq!(status, 201, "send: {sent}");
    let sends = push.mock.wait_sends_to("bob-phone", 1, LONG).await;
    assert_eq!(push.mock.errors(), Vec::<String>::new());
    assert_eq!(sends[0].status, 200);
    let m = &sends[0].body["message"];
    assert_eq!(m["data"]["sender"], sender.as_str());
    let title = m["notification"]["title"].as_str().unwrap_or_default();
    assert!(title.starts_with("😀😀"), "the sender's name: {title}");
    assert!(title.chars().count() <= 100, "the title is cut: {title}");
}
