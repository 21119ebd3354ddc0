//! The crash test: the node killed with SIGKILL under load, five times on one data directory.
//! Afterwards every acknowledged message is in history exactly once under the id it was
//! acknowledged with, acknowledged `cmid`s sent again (a sample of each cycle's) are answered
//! with their original ids, and
//! a `cmid` whose send was cut off by the kill is stored at most once however often it is sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestClient, TestNode, token};

const G: &str = "crash";
const ROOMS: [&str; 2] = ["a", "b"];
const SENDERS: usize = 4;
/// Sends each sender keeps in flight, so the kill cuts some off between store and reply.
const WINDOW: usize = 8;
const CYCLES: usize = 5;
/// Acknowledged cmids sent again after each kill.
const RESENT: usize = 400;
/// No sender task outlives the kill by more than this.
const AFTER_KILL: Duration = Duration::from_secs(10);

fn user(sender: usize) -> String {
    format!("u{sender}")
}

fn room_of(sender: usize) -> &'static str {
    ROOMS[sender % ROOMS.len()]
}

/// What one sender saw in one cycle.
#[derive(Default)]
struct Seen {
    /// cmid → the id its `sent` carried.
    acked: HashMap<String, u64>,
    /// Sent, never answered: the kill came first.
    cut_off: HashSet<String>,
}

/// Sends until the connection dies, `WINDOW` sends in flight; returns what was answered.
async fn send_until_killed(mut client: TestClient, sender: usize, cycle: usize) -> Seen {
    let mut seen = Seen::default();
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    let mut next = 0usize;
    let mut r = 0u64;
    loop {
        while in_flight.len() < WINDOW {
            r += 1;
            let cmid = format!("s{sender}-c{cycle}-{next}");
            next += 1;
            let frame = json!({"t": "send", "group": G, "room": room_of(sender), "kind": "text",
                "text": format!("{cmid} text"), "cmid": cmid, "r": r});
            let bytes = rmp_serde::to_vec_named(&frame).expect("encode");
            in_flight.insert(r, cmid.clone());
            if client.ws.send(Message::Binary(bytes.into())).await.is_err() {
                seen.cut_off.extend(in_flight.into_values());
                return seen;
            }
        }
        match client.next_frame().await {
            Ok(frame) if frame["t"] == "sent" => {
                let r = frame["r"].as_u64().expect("a sent with its r");
                let cmid = in_flight.remove(&r).expect("a sent answers a send");
                assert_eq!(frame["cmid"], cmid.as_str(), "sent for another cmid");
                let id = frame["id"].as_u64().expect("a sent with an id");
                seen.acked.insert(cmid, id);
            }
            Ok(frame) if frame["t"] == "err" => {
                // An `unavailable` while the node goes down is not an acknowledgement.
                let r = frame["r"].as_u64().unwrap_or_default();
                if let Some(cmid) = in_flight.remove(&r) {
                    seen.cut_off.insert(cmid);
                }
            }
            Ok(_) => {}
            Err(_) => {
                seen.cut_off.extend(in_flight.into_values());
                return seen;
            }
        }
    }
}

/// Every message of a room, oldest first, paged through the REST history.
async fn whole_history(node: &TestNode, room: &str) -> Vec<Value> {
    let rest = node.rest(&token(&user(0)));
    let mut msgs: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let query = before.map_or_else(
            || "?limit=200".to_owned(),
            |b| format!("?limit=200&before={b}"),
        );
        let (status, page) = rest
            .get(&format!("/v1/groups/{G}/rooms/{room}/messages{query}"))
            .await;
        assert_eq!(status, 200, "history: {page}");
        let mut batch = page["msgs"].as_array().cloned().unwrap_or_default();
        let Some(first) = batch.first() else { break };
        before = first["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .or(first["id"].as_u64());
        batch.append(&mut msgs);
        msgs = batch;
        if page["more"] != true {
            break;
        }
    }
    msgs
}

