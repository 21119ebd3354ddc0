//! Faults of the CQL server under load, on a real Apache Cassandra: the node is stopped (a
//! graceful stop, then a start on the same data and ports) and paused (SIGSTOP, so requests
//! time out, then SIGCONT) while senders keep sending. Each test checks the same properties:
//! senders get `unavailable`, nothing is acknowledged that was not stored (read back from
//! Cassandra itself), `/readyz` answers 503 with a reason, and the node serves again without a
//! restart once Cassandra is back.
//!
//! They need a Cassandra they may stop: `CHATNODE_TEST_CASSANDRA_DIR` names the folder of a
//! node started by `scripts/cassandra.sh` (its pid file and ports), and
//! `CHATNODE_TEST_NODE_STORE=scylla` with `CHATNODE_TEST_SCYLLA` point the node at it.
//! `scripts/test.sh` runs them in a step of their own, after every other test that uses that
//! Cassandra; elsewhere they print that they were skipped. The two never run at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chatnode::ids::{GroupId, RoomId};
use chatnode::store::Store;
use chatnode::store::scylla::ScyllaStore;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{TestClient, TestNode, node_store_is_scylla, token};

const G: &str = "faults";
const ROOM: &str = "load";
const SENDERS: usize = 3;
/// The node's CQL request timeout: short, so a paused server is noticed within a second.
const REQUEST_TIMEOUT_MS: &str = "1000";
/// Bounds of each phase (a restart of Cassandra takes about 10 s on this machine).
const FAULT_SEEN_WITHIN: Duration = Duration::from_secs(60);
const RECOVERED_WITHIN: Duration = Duration::from_secs(120);

/// One fault test at a time: both act on the same Cassandra.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The folder of the Cassandra these tests may stop, or `None` (and why) to skip.
fn cassandra_dir() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("CHATNODE_TEST_CASSANDRA_DIR") else {
        println!("skipped: CHATNODE_TEST_CASSANDRA_DIR is not set (scripts/test.sh sets it)");
        return None;
    };
    assert!(
        node_store_is_scylla(),
        "CHATNODE_TEST_CASSANDRA_DIR needs CHATNODE_TEST_NODE_STORE=scylla"
    );
    Some(PathBuf::from(dir))
}

