//! The shared store suite (`chatnode::store::conformance`) against the embedded backend, plus
//! its durability across a reopen.

use std::sync::Arc;

use chatnode::ids::{GroupId, RoomId, UserId, now_ms};
use chatnode::protocol::MessageKind;
use chatnode::store::embedded::EmbeddedStore;
use chatnode::store::{MemberRecord, RoomKind, RoomRecord, Store, StoredMessage, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_shared_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let failed = conformance::run_all(&store, "embedded").await;
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = GroupId::parse("g").expect("id");
    let room = RoomId::parse("r").expect("id");
    let alice = UserId::parse("alice").expect("id");
    {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        store
            .create_room(
                RoomRecord {
                    group: group.clone(),
                    room: room.clone(),
                    title: "t".into(),
                    kind: RoomKind::Group,
                    owner: alice.clone(),
                    max: None,
                    password_hash: None,
                    created: now_ms(),
                },
                vec![MemberRecord {
                    user: alice.clone(),
                    cursor: 0,
                    cursor_seq: 0,
                    joined: now_ms(),
                }],
            )
            .await
            .expect("create");
        let writes = (1..=500u64).map(|i| {
            let store = store.clone();
            let (group, room, alice) = (group.clone(), room.clone(), alice.clone());
            tokio::spawn(async move {
                store
                    .append_message(
                        &group,
                        &room,
                        StoredMessage {
                            id: i,
                            seq: i,
                            from: alice,
                            kind: MessageKind::Text,
                            text: Some(format!("m{i}")),
                            media: None,
                            ts: now_ms(),
                            cmid: Some(format!("c{i}")),
                            edited: None,
                            deleted: false,
                        },
                    )
                    .await
            })
        });
        for w in futures_util::future::join_all(writes).await {
            w.expect("join").expect("append");
        }
        store
            .save_cursors(&group, &room, vec![(alice.clone(), 250, 250)])
            .await
            .expect("cursor");
        store.close().await.expect("close");
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    let loaded = store
        .load_room(&group, &room, 10)
        .await
        .expect("load")
        .expect("room");
    assert_eq!(loaded.recent.len(), 10);
    assert_eq!(loaded.recent.last().map(|m| m.id), Some(500));
    assert_eq!(loaded.members[0].cursor, 250);
    let page = store
        .messages_before(&group, &room, None, 200)
        .await
        .expect("page");
    assert_eq!(page.msgs.len(), 200);
    assert!(page.more);
    store.close().await.expect("close");
}
