//! Store faults: a full disk under the embedded store. The node's data directory is a small
//! tmpfs; while the disk is full the node refuses writes with `unavailable` (and stores nothing
//! it refused) and `/readyz` says not ready and why; once space is back it takes writes again by
//! itself and is ready, with every acknowledged message kept exactly once, also across a
//! restart.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Rest, TestClient, TestNode, token};

const G: &str = "team";
/// How long the node may take to take writes again once space is back.
const RECOVERY: Duration = Duration::from_secs(20);

/// A tmpfs mounted for one test, unmounted on drop (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), or says why it could not.
    fn mount(size: &str) -> Result<Self, String> {
        let parent = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).map_err(|e| format!("mount point: {e}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a node that did not exit yet): detach it now, freed when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the file system of `dir` with a ballast file until it is full, then gives back about
/// `leave` bytes, so that the next writes soon find the disk full.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("ballast");
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut written = 0u64;
    while let Ok(n @ 1..) = file.write(&chunk) {
        written += n as u64;
    }
    file.set_len(written.saturating_sub(leave))
        .expect("shrink ballast");
    path
}

/// Writes a second ballast file until the file system of `dir` is full to the last byte.
fn fill_more(dir: &Path) -> PathBuf {
    let path = dir.join("ballast-2");
    let mut file = std::fs::File::create(&path).expect("ballast");
    let mut chunk = vec![0x5Au8; 64 * 1024];
    while !chunk.is_empty() {
        match file.write(&chunk) {
            Ok(0) | Err(_) => chunk.truncate(chunk.len() / 2),
            Ok(_) => {}
        }
    }
    path
}

/// `len` letters that do not compress (a xorshift sequence), so messages fill the disk.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A message id as the test compares it (WebSocket ids are numbers, REST ids strings).
fn id_of(frame: &Value) -> String {
    match &frame["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("no id in {frame}: {other}"),
    }
}

/// `GET /readyz`: the status and the body (JSON when it is one).
async fn readyz(node: &TestNode) -> (u16, Value) {
    let resp = reqwest::get(node.http("/readyz")).await.expect("readyz");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn send_frame(cmid: &str, text: &str) -> Value {
    json!({"t": "send", "group": G, "room": "r", "kind": "text", "text": text, "cmid": cmid})
}

/// Every message of room `r`, oldest first, paged through REST.
async fn all_messages(rest: &Rest) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..1_000 {
        let path = match &before {
            Some(b) => format!("/v1/groups/{G}/rooms/r/messages?limit=200&before={b}"),
            None => format!("/v1/groups/{G}/rooms/r/messages?limit=200"),
        };
        let (status, page) = rest.get(&path).await;
        assert_eq!(status, 200, "history: {page}");
        let msgs = page["msgs"].as_array().expect("msgs").clone();
        before = msgs.first().map(id_of);
        out.splice(0..0, msgs);
        if page["more"] != json!(true) || before.is_none() {
            return out;
        }
    }
    panic!("history did not end");
}

/// Asserts that the history of room `r` holds exactly the acknowledged messages, each once
/// and with the id it was acknowledged with: nothing acknowledged is lost or doubled, and
/// nothing refused was stored after all.
async fn assert_history(rest: &Rest, acked: &BTreeMap<String, String>, when: &str) {
    let mut stored: HashMap<String, Vec<String>> = HashMap::new();
    for m in all_messages(rest).await {
        let cmid = m["cmid"].as_str().expect("every message has a cmid");
        stored.entry(cmid.to_owned()).or_default().push(id_of(&m));
    }
    for (cmid, id) in acked {
        assert_eq!(
            stored.get(cmid),
            Some(&vec![id.clone()]),
            "{when}: acknowledged message {cmid} is stored once"
        );
    }
    let unacked: Vec<_> = stored.keys().filter(|c| !acked.contains_key(*c)).collect();
    assert!(
        unacked.is_empty(),
        "{when}: messages stored although refused: {unacked:?}"
    );
}

/// Sends with `cmid` until the node answers `sent`, for at most [`RECOVERY`]; the `sent` frame.
async fn send_until_sent(client: &mut TestClient, cmid: &str, text: &str) -> Value {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let reply = client.call(send_frame(cmid, text)).await;
        if reply["t"] == "sent" {
            return reply;
        }
        assert_eq!(reply["code"], "unavailable", "send: {reply}");
        assert!(
            Instant::now() < deadline,
            "the node did not take writes again within {RECOVERY:?}: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_and_recovers_without_restart() {
    let tmpfs = match Tmpfs::mount("48m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the disk-full test, but the tmpfs could not be mounted: {why}"
            );
            println!("skipped: the disk-full test needs to mount a tmpfs (run as root): {why}");
            return;
        }
    };
    let data_dir = tmpfs.dir.to_str().expect("utf-8 path").to_owned();
    // The disk under test is the embedded store's: on a node run on Cassandra too, this node
    // keeps its messages on the local disk (a full local disk does not touch a CQL server).
    let mut node = TestNode::spawn(&[
        ("CHATNODE_DATA_DIR", &data_dir),
        ("CHATNODE_STORE", "embedded"),
    ]);
    let rest = node.rest(&token("alice"));
    rest.create_room(G, "r", &["bob"]).await;
    let mut alice = node.connect("alice").await;
    alice.enter(G, "r").await;
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let first = alice.say(G, "r", "before", "c-first").await;
    acked.insert("c-first".into(), id_of(&first));

    // Fill the disk, then send until the node refuses.
    let ballast = fill(&tmpfs.dir, 1024 * 1024);
    let mut refused = None;
    for i in 0..2_000u64 {
        let cmid = format!("c-{i}");
        let reply = alice.call(send_frame(&cmid, &noise(i, 8_000))).await;
        if reply["t"] == "sent" {
            acked.insert(cmid, id_of(&reply));
            continue;
        }
        assert_eq!(reply["t"], "err", "send: {reply}");
        assert_eq!(reply["code"], "unavailable", "send on a full disk: {reply}");
        refused = Some(cmid);
        break;
    }
    let refused = refused.expect("a full disk refused a send");
    assert!(acked.len() > 1, "some sends fit before the disk was full");

    // Fill what the refused batch left, so that the disk stays full: every kind of write is
    // refused meanwhile (503 over REST), and nothing refused is stored.
    let top_up = fill_more(&tmpfs.dir);
    let again = alice.call(send_frame(&refused, &noise(7, 8_000))).await;
    assert_eq!(again["code"], "unavailable", "send on a full disk: {again}");
    let rest_send = json!({"kind": "text", "text": noise(8, 8_000), "cmid": "c-rest"});
    let (status, body) = rest
        .post(
            &format!("/v1/groups/{G}/rooms/r/messages"),
            rest_send.clone(),
        )
        .await;
    assert_eq!(status, 503, "REST send on a full disk: {body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let new_room = json!({"room": "r2", "title": "r2", "kind": "group", "members": ["bob"]});
    let (status, body) = rest
        .post(&format!("/v1/groups/{G}/rooms"), new_room.clone())
        .await;
    assert_eq!(status, 503, "room creation on a full disk: {body}");
    // Readiness says why, as long as writes are refused.
    let (status, body) = readyz(&node).await;
    assert_eq!(status, 503, "readyz while writes are refused: {body}");
    assert_eq!(body["error"]["code"], "unavailable", "readyz: {body}");
    let reason = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("refuses writes") && reason.contains("No space left"),
        "readyz names the reason: {reason}"
    );

    // Space comes back: the node takes writes again by itself.
    std::fs::remove_file(&ballast).expect("remove ballast");
    std::fs::remove_file(&top_up).expect("remove ballast");
    let after = send_until_sent(&mut alice, "c-after", "after the disk was freed").await;
    acked.insert("c-after".into(), id_of(&after));
    let again = alice.call(send_frame(&refused, "sent again")).await;
    assert_eq!(again["t"], "sent", "the refused send, again: {again}");
    acked.insert(refused.clone(), id_of(&again));
    let (status, body) = rest
        .post(&format!("/v1/groups/{G}/rooms/r/messages"), rest_send)
        .await;
    assert_eq!(status, 201, "REST send after recovery: {body}");
    acked.insert("c-rest".into(), id_of(&body));
    let resp = reqwest::Client::new()
        .post(node.http(&format!("/v1/groups/{G}/rooms/r/media?name=a.pdf")))
        .bearer_auth(token("alice"))
        .header("content-type", "application/pdf")
        .body(
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
                .to_vec(),
        )
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 201, "upload after recovery");
    let (status, body) = rest.post(&format!("/v1/groups/{G}/rooms"), new_room).await;
    assert_eq!(status, 201, "room creation after recovery: {body}");
    let (status, body) = readyz(&node).await;
    assert_eq!(status, 200, "readyz after recovery: {body}");

    // Exactly the acknowledged messages, as the room serves them and as the store kept them.
    assert_history(&rest, &acked, "after recovery").await;
    for (cmid, id) in &acked {
        let again = alice.call(send_frame(cmid, "resent")).await;
        assert_eq!(again["t"], "sent", "resend {cmid}: {again}");
        assert_eq!(&id_of(&again), id, "resend {cmid} answers its first id");
    }
    drop(alice);
    node.restart();
    let rest = node.rest(&token("alice"));
    assert_history(&rest, &acked, "after a restart").await;
    drop(node);
    drop(tmpfs);
}