/// `scripts/cassandra.sh` on the node in `dir`.
fn cassandra_sh(dir: &Path, action: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cassandra.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .env("CHATNODE_CASSANDRA_DIR", dir)
        .env("CHATNODE_CASSANDRA_KEEP_DATA", "1")
        .output()
        .expect("run scripts/cassandra.sh");
    assert!(
        out.status.success(),
        "cassandra.sh {action} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cassandra_pid(dir: &Path) -> i32 {
    let text = std::fs::read_to_string(dir.join("cassandra.pid")).expect("Cassandra's pid file");
    text.trim().parse().expect("a pid")
}

/// Sends a signal (`STOP`, `CONT`) to Cassandra by its PID.
fn signal(pid: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Brings Cassandra back if a test ends (or panics) while it is down.
struct Restore {
    dir: PathBuf,
    action: Option<Fault>,
}

#[derive(Clone, Copy)]
enum Fault {
    Stopped,
    Paused(i32),
}

impl Restore {
    fn recover(&mut self) {
        match self.action.take() {
            Some(Fault::Stopped) => cassandra_sh(&self.dir, "start"),
            Some(Fault::Paused(pid)) => signal(pid, "CONT"),
            None => {}
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.recover();
    }
}

/// What the senders saw: acknowledged messages (cmid → id) and the codes of refused sends.
#[derive(Default)]
struct Seen {
    acked: HashMap<String, u64>,
    refused: HashMap<String, usize>,
}

/// Sends one message every 50 ms (under the rate limit) until `stop`, recording each answer.
async fn sender(
    mut client: TestClient,
    n: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<Seen>>,
) {
    client.enter(G, ROOM).await;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let cmid = format!("s{n}-{i}");
        i += 1;
        let reply = client
            .call(
                json!({"t": "send", "group": G, "room": ROOM, "kind": "text",
                "text": cmid, "cmid": cmid}),
            )
            .await;
        {
            let mut seen = seen.lock().expect("seen");
            match reply["t"].as_str() {
                Some("sent") => {
                    let id = reply["id"].as_u64().expect("a sent id");
                    seen.acked.insert(cmid, id);
                }
                Some("err") => {
                    let code = reply["code"].as_str().unwrap_or("?").to_owned();
                    *seen.refused.entry(code).or_default() += 1;
                }
                _ => panic!("unexpected answer to send: {reply}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 100 ms until it holds, failing after `within`.
async fn until(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz`: its status and body.
async fn readyz(client: &reqwest::Client, node: &TestNode) -> (u16, Value) {
    match client.get(node.http("/readyz")).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&body).unwrap_or(Value::String(body)),
            )
        }
        Err(e) => panic!("readyz: {e}"),
    }
}

/// Every message of the room as Cassandra holds it, read with a store of our own.
async fn stored(node: &TestNode) -> HashMap<String, u64> {
    let settings = node.scylla_settings().expect("a node on scylla");
    let store = ScyllaStore::open(settings)
        .await
        .expect("open the keyspace");
    let (group, room) = (
        GroupId::parse(G).expect("group"),
        RoomId::parse(ROOM).expect("room"),
    );
    let mut out = HashMap::new();
    let mut before = None;
    loop {
        let page = store
            .messages_before(&group, &room, before, 200)
            .await
            .expect("read the room's messages");
        for msg in &page.msgs {
            let cmid = msg.cmid.clone().expect("every test message has a cmid");
            assert!(
                out.insert(cmid.clone(), msg.id).is_none(),
                "{cmid} stored twice"
            );
        }
        match (page.more, page.msgs.first()) {
            (true, Some(oldest)) => before = Some(oldest.id),
            _ => break,
        }
    }
    out
}

/// Runs senders against a node on Cassandra, applies `fault`, checks what the clients and
/// `/readyz` see, recovers, and checks that the node serves again and lost nothing it acked.
async fn under_load(dir: PathBuf, fault: Fault) {
    let node = TestNode::spawn(&[("CHATNODE_SCYLLA_REQUEST_TIMEOUT_MS", REQUEST_TIMEOUT_MS)]);
    let http = reqwest::Client::new();
    let users: Vec<String> = (0..SENDERS).map(|n| format!("sender{n}")).collect();
    let members: Vec<&str> = users.iter().map(String::as_str).collect();
    node.rest(&token("owner"))
        .create_room(G, ROOM, &members)
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let client = node.connect(user).await;
        tasks.push(tokio::spawn(sender(client, n, stop.clone(), seen.clone())));
    }
    let acked = || seen.lock().expect("seen").acked.len();
    until(
        "the first 20 acknowledgements",
        RECOVERED_WITHIN,
        async || acked() >= 20,
    )
    .await;

    let mut restore = Restore {
        dir: dir.clone(),
        action: Some(fault),
    };
    match fault {
        Fault::Stopped => cassandra_sh(&dir, "stop"),
        Fault::Paused(pid) => signal(pid, "STOP"),
    }
    let acked_at_fault = acked();
    until(
        "a send refused as unavailable",
        FAULT_SEEN_WITHIN,
        async || {
            seen.lock()
                .expect("seen")
                .refused
                .contains_key("unavailable")
        },
    )
    .await;
    let mut not_ready = (0, Value::Null);
    until("/readyz saying not ready", FAULT_SEEN_WITHIN, async || {
        not_ready = readyz(&http, &node).await;
        not_ready.0 == 503
    })
    .await;
    assert_eq!(
        not_ready.1["error"]["code"], "unavailable",
        "{}",
        not_ready.1
    );
    let reason = not_ready.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("store"),
        "readyz gave no reason: {}",
        not_ready.1
    );
    // While the server is down, at most the sends already under way were acknowledged.
    let acked_while_down = acked();

    restore.recover();
    until("/readyz ready again", RECOVERED_WITHIN, async || {
        readyz(&http, &node).await.0 == 200
    })
    .await;
    until("20 more acknowledgements", RECOVERED_WITHIN, async || {
        acked() >= acked_while_down + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a sender panicked");
    }

    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    let stored = stored(&node).await;
    for (cmid, id) in &seen.acked {
        assert_eq!(
            stored.get(cmid),
            Some(id),
            "{cmid} was acknowledged as {id} but Cassandra holds {:?}",
            stored.get(cmid)
        );
    }
    for code in seen.refused.keys() {
        assert_eq!(code, "unavailable", "refusals: {:?}", seen.refused);
    }
    println!(
        "{} acknowledged ({} before the fault), {:?} refused, {} stored",
        seen.acked.len(),
        acked_at_fault,
        seen.refused,
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassandra_stopped_under_load() {
    let Some(dir) = cassandra_dir() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    under_load(dir, Fault::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassandra_paused_under_load() {
    let Some(dir) = cassandra_dir() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let pid = cassandra_pid(&dir);
    under_load(dir, Fault::Paused(pid)).await;
}
