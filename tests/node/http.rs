//! Messages and live events over HTTP (docs/protocol.md §4.3 and §5): REST history and send,
//! Server-Sent Events (presence, reception of WebSocket messages, resume with `Last-Event-ID`,
//! heartbeats, removal), and the OpenAPI document (§4.1).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestNode, token};

const G: &str = "team";

/// A Server-Sent Events reader.
struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

/// One event: its `event`, `id` and parsed `data` (or comment lines as `comment`).
#[derive(Debug)]
struct Event {
    event: String,
    id: Option<String>,
    data: Value,
}

impl Sse {
    async fn open(
        node: &TestNode,
        user: &str,
        room: &str,
        last_event_id: Option<&str>,
    ) -> (u16, Option<Self>) {
        let mut req = reqwest::Client::new().get(node.http(&format!(
            "/v1/groups/{G}/rooms/{room}/events?token={}",
            token(user)
        )));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        if status != 200 {
            return (status, None);
        }
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        (
            status,
            Some(Self {
                stream: Box::pin(resp.bytes_stream()),
                buffer: String::new(),
            }),
        )
    }

    /// The next event or comment block.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    event: String::new(),
                    id: None,
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).expect("JSON data");
                    } else if line.starts_with(':') {
                        event.event = "comment".to_owned();
                    } else if line.starts_with("retry: ") {
                        event.event = "retry".to_owned();
                    }
                }
                return Some(event);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk).expect("utf8")),
                Ok(_) | Err(_) => return None,
            }
        }
    }

    /// The next event of type `t`, skipping others.
    async fn next_of(&mut self, t: &str) -> Event {
        loop {
            let event = self
                .next(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("no `{t}` event"));
            if event.event == t {
                return event;
            }
        }
    }
}