fn id_of(msg: &Value) -> u64 {
    msg["id"]
        .as_u64()
        .or_else(|| msg["id"].as_str().and_then(|id| id.parse().ok()))
        .expect("a message id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_under_load_exactly_once() {
    // What is killed is the node and its own durable store: on runs on Cassandra too, this
    // node keeps the embedded store. (On Cassandra, the first sends after a restart can be
    // answered `unavailable` while the driver connects, which this test does not retry.)
    let mut node = TestNode::spawn(&[("CHATNODE_STORE", "embedded")]);
    let members: Vec<String> = (1..SENDERS).map(user).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    for room in ROOMS {
        node.rest(&token(&user(0)))
            .create_room(G, room, &members)
            .await;
    }
    // cmid → (sender, acknowledged id)
    let mut acked: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut cut_off: Vec<(usize, String)> = Vec::new();
    for cycle in 0..CYCLES {
        let mut tasks = Vec::new();
        for sender in 0..SENDERS {
            let client = node.connect(&user(sender)).await;
            tasks.push(tokio::spawn(send_until_killed(client, sender, cycle)));
        }
        // Load for a while that differs per cycle, so the kill lands at different points.
        tokio::time::sleep(Duration::from_millis(300 + 170 * cycle as u64)).await;
        node.kill();
        for (sender, task) in tasks.into_iter().enumerate() {
            let seen = tokio::time::timeout(AFTER_KILL, task)
                .await
                .expect("a sender noticed the kill")
                .expect("the sender task");
            for (cmid, id) in seen.acked {
                assert!(
                    acked.insert(cmid, (sender, id)).is_none(),
                    "a cmid acked twice"
                );
            }
            cut_off.extend(seen.cut_off.into_iter().map(|c| (sender, c)));
        }
        node.restart();

        // Every acknowledged cmid of this cycle and the cut-off ones, sent again: the first
        // keep their ids, the second are stored (now or before the kill) once.
        let mut clients: Vec<TestClient> = Vec::new();
        for sender in 0..SENDERS {
            clients.push(node.connect(&user(sender)).await);
        }
        let suffix = format!("-c{cycle}-");
        let this_cycle: Vec<_> = acked.iter().filter(|(c, _)| c.contains(&suffix)).collect();
        // Up to RESENT of them, spread over the cycle (the kill's neighbours among them).
        let step = (this_cycle.len() / RESENT).max(1);
        let sample = this_cycle.iter().step_by(step).chain(this_cycle.last());
        for (cmid, (sender, id)) in sample {
            let sent = clients[*sender]
                .say(G, room_of(*sender), &format!("{cmid} again"), cmid)
                .await;
            assert_eq!(
                sent["id"].as_u64(),
                Some(*id),
                "{cmid} got a new id after the kill"
            );
        }
        for (sender, cmid) in cut_off.iter().filter(|(_, c)| c.contains(&suffix)) {
            let first = clients[*sender]
                .say(G, room_of(*sender), "resent", cmid)
                .await;
            let second = clients[*sender]
                .say(G, room_of(*sender), "resent", cmid)
                .await;
            assert_eq!(first["id"], second["id"], "{cmid} stored twice");
        }
    }
    assert!(
        acked.len() >= CYCLES * SENDERS,
        "the load acknowledged only {} messages",
        acked.len()
    );

    let mut stored: HashMap<String, u64> = HashMap::new();
    for room in ROOMS {
        let msgs = whole_history(&node, room).await;
        let ids: Vec<u64> = msgs.iter().map(id_of).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "history of {room} out of order"
        );
        for msg in &msgs {
            let cmid = msg["cmid"]
                .as_str()
                .expect("every message here has a cmid")
                .to_owned();
            assert!(
                stored.insert(cmid.clone(), id_of(msg)).is_none(),
                "{cmid} is in history twice"
            );
        }
    }
    for (cmid, (_, id)) in &acked {
        assert_eq!(
            stored.get(cmid),
            Some(id),
            "acknowledged {cmid} lost or renumbered"
        );
    }
    for (_, cmid) in &cut_off {
        assert!(
            stored.contains_key(cmid),
            "{cmid} was resent and is not stored"
        );
    }
    println!(
        "crash test: {CYCLES} kills, {} acknowledged, {} cut off, {} stored",
        acked.len(),
        cut_off.len(),
        stored.len()
    );
}
