//! Rooms over REST (docs/protocol.md §4.2) as far as chat needs them: create (including direct
//! rooms, unique per pair even when both users create theirs at once), get, the chat list, members,
//! join, delete, and the errors of each.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestNode, service_token, token};

const G: &str = "team";

#[tokio::test]
async fn create_get_and_list() {
    let node = TestNode::spawn(&[]);
    let alice = node.rest(&token("alice"));
    let (status, room) = alice
        .post(
            &format!("/v1/groups/{G}/rooms"),
            json!({"room": "r", "title": "Room", "kind": "group", "members": ["bob"], "max": 5}),
        )
        .await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["owner"], "alice");
    assert_eq!(room["members"], json!(["alice", "bob"]));
    assert_eq!(room["max"], 5);
    assert_eq!(room["has_password"], false);
    let (status, err) = alice
        .post(
            &format!("/v1/groups/{G}/rooms"),
            json!({"room": "r", "title": "Again", "kind": "group", "members": []}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, got) = node
        .rest(&token("bob"))
        .get(&format!("/v1/groups/{G}/rooms/r"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["title"], "Room");
    let (status, err) = node
        .rest(&token("mallory"))
        .get(&format!("/v1/groups/{G}/rooms/r"))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, err) = alice.get(&format!("/v1/groups/{G}/rooms/none")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // Generated ids when none is given.
    let (status, generated) = alice
        .post(
            &format!("/v1/groups/{G}/rooms"),
            json!({"title": "Generated", "kind": "group"}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(generated["room"].as_str().is_some_and(|r| !r.is_empty()));
    let (status, list) = alice.get(&format!("/v1/groups/{G}/rooms")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let node = TestNode::spawn(&[]);
    let alice = node.rest(&token("alice"));
    let rooms = format!("/v1/groups/{G}/rooms");
    for (body, why) in [
        (json!({"title": "t", "kind": "castle"}), "unknown kind"),
        (json!({"kind": "group"}), "missing title"),
        (json!({"title": "", "kind": "group"}), "empty title"),
        (
            json!({"title": "t", "kind": "group", "room": "a b"}),
            "bad room id",
        ),
        (
            json!({"title": "t", "kind": "group", "members": [5]}),
            "wrong type",
        ),
        (
            json!({"title": "t", "kind": "direct", "members": ["a", "b"]}),
            "three in a direct room",
        ),
        (
            json!({"title": "t", "kind": "group", "password": "x"}),
            "password on a group room",
        ),
        (
            json!({"title": "t", "kind": "group", "members": ["b", "c"], "max": 2}),
            "max below members",
        ),
    ] {
        let (status, err) = alice.post(&rooms, body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{why}: {err}"
        );
    }
    let raw = reqwest::Client::new()
        .post(node.http(&rooms))
        .bearer_auth(token("alice"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status(), 400);
    let huge = reqwest::Client::new()
        .post(node.http(&rooms))
        .bearer_auth(token("alice"))
        .json(&json!({"title": "x".repeat(300_000), "kind": "group"}))
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), 413);
    let body: serde_json::Value = huge.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_large");
    let anonymous = reqwest::Client::new()
        .get(node.http(&rooms))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    let bad_group = alice.get("/v1/groups/bad%20group/rooms").await;
    assert_eq!(bad_group.0, 400);
}

#[tokio::test]
async fn direct_rooms_are_unique_per_pair_even_when_created_at_once() {
    let node = TestNode::spawn(&[]);
    let alice = node.rest(&token("alice"));
    let bob = node.rest(&token("bob"));
    let path = format!("/v1/groups/{G}/rooms");
    let (a, b) = tokio::join!(
        alice.post(
            &path,
            json!({"title": "DM", "kind": "direct", "members": ["bob"]})
        ),
        bob.post(
            &path,
            json!({"title": "DM", "kind": "direct", "members": ["alice"]})
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 201],
        "one creates, the other gets the existing room"
    );
    assert_eq!(a.1["room"], b.1["room"]);
    let (status, again) = alice
        .post(
            &path,
            json!({"title": "DM", "kind": "direct", "members": ["bob"]}),
        )
        .await;
    assert_eq!((status, again["room"].clone()), (200, a.1["room"].clone()));
    let (_, list) = alice.get(&path).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn members_added_later_start_at_the_latest_message() {
    let node = TestNode::spawn(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "m", &["bob"]).await;
    let mut a = node.connect("alice").await;
    a.enter(G, "m").await;
    let first = a.say(G, "m", "before carol", "c1").await;
    assert_eq!(first["unread"], 1);
    let (status, _) = alice
        .post(
            &format!("/v1/groups/{G}/rooms/m/members"),
            json!({"user": "carol"}),
        )
        .await;
    assert_eq!(status, 204);
    let mut carol = node.connect("carol").await;
    let page = carol
        .call(json!({"t": "history", "group": G, "room": "m"}))
        .await;
    assert_eq!(
        page["msgs"][0]["unread"], 1,
        "carol does not count as unread for old messages"
    );
    let second = a.say(G, "m", "after carol", "c2").await;
    assert_eq!(second["unread"], 2);
    // Only the owner (or a service) adds members.
    let (status, err) = node
        .rest(&token("bob"))
        .post(
            &format!("/v1/groups/{G}/rooms/m/members"),
            json!({"user": "dave"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = node
        .rest(&service_token("backend"))
        .post(
            &format!("/v1/groups/{G}/rooms/m/members"),
            json!({"user": "dave"}),
        )
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn removing_a_present_member_ends_presence_with_a_receipt() {
    let node = TestNode::spawn(&[]);
    let alice_rest = node.rest(&token("alice"));
    alice_rest.create_room(G, "x", &["bob", "carol"]).await;
    let mut alice = node.connect("alice").await;
    let mut carol = node.connect("carol").await;
    alice.enter(G, "x").await;
    let sent = alice.say(G, "x", "hello", "c1").await;
    assert_eq!(sent["unread"], 2);
    carol.enter(G, "x").await;
    alice.recv_type("receipt").await;
    // Bob never read it; removing him produces a receipt up to the latest id.
    let (status, _) = alice_rest
        .delete(&format!("/v1/groups/{G}/rooms/x/members/bob"))
        .await;
    assert_eq!(status, 204);
    let receipt = alice.recv_type("receipt").await;
    assert_eq!(
        (receipt["user"].as_str(), receipt["to"].clone()),
        (Some("bob"), sent["id"].clone())
    );
    // Carol is present; removing her ends her presence.
    let (status, _) = alice_rest
        .delete(&format!("/v1/groups/{G}/rooms/x/members/carol"))
        .await;
    assert_eq!(status, 204);
    let gone = alice.recv_type("presence").await;
    assert_eq!(
        (gone["user"].as_str(), gone["present"].as_bool()),
        (Some("carol"), Some(false))
    );
    let err = carol
        .call(json!({"t": "history", "group": G, "room": "x"}))
        .await;
    assert_eq!(
        err["code"], "forbidden",
        "a removed member can no longer read"
    );
    carol.expect_silence(Duration::from_millis(200), &[]).await;
    alice.say(G, "x", "carol is gone", "c2").await;
    carol.expect_silence(Duration::from_millis(300), &[]).await;
    let (status, err) = alice_rest
        .delete(&format!("/v1/groups/{G}/rooms/x/members/nobody"))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn open_rooms_passwords_and_capacity() {
    let node = TestNode::spawn(&[]);
    let owner = node.rest(&token("owner"));
    let (status, room) = owner
        .post(&format!("/v1/groups/{G}/rooms"), json!({"room": "club", "title": "Club", "kind": "open", "max": 2, "password": "sesame"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(room["has_password"], true);
    assert!(room.get("password").is_none() && room.get("password_hash").is_none());
    let join = format!("/v1/groups/{G}/rooms/club/join");
    // A body that is there must be a join body: a misspelt key is not "no password".
    let (status, err) = node
        .rest(&token("bob"))
        .post(&join, json!({"pasword": "sesame"}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{err}"
    );
    let broken = reqwest::Client::new()
        .post(node.http(&join))
        .bearer_auth(token("bob"))
        .header("content-type", "application/json")
        .body("{\"password\":")
        .send()
        .await
        .expect("request");
    assert_eq!(broken.status().as_u16(), 400);
    let (status, err) = node
        .rest(&token("bob"))
        .post(&join, json!({"password": "wrong"}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("bad_password"))
    );
    let (status, _) = node
        .rest(&token("bob"))
        .post(&join, json!({"password": "sesame"}))
        .await;
    assert_eq!(status, 204);
    let (status, err) = node
        .rest(&token("carol"))
        .post(&join, json!({"password": "sesame"}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("room_full"))
    );
    // Without a password, no body at all joins.
    let (status, _) = owner
        .post(
            &format!("/v1/groups/{G}/rooms"),
            json!({"room": "lounge", "title": "Lounge", "kind": "open"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = node
        .rest(&token("carol"))
        .call(
            reqwest::Method::POST,
            &format!("/v1/groups/{G}/rooms/lounge/join"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    owner.create_room(G, "closed", &[]).await;
    let (status, _) = node
        .rest(&token("bob"))
        .post(&format!("/v1/groups/{G}/rooms/closed/join"), json!({}))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn deleting_a_room_tells_present_users() {
    let node = TestNode::spawn(&[]);
    let alice_rest = node.rest(&token("alice"));
    alice_rest.create_room(G, "gone", &["bob"]).await;
    let mut bob = node.connect("bob").await;
    bob.enter(G, "gone").await;
    let (status, _) = node
        .rest(&token("bob"))
        .delete(&format!("/v1/groups/{G}/rooms/gone"))
        .await;
    assert_eq!(status, 403, "only the owner deletes");
    let (status, _) = alice_rest
        .delete(&format!("/v1/groups/{G}/rooms/gone"))
        .await;
    assert_eq!(status, 204);
    let event = bob.recv_type("room").await;
    assert_eq!(
        (event["kind"].as_str(), event["room"].as_str()),
        (Some("deleted"), Some("gone"))
    );
    let err = bob
        .call(json!({"t": "history", "group": G, "room": "gone"}))
        .await;
    assert_eq!(err["code"], "not_found");
    let (status, _) = alice_rest.get(&format!("/v1/groups/{G}/rooms/gone")).await;
    assert_eq!(status, 404);
}

/// A sender's own messages are read: the chat list asked right after three sends (through
/// REST and through WebSocket, without entering the room) shows no unread for that room,
/// although the room writes its cursors to the store only once a second. Several rounds, so a
/// list that reads the store's cursors fails reliably.
#[tokio::test]
async fn the_chat_list_counts_a_senders_messages_as_read_at_once() {
    let node = TestNode::spawn(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "busy", &["bob"]).await;
    let mut ws = node.connect("alice").await;
    // Another of alice's connections watches the chat list's live badge.
    let mut watcher = node.connect("alice").await;
    assert_eq!(
        watcher.call(json!({"t": "sub", "group": G})).await["t"],
        "ok"
    );
    let unread_of = |list: &serde_json::Value, room: &str| {
        list.as_array()
            .and_then(|rooms| rooms.iter().find(|r| r["room"] == room))
            .map(|r| r["unread"].clone())
    };
    let mut lagged = Vec::new();
    for round in 0..4 {
        for i in 0..3 {
            let cmid = format!("c{round}-{i}");
            if round % 2 == 0 {
                let (status, sent) = alice
                    .post(
                        &format!("/v1/groups/{G}/rooms/busy/messages"),
                        json!({"kind": "text", "text": "hi", "cmid": cmid}),
                    )
                    .await;
                assert_eq!(status, 201, "{sent}");
            } else {
                ws.say(G, "busy", "hi", &cmid).await;
            }
        }
        let (status, list) = alice.get(&format!("/v1/groups/{G}/rooms")).await;
        assert_eq!(status, 200, "{list}");
        let via = if round % 2 == 0 { "REST" } else { "WebSocket" };
        for _ in 0..3 {
            let event = watcher.recv_type("room").await;
            assert_eq!(
                (event["room"].as_str(), event["unread"].as_u64()),
                (Some("busy"), Some(0)),
                "round {round} ({via}): {event}"
            );
        }
        if unread_of(&list, "busy") != Some(json!(0)) {
            lagged.push(format!("round {round} ({via}): {list}"));
        }
        // Bob has read nothing: all of it counts for him.
        let (_, list) = node
            .rest(&token("bob"))
            .get(&format!("/v1/groups/{G}/rooms"))
            .await;
        assert_eq!(
            unread_of(&list, "busy"),
            Some(json!(3 * (round + 1))),
            "round {round}: {list}"
        );
    }
    assert!(
        lagged.is_empty(),
        "the sender's list right after sending shows unread messages: {lagged:#?}"
    );
}