#[tokio::test]
async fn rest_send_and_history() {
    let node = TestNode::spawn(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &["bob"]).await;
    let path = format!("/v1/groups/{G}/rooms/r/messages");
    let (status, sent) = alice
        .post(
            &path,
            json!({"kind": "text", "text": "over http", "cmid": "h1"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let id = sent["id"]
        .as_str()
        .expect("ids are strings in JSON")
        .to_owned();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(sent["unread"], 1);
    assert_eq!(
        (
            sent["group"].as_str(),
            sent["room"].as_str(),
            sent["cmid"].as_str()
        ),
        (Some(G), Some("r"), Some("h1"))
    );
    let (status, again) = alice
        .post(
            &path,
            json!({"kind": "text", "text": "over http", "cmid": "h1"}),
        )
        .await;
    assert_eq!((status, again["id"].as_str()), (201, Some(id.as_str())));
    let (status, page) = node.rest(&token("bob")).get(&path).await;
    assert_eq!(status, 200);
    assert_eq!(page["msgs"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["msgs"][0]["id"], id.as_str());
    assert_eq!(page["more"], false);
    let (status, page) = alice.get(&format!("{path}?before={id}&limit=10")).await;
    assert_eq!(
        (status, page["msgs"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    for (query, code) in [("?limit=0", 400), ("?before=abc", 400), ("?limit=x", 400)] {
        let (status, err) = alice.get(&format!("{path}{query}")).await;
        assert_eq!(status, code, "{query}: {err}");
        assert_eq!(err["error"]["code"], "bad_request");
    }
    let (status, err) = node.rest(&token("mallory")).get(&path).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, err) = node
        .rest(&token("mallory"))
        .post(&path, json!({"kind": "text", "text": "x", "cmid": "m"}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = alice
        .get(&format!("/v1/groups/{G}/rooms/none/messages"))
        .await;
    assert_eq!(status, 404);
    let (status, err) = alice
        .post(&path, json!({"kind": "text", "cmid": "c"}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, err) = alice
        .post(
            &path,
            json!({"kind": "text", "text": "x".repeat(20_000), "cmid": "c"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    let (status, _) = alice
        .post(&path, json!({"kind": "text", "text": 5, "cmid": "c"}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sse_is_presence_and_receives_websocket_messages() {
    // A one-second heartbeat: a closed stream is noticed at the next write.
    let node = TestNode::spawn(&[("CHATNODE_WS_HEARTBEAT_SECS", "1")]);
    node.rest(&token("alice"))
        .create_room(G, "live", &["bob"])
        .await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "live").await;
    let (_, sse) = Sse::open(&node, "bob", "live", None).await;
    let mut sse = sse.expect("stream");
    let presence = alice.recv_type("presence").await;
    assert_eq!(
        (presence["user"].as_str(), presence["present"].as_bool()),
        (Some("bob"), Some(true))
    );
    let sent = alice.say(G, "live", "to the web", "w1").await;
    assert_eq!(sent["unread"], 0, "bob is present through his event stream");
    let event = sse.next_of("msg").await;
    let id = sent["id"].as_u64().expect("id").to_string();
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
    assert_eq!(event.data["t"], "msg");
    assert_eq!(event.data["id"], id.as_str(), "ids are strings in JSON");
    assert_eq!(event.data["text"], "to the web");
    assert_eq!(event.data["from"], "alice");
    // Closing the stream ends bob's presence (noticed at the next heartbeat write).
    drop(sse);
    let gone = alice.recv_type("presence").await;
    assert_eq!(
        (gone["user"].as_str(), gone["present"].as_bool()),
        (Some("bob"), Some(false))
    );
}

#[tokio::test]
async fn sse_resumes_with_last_event_id() {
    let node = TestNode::spawn(&[]);
    let alice_rest = node.rest(&token("alice"));
    alice_rest.create_room(G, "resume", &["bob"]).await;
    let path = format!("/v1/groups/{G}/rooms/resume/messages");
    let mut ids = Vec::new();
    for i in 0..4 {
        let (_, sent) = alice_rest
            .post(
                &path,
                json!({"kind": "text", "text": format!("m{i}"), "cmid": format!("c{i}")}),
            )
            .await;
        ids.push(sent["id"].as_str().expect("id").to_owned());
    }
    let (_, sse) = Sse::open(&node, "bob", "resume", Some(&ids[1])).await;
    let mut sse = sse.expect("stream");
    for expected in &ids[2..] {
        let event = sse.next_of("msg").await;
        assert_eq!(event.id.as_ref(), Some(expected));
    }
    let (_, sent) = alice_rest
        .post(
            &path,
            json!({"kind": "text", "text": "live", "cmid": "live"}),
        )
        .await;
    let event = sse.next_of("msg").await;
    assert_eq!(event.data["id"], sent["id"]);
    assert_eq!(event.data["text"], "live");
    // `?since=` works the same way, and a bad id is refused.
    let resp = reqwest::Client::new()
        .get(node.http(&format!(
            "/v1/groups/{G}/rooms/resume/events?since=nope&token={}",
            token("bob")
        )))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn sse_sends_heartbeat_comments() {
    let node = TestNode::spawn(&[("CHATNODE_WS_HEARTBEAT_SECS", "1")]);
    node.rest(&token("alice"))
        .create_room(G, "quiet", &[])
        .await;
    let (_, sse) = Sse::open(&node, "alice", "quiet", None).await;
    let mut sse = sse.expect("stream");
    let mut saw_comment = false;
    while let Some(event) = sse.next(Duration::from_secs(3)).await {
        if event.event == "comment" {
            saw_comment = true;
            break;
        }
    }
    assert!(saw_comment, "a keep-alive comment within a heartbeat");
}

#[tokio::test]
async fn removed_members_lose_history_and_events() {
    let node = TestNode::spawn(&[]);
    let alice_rest = node.rest(&token("alice"));
    alice_rest.create_room(G, "rm", &["carol"]).await;
    let (status, _) = Sse::open(&node, "mallory", "rm", None).await;
    assert_eq!(status, 403, "non-members get no stream");
    let (status, _) = Sse::open(&node, "carol", "nowhere", None).await;
    assert_eq!(status, 404);
    let (_, sse) = Sse::open(&node, "carol", "rm", None).await;
    let mut sse = sse.expect("stream");
    let path = format!("/v1/groups/{G}/rooms/rm/messages");
    alice_rest
        .post(
            &path,
            json!({"kind": "text", "text": "before", "cmid": "b"}),
        )
        .await;
    assert_eq!(sse.next_of("msg").await.data["text"], "before");
    let (status, _) = alice_rest
        .delete(&format!("/v1/groups/{G}/rooms/rm/members/carol"))
        .await;
    assert_eq!(status, 204);
    alice_rest
        .post(&path, json!({"kind": "text", "text": "after", "cmid": "a"}))
        .await;
    while let Some(event) = sse.next(Duration::from_millis(500)).await {
        assert_ne!(event.event, "msg", "a removed member got {event:?}");
    }
    let (status, _) = node.rest(&token("carol")).get(&path).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let node = TestNode::spawn(&[]);
    let client = reqwest::Client::new();
    let doc: Value = client
        .get(node.http("/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    let paths = doc["paths"].as_object().expect("paths");
    let rooms = "/v1/groups/{group}/rooms";
    for (path, method) in [
        (rooms.to_owned(), "post"),
        (rooms.to_owned(), "get"),
        (format!("{rooms}/{{room}}"), "get"),
        (format!("{rooms}/{{room}}"), "delete"),
        (format!("{rooms}/{{room}}/join"), "post"),
        (format!("{rooms}/{{room}}/members"), "post"),
        (format!("{rooms}/{{room}}/members/{{user}}"), "delete"),
        (format!("{rooms}/{{room}}/messages"), "get"),
        (format!("{rooms}/{{room}}/messages"), "post"),
        (format!("{rooms}/{{room}}/events"), "get"),
        ("/healthz".to_owned(), "get"),
        ("/readyz".to_owned(), "get"),
        ("/metrics".to_owned(), "get"),
    ] {
        assert!(
            paths.get(&path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is missing"
        );
    }
    // Every documented route is served: without a token it answers 401 (or 200 for the
    // operations routes), never the router's 404.
    for (path, item) in paths {
        let concrete = path
            .replace("{group}", "g")
            .replace("{room}", "r")
            .replace("{user}", "u");
        for method in item.as_object().expect("methods").keys() {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let resp = client
                .request(method.clone(), node.http(&concrete))
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            assert!(
                status == 401 || status == 200,
                "{method} {concrete} answered {status}"
            );
        }
    }
}

#[tokio::test]
async fn oversize_headers_get_431_with_a_json_error() {
    let node = TestNode::spawn(&[]);
    // actix-http refuses a head once 128 KiB of it are in. Exactly that much is sent (and no
    // more), so the node has read everything when it closes and the answer is not reset.
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    request.resize(128 * 1024, b'x');
    let (status, body) = crate::errors::raw_exchange(&node, &request).await;
    assert_eq!(status, 431);
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["error"]["code"], "too_large", "{body}");
}
