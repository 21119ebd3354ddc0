//! The shared store suite (`chatnode::store::conformance`) against ScyllaDB.
//!
//! It runs when `CHATNODE_TEST_SCYLLA` names a contact point (`host:port`, or several separated
//! by commas; `CHATNODE_TEST_SCYLLA_USERNAME` and `CHATNODE_TEST_SCYLLA_PASSWORD` if the cluster
//! wants them). Each run migrates a fresh keyspace (replication 1) and drops it afterwards.
//! `scripts/test.sh` starts an Apache Cassandra 5.0 node (`scripts/cassandra.sh`) and sets the
//! variable, so this runs on a real CQL server in every run of the test command. Without the
//! variable the test prints that it was skipped and passes, except under CI (`CI` set), where a
//! missing server is a failure: CI must never skip it.

use chatnode::config::ScyllaSettings;
use chatnode::ids::{GroupId, RoomId, UserId, now_ms};
use chatnode::protocol::MessageKind;
use chatnode::store::scylla::buckets::first_id;
use chatnode::store::scylla::schema::SCHEMA_VERSION;
use chatnode::store::scylla::{Migrated, OpenError, ScyllaStore, drop_keyspace, migrate};
use chatnode::store::{
    AppendOutcome, MemberRecord, RoomKind, RoomRecord, Store, StoredMessage, conformance,
};

fn settings(nodes: &str, keyspace: &str) -> ScyllaSettings {
    ScyllaSettings {
        nodes: Some(nodes.to_owned()),
        keyspace: keyspace.to_owned(),
        replication: "1".into(),
        username: std::env::var("CHATNODE_TEST_SCYLLA_USERNAME").ok(),
        password: std::env::var("CHATNODE_TEST_SCYLLA_PASSWORD").ok(),
        request_timeout_ms: 10_000,
        ..ScyllaSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_passes_the_shared_suite() {
    let nodes = std::env::var("CHATNODE_TEST_SCYLLA").unwrap_or_default();
    if nodes.trim().is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CHATNODE_TEST_SCYLLA is not set under CI: scripts/test.sh starts Cassandra for it"
        );
        println!("skipped: CHATNODE_TEST_SCYLLA is not set");
        return;
    }
    let keyspace = format!("chatnode_test_{}_{}", std::process::id(), now_ms());
    let settings = settings(&nodes, &keyspace);
    let outcome = run(&settings).await;
    // The keyspace goes whatever happened; a failure to drop it is reported after the checks.
    let dropped = drop_keyspace(&settings).await;
    let failed = outcome.unwrap_or_else(|e| vec![e]);
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    dropped.expect("drop the test keyspace");
}

async fn run(settings: &ScyllaSettings) -> Result<Vec<String>, String> {
    // Before `migrate`, a node refuses to start and says why.
    match ScyllaStore::open(settings).await {
        Err(OpenError::KeyspaceMissing(_)) => {}
        Err(e) => return Err(format!("open before migrate: {e}")),
        Ok(_) => return Err("opened a keyspace that does not exist".into()),
    }
    let first = migrate(settings)
        .await
        .map_err(|e| format!("migrate: {e}"))?;
    if first
        != (Migrated::Applied {
            from: None,
            to: SCHEMA_VERSION,
        })
    {
        return Err(format!("first migrate gave {first:?}"));
    }
    let again = migrate(settings)
        .await
        .map_err(|e| format!("migrate again: {e}"))?;
    if again != Migrated::UpToDate(SCHEMA_VERSION) {
        return Err(format!("second migrate gave {again:?}"));
    }
    let store = ScyllaStore::open(settings)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let mut failed: Vec<String> = conformance::run_all(&store, "scylla")
        .await
        .into_iter()
        .map(|f| f.to_string())
        .collect();
    if let Err(e) = history_across_buckets(&store).await {
        failed.push(format!("history_across_buckets: {e}"));
    }
    if let Err(e) = store.close().await {
        failed.push(format!("close: {e}"));
    }
    Ok(failed)
}

/// Messages far apart in time land in different buckets; pages walk across them and stop at
/// the room's first bucket.
async fn history_across_buckets(store: &ScyllaStore) -> Result<(), String> {
    let group = GroupId::parse("scylla-buckets").map_err(|e| e.to_string())?;
    let room = RoomId::parse("room").map_err(|e| e.to_string())?;
    let alice = UserId::parse("alice").map_err(|e| e.to_string())?;
    let record = RoomRecord {
        group: group.clone(),
        room: room.clone(),
        title: "buckets".into(),
        kind: RoomKind::Group,
        owner: alice.clone(),
        max: None,
        password_hash: None,
        created: now_ms(),
    };
    let member = MemberRecord {
        user: alice.clone(),
        cursor: 0,
        cursor_seq: 0,
        joined: now_ms(),
    };
    store
        .create_room(record, vec![member])
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<u64> = [(7i64, 1u64), (7, 2), (40, 1), (41, 5), (9_000, 3)]
        .iter()
        .map(|(bucket, k)| first_id(*bucket) + k)
        .collect();
    for (seq, id) in ids.iter().enumerate() {
        let msg = StoredMessage {
            id: *id,
            seq: seq as u64 + 1,
            from: alice.clone(),
            kind: MessageKind::Text,
            text: Some(format!("m{seq}")),
            media: None,
            ts: now_ms(),
            cmid: Some(format!("c{seq}")),
            edited: None,
            deleted: false,
        };
        let outcome = store
            .append_message(&group, &room, msg)
            .await
            .map_err(|e| e.to_string())?;
        if outcome != AppendOutcome::Stored {
            return Err(format!("append {id}: {outcome:?}"));
        }
    }
    let got = |page: chatnode::store::Page| page.msgs.iter().map(|m| m.id).collect::<Vec<_>>();
    let latest = store
        .messages_before(&group, &room, None, 3)
        .await
        .map_err(|e| e.to_string())?;
    if got(latest.clone()) != ids[2..].to_vec() || !latest.more {
        return Err(format!("latest three: {latest:?}"));
    }
    let older = store
        .messages_before(&group, &room, Some(ids[2]), 10)
        .await
        .map_err(|e| e.to_string())?;
    if got(older.clone()) != ids[..2].to_vec() || older.more {
        return Err(format!("before the third: {older:?}"));
    }
    let newer = store
        .messages_after(&group, &room, ids[0], 3)
        .await
        .map_err(|e| e.to_string())?;
    if got(newer.clone()) != ids[1..4].to_vec() || !newer.more {
        return Err(format!("after the first: {newer:?}"));
    }
    let at = store
        .message_at_or_before(&group, &room, first_id(9_000) - 1)
        .await
        .map_err(|e| e.to_string())?;
    if at.map(|m| m.id) != Some(ids[3]) {
        return Err("message at or before the last bucket".into());
    }
    store
        .delete_room(&group, &room)
        .await
        .map_err(|e| e.to_string())?;
    let gone = store
        .messages_before(&group, &room, None, 10)
        .await
        .map_err(|e| e.to_string())?;
    if !gone.msgs.is_empty() {
        return Err("messages survived the delete".into());
    }
    Ok(())
}
