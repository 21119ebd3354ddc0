//! The shared store test suite, written once against the [`Store`] trait. Every backend must
//! pass it unchanged: the embedded store in `tests/store.rs`, ScyllaDB when
//! `CHATNODE_TEST_SCYLLA` names a cluster.
//!
//! Each check uses its own group (from `scope`) so checks never see each other's rows, and each
//! returns an error that says what differed instead of panicking, so a runner can report all.

use crate::ids::{GroupId, MessageId, RoomId, UserId, now_ms};
use crate::protocol::MessageKind;

use super::{
    AppendOutcome, CreateOutcome, DeviceRecord, MediaRecord, MemberRecord, Platform, RoomKind,
    RoomRecord, Store, StoredMessage,
};

/// A failed check: which one and what differed.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct CheckFailed {
    pub check: &'static str,
    pub detail: String,
}

type CheckResult = Result<(), CheckFailed>;

macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(CheckFailed { check: $check, detail: format!($($fmt)+) });
        }
    };
}

macro_rules! ok {
    ($check:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => {
                return Err(CheckFailed {
                    check: $check,
                    detail: format!("store error: {err}"),
                })
            }
        }
    };
}

fn ids(scope: &str, check: &str) -> (GroupId, RoomId) {
    let group = GroupId::parse(&format!("{scope}-{check}")).unwrap_or_else(|_| {
        GroupId::parse("conformance").unwrap_or_else(|_| unreachable!("valid literal"))
    });
    let room = RoomId::parse("room").unwrap_or_else(|_| unreachable!("valid literal"));
    (group, room)
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap_or_else(|_| unreachable!("test user names are valid"))
}

// Test data, shared with the backends' own unit tests.

/// A group room owned by `owner`, created now.
pub fn record(group: &GroupId, room: &RoomId, owner: &UserId) -> RoomRecord {
    RoomRecord {
        group: group.clone(),
        room: room.clone(),
        title: "Conformance".into(),
        kind: RoomKind::Group,
        owner: owner.clone(),
        max: None,
        password_hash: None,
        created: now_ms(),
    }
}

/// A member who joined now and has read nothing.
pub fn member(name: &UserId) -> MemberRecord {
    MemberRecord {
        user: name.clone(),
        cursor: 0,
        cursor_seq: 0,
        joined: now_ms(),
    }
}

/// A text message sent now.
pub fn message(
    id: MessageId,
    seq: u64,
    from: &UserId,
    text: &str,
    cmid: Option<&str>,
) -> StoredMessage {
    StoredMessage {
        id,
        seq,
        from: from.clone(),
        kind: MessageKind::Text,
        text: Some(text.into()),
        media: None,
        ts: now_ms(),
        cmid: cmid.map(str::to_owned),
        edited: None,
        deleted: false,
    }
}

/// Creates `room`, owned by `owner`, with `owner` and then `others` as its members.
async fn create(
    store: &dyn Store,
    group: &GroupId,
    room: &RoomId,
    owner: &UserId,
    others: &[&UserId],
) -> super::StoreResult<CreateOutcome> {
    let members = std::iter::once(owner)
        .chain(others.iter().copied())
        .map(member)
        .collect();
    store.create_room(record(group, room, owner), members).await
}

/// Rooms are created once; a second create returns the first; get and delete work.
pub async fn rooms_create_get_delete(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "rooms_create_get_delete";
    let (group, room) = ids(scope, "rooms");
    let alice = user("alice");
    let rec = record(&group, &room, &alice);
    let first = ok!(
        C,
        store.create_room(rec.clone(), vec![member(&alice)]).await
    );
    ensure!(
        C,
        first == CreateOutcome::Created,
        "first create gave {first:?}"
    );
    let mut other = rec.clone();
    other.title = "Other".into();
    let second = ok!(C, store.create_room(other, vec![member(&alice)]).await);
    ensure!(
        C,
        second == CreateOutcome::Exists(rec.clone()),
        "second create gave {second:?}"
    );
    let got = ok!(C, store.get_room(&group, &room).await);
    ensure!(C, got.as_ref() == Some(&rec), "get gave {got:?}");
    ok!(
        C,
        store
            .append_message(&group, &room, message(10, 1, &alice, "x", Some("c")))
            .await
    );
    ok!(C, store.delete_room(&group, &room).await);
    let gone = ok!(C, store.get_room(&group, &room).await);
    ensure!(C, gone.is_none(), "room still there after delete: {gone:?}");
    let page = ok!(C, store.messages_before(&group, &room, None, 10).await);
    ensure!(C, page.msgs.is_empty(), "messages survived the delete");
    let list = ok!(C, store.chat_list(&alice, &group).await);
    ensure!(C, list.is_empty(), "chat list still names the room");
    // The same id can be created again afterwards, with no old idempotency keys in the way.
    ok!(C, store.create_room(rec, vec![member(&alice)]).await);
    let again = ok!(
        C,
        store
            .append_message(&group, &room, message(11, 1, &alice, "y", Some("c")))
            .await
    );
    ensure!(
        C,
        again == AppendOutcome::Stored,
        "old cmid survived the delete: {again:?}"
    );
    Ok(())
}

/// Pages of history, both directions, with `more` right at the edges.
pub async fn history_pages(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "history_pages";
    let (group, room) = ids(scope, "history");
    let alice = user("alice");
    ok!(C, create(store, &group, &room, &alice, &[]).await);
    for i in 1..=25u64 {
        ok!(
            C,
            store
                .append_message(
                    &group,
                    &room,
                    message(i * 100, i, &alice, &format!("m{i}"), None)
                )
                .await
        );
    }
    let latest = ok!(C, store.messages_before(&group, &room, None, 10).await);
    let got: Vec<u64> = latest.msgs.iter().map(|m| m.id).collect();
    ensure!(
        C,
        got == (16..=25).map(|i| i * 100).collect::<Vec<_>>(),
        "latest page {got:?}"
    );
    ensure!(C, latest.more, "latest page should say more");
    let older = ok!(C, store.messages_before(&group, &room, Some(600), 10).await);
    let got: Vec<u64> = older.msgs.iter().map(|m| m.id).collect();
    ensure!(
        C,
        got == vec![100, 200, 300, 400, 500],
        "page before 600: {got:?}"
    );
    ensure!(C, !older.more, "first page should not say more");
    let exact = ok!(
        C,
        store.messages_before(&group, &room, Some(1100), 10).await
    );
    ensure!(
        C,
        !exact.more && exact.msgs.len() == 10,
        "page of exactly ten: {:?}",
        exact.more
    );
    let after = ok!(C, store.messages_after(&group, &room, 2050, 3).await);
    let got: Vec<u64> = after.msgs.iter().map(|m| m.id).collect();
    ensure!(
        C,
        got == vec![2100, 2200, 2300] && after.more,
        "after 2050: {got:?} {}",
        after.more
    );
    let tail = ok!(C, store.messages_after(&group, &room, 2300, 5).await);
    ensure!(C, tail.msgs.len() == 2 && !tail.more, "tail after 2300");
    let none = ok!(C, store.messages_after(&group, &room, u64::MAX, 5).await);
    ensure!(C, none.msgs.is_empty() && !none.more, "after u64::MAX");
    let at = ok!(C, store.message_at_or_before(&group, &room, 1050).await);
    ensure!(
        C,
        at.map(|m| m.seq) == Some(10),
        "message at or before 1050"
    );
    let before_all = ok!(C, store.message_at_or_before(&group, &room, 50).await);
    ensure!(C, before_all.is_none(), "nothing is at or before 50");
    let loaded = ok!(C, store.load_room(&group, &room, 5).await);
    let Some(loaded) = loaded else {
        return Err(CheckFailed {
            check: C,
            detail: "load_room found nothing".into(),
        });
    };
    let got: Vec<u64> = loaded.recent.iter().map(|m| m.id).collect();
    ensure!(
        C,
        got == vec![2100, 2200, 2300, 2400, 2500],
        "loaded recent {got:?}"
    );
    ensure!(C, loaded.members.len() == 1, "loaded members");
    Ok(())
}

/// The same (sender, room, cmid) is stored once; other senders or rooms are independent.
pub async fn idempotent_append(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "idempotent_append";
    let (group, room) = ids(scope, "idem");
    let (alice, bob) = (user("alice"), user("bob"));
    ok!(C, create(store, &group, &room, &alice, &[&bob]).await);
    let first = message(1000, 1, &alice, "hello", Some("c-1"));
    let a = ok!(C, store.append_message(&group, &room, first.clone()).await);
    ensure!(C, a == AppendOutcome::Stored, "first append {a:?}");
    let b = ok!(
        C,
        store
            .append_message(
                &group,
                &room,
                message(2000, 2, &alice, "hello", Some("c-1"))
            )
            .await
    );
    ensure!(
        C,
        b == AppendOutcome::Duplicate(first.clone()),
        "second append {b:?}"
    );
    let c = ok!(
        C,
        store
            .append_message(&group, &room, message(3000, 2, &bob, "hello", Some("c-1")))
            .await
    );
    ensure!(C, c == AppendOutcome::Stored, "another sender's cmid {c:?}");
    let page = ok!(C, store.messages_before(&group, &room, None, 10).await);
    ensure!(
        C,
        page.msgs.len() == 2,
        "stored {} messages, want 2",
        page.msgs.len()
    );
    // Concurrent duplicates: exactly one is stored.
    let futures = (0..8u64).map(|i| {
        store.append_message(
            &group,
            &room,
            message(4000 + i, 3, &alice, "race", Some("c-race")),
        )
    });
    let outcomes = futures_util::future::join_all(futures).await;
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(AppendOutcome::Stored)))
        .count();
    ensure!(
        C,
        stored == 1,
        "{stored} of 8 concurrent duplicates were stored"
    );
    Ok(())
}

/// Many messages of a room appended in one call: stored in order, outcomes in order, a `cmid`
/// repeated within the call or already stored is a duplicate, and the room's last message and
/// unread counts follow.
pub async fn batched_append(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "batched_append";
    let (group, room) = ids(scope, "batched");
    let (alice, bob) = (user("alice"), user("bob"));
    ok!(C, create(store, &group, &room, &alice, &[&bob]).await);
    let empty = ok!(C, store.append_messages(&group, &room, Vec::new()).await);
    ensure!(C, empty.is_empty(), "an empty batch answered {empty:?}");
    let earlier = message(100, 1, &alice, "earlier", Some("c-earlier"));
    ok!(
        C,
        store.append_message(&group, &room, earlier.clone()).await
    );
    let first = message(200, 2, &alice, "one", Some("c-1"));
    let batch = vec![
        first.clone(),
        message(300, 3, &bob, "no cmid", None),
        // The same cmid again within the call, then one stored by an earlier call.
        message(400, 4, &alice, "one again", Some("c-1")),
        message(500, 4, &alice, "earlier again", Some("c-earlier")),
        // Another sender's identical cmid is independent.
        message(600, 4, &bob, "bob's c-1", Some("c-1")),
    ];
    let outcomes = ok!(C, store.append_messages(&group, &room, batch).await);
    let want = vec![
        AppendOutcome::Stored,
        AppendOutcome::Stored,
        AppendOutcome::Duplicate(first.clone()),
        AppendOutcome::Duplicate(earlier.clone()),
        AppendOutcome::Stored,
    ];
    ensure!(C, outcomes == want, "outcomes {outcomes:?}");
    let page = ok!(C, store.messages_before(&group, &room, None, 10).await);
    let got: Vec<u64> = page.msgs.iter().map(|m| m.id).collect();
    ensure!(C, got == vec![100, 200, 300, 600], "stored {got:?}");
    // A later batch repeating the call (a retry) stores nothing new.
    let retry = ok!(
        C,
        store
            .append_messages(
                &group,
                &room,
                vec![
                    message(700, 5, &alice, "one", Some("c-1")),
                    message(800, 5, &bob, "bob's c-1", Some("c-1")),
                ]
            )
            .await
    );
    ensure!(
        C,
        retry
            .iter()
            .all(|o| matches!(o, AppendOutcome::Duplicate(_))),
        "retry {retry:?}"
    );
    // Many at once, as a busy room hands them over.
    let many: Vec<StoredMessage> = (0..500u64)
        .map(|i| {
            let cmid = format!("m-{i}");
            message(1000 + i, 5 + i, &bob, "many", Some(&cmid))
        })
        .collect();
    let outcomes = ok!(C, store.append_messages(&group, &room, many).await);
    ensure!(
        C,
        outcomes.len() == 500 && outcomes.iter().all(|o| *o == AppendOutcome::Stored),
        "500 appends: {} outcomes",
        outcomes.len()
    );
    let latest = ok!(C, store.messages_before(&group, &room, None, 3).await);
    let got: Vec<u64> = latest.msgs.iter().map(|m| m.id).collect();
    ensure!(C, got == vec![1497, 1498, 1499], "latest after 500 {got:?}");
    let list = ok!(C, store.chat_list(&alice, &group).await);
    ensure!(C, list.len() == 1, "alice's list {list:?}");
    ensure!(
        C,
        list[0].last.as_ref().map(|m| (m.id, m.seq)) == Some((1499, 504)),
        "last message {:?}",
        list[0].last
    );
    ensure!(
        C,
        list[0].unread == 504,
        "alice's unread {}",
        list[0].unread
    );
    Ok(())
}

/// Cursors only move forward; members come and go; the chat list counts unread from cursors.
pub async fn members_cursors_chat_list(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "members_cursors_chat_list";
    let (group, _) = ids(scope, "members");
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let r1 = RoomId::parse("r1").unwrap_or_else(|_| unreachable!());
    let r2 = RoomId::parse("r2").unwrap_or_else(|_| unreachable!());
    ok!(
        C,
        store
            .create_room(
                record(&group, &r1, &alice),
                vec![member(&alice), member(&bob)]
            )
            .await
    );
    ok!(
        C,
        store
            .create_room(record(&group, &r2, &alice), vec![member(&alice)])
            .await
    );
    for i in 1..=4u64 {
        ok!(
            C,
            store
                .append_message(&group, &r1, message(i * 10, i, &alice, "t", None))
                .await
        );
    }
    ok!(
        C,
        store
            .append_message(&group, &r2, message(5, 1, &alice, "old", None))
            .await
    );
    ok!(
        C,
        store
            .save_cursors(
                &group,
                &r1,
                vec![(bob.clone(), 20, 2), (alice.clone(), 40, 4)]
            )
            .await
    );
    ok!(
        C,
        store
            .save_cursors(&group, &r1, vec![(bob.clone(), 10, 1)])
            .await
    );
    let list = ok!(C, store.chat_list(&bob, &group).await);
    ensure!(C, list.len() == 1, "bob's list has {} rooms", list.len());
    ensure!(
        C,
        list[0].unread == 2,
        "bob's unread {} (cursors must not go back)",
        list[0].unread
    );
    ensure!(C, list[0].members == 2, "member count {}", list[0].members);
    ensure!(
        C,
        list[0].last.as_ref().map(|m| m.id) == Some(40),
        "last message"
    );
    let list = ok!(C, store.chat_list(&alice, &group).await);
    let order: Vec<&str> = list.iter().map(|e| e.record.room.as_str()).collect();
    ensure!(C, order.len() == 2, "alice's list {order:?}");
    ensure!(
        C,
        list.iter()
            .all(|e| e.unread == if e.record.room == r1 { 0 } else { 1 }),
        "alice's unread counts"
    );
    ok!(
        C,
        store
            .put_member(
                &group,
                &r1,
                MemberRecord {
                    cursor: 40,
                    cursor_seq: 4,
                    ..member(&carol)
                }
            )
            .await
    );
    ok!(
        C,
        store
            .put_member(
                &group,
                &r1,
                MemberRecord {
                    cursor: 40,
                    cursor_seq: 4,
                    ..member(&carol)
                }
            )
            .await
    );
    let list = ok!(C, store.chat_list(&carol, &group).await);
    ensure!(
        C,
        list.len() == 1 && list[0].unread == 0 && list[0].members == 3,
        "carol after join: {list:?}"
    );
    ok!(C, store.remove_member(&group, &r1, &bob).await);
    let list = ok!(C, store.chat_list(&bob, &group).await);
    ensure!(C, list.is_empty(), "bob still lists r1 after removal");
    let loaded = ok!(C, store.load_room(&group, &r1, 0).await);
    let members = loaded.map(|l| l.members.len()).unwrap_or(0);
    ensure!(C, members == 2, "r1 has {members} members after removal");
    Ok(())
}

/// Edits replace the row; a delete leaves a tombstone that a later edit cannot undo.
pub async fn edit_and_delete(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "edit_and_delete";
    let (group, room) = ids(scope, "edits");
    let alice = user("alice");
    ok!(C, create(store, &group, &room, &alice, &[]).await);
    let original = message(77, 1, &alice, "hello", None);
    ok!(
        C,
        store.append_message(&group, &room, original.clone()).await
    );
    let edited = StoredMessage {
        text: Some("hello!".into()),
        edited: Some(now_ms()),
        ..original.clone()
    };
    ok!(C, store.update_message(&group, &room, edited.clone()).await);
    let got = ok!(C, store.get_message(&group, &room, 77).await);
    ensure!(C, got.as_ref() == Some(&edited), "after edit {got:?}");
    let tomb = StoredMessage {
        text: None,
        media: None,
        deleted: true,
        ..edited.clone()
    };
    ok!(C, store.update_message(&group, &room, tomb.clone()).await);
    ok!(C, store.update_message(&group, &room, edited).await);
    let got = ok!(C, store.get_message(&group, &room, 77).await);
    ensure!(
        C,
        got.as_ref() == Some(&tomb),
        "an edit resurrected a deleted message: {got:?}"
    );
    let list = ok!(C, store.chat_list(&alice, &group).await);
    ensure!(
        C,
        list.first()
            .and_then(|e| e.last.as_ref())
            .is_some_and(|m| m.deleted),
        "chat list shows the tombstone"
    );
    Ok(())
}

fn media(id: &str, group: &GroupId, room: &RoomId, uploader: &UserId) -> MediaRecord {
    MediaRecord {
        id: id.to_owned(),
        group: group.clone(),
        room: room.clone(),
        uploader: uploader.clone(),
        content_type: "image/png".into(),
        size: 12_345,
        name: Some("cat 🐈.png".into()),
        created: now_ms(),
        has_thumbnail: false,
    }
}

/// Media records: put, get, the thumbnail flag (never recreating a deleted record), delete,
/// and deletion with their room.
pub async fn media_records(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "media_records";
    let (group, room) = ids(scope, "media");
    let alice = user("alice");
    ok!(C, create(store, &group, &room, &alice, &[]).await);
    let (id1, id2, id3) = (
        format!("{scope}-media-1"),
        format!("{scope}-media-2"),
        format!("{scope}-media-3"),
    );
    let first = media(&id1, &group, &room, &alice);
    ok!(C, store.put_media(first.clone()).await);
    let got = ok!(C, store.get_media(&id1).await);
    ensure!(C, got.as_ref() == Some(&first), "after put {got:?}");
    let missing = ok!(C, store.get_media(&format!("{scope}-none")).await);
    ensure!(
        C,
        missing.is_none(),
        "a media that was never put: {missing:?}"
    );
    let marked = ok!(C, store.set_media_thumbnail(&id1).await);
    ensure!(
        C,
        marked,
        "marking an existing media's thumbnail gave false"
    );
    let got = ok!(C, store.get_media(&id1).await);
    ensure!(
        C,
        got.as_ref()
            .is_some_and(|m| m.has_thumbnail && m.size == first.size),
        "after the thumbnail {got:?}"
    );
    ok!(C, store.delete_media(&id1).await);
    ok!(C, store.delete_media(&id1).await);
    let got = ok!(C, store.get_media(&id1).await);
    ensure!(C, got.is_none(), "after delete {got:?}");
    let marked = ok!(C, store.set_media_thumbnail(&id1).await);
    ensure!(C, !marked, "a thumbnail mark found a deleted media");
    let got = ok!(C, store.get_media(&id1).await);
    ensure!(
        C,
        got.is_none(),
        "a thumbnail mark recreated a deleted media: {got:?}"
    );
    // Deleting the room deletes its media records, and only its own.
    let (other_group, other_room) = ids(scope, "media-other");
    let kept = media(&id3, &other_group, &other_room, &alice);
    ok!(C, store.put_media(media(&id2, &group, &room, &alice)).await);
    ok!(C, store.put_media(kept.clone()).await);
    ok!(C, store.delete_room(&group, &room).await);
    let got = ok!(C, store.get_media(&id2).await);
    ensure!(C, got.is_none(), "a deleted room's media survived: {got:?}");
    let got = ok!(C, store.get_media(&id3).await);
    ensure!(
        C,
        got.as_ref() == Some(&kept),
        "another room's media: {got:?}"
    );
    ok!(C, store.delete_media(&id3).await);
    Ok(())
}

/// Push devices per user (a known token keeps `created`) and room mutes (forgotten when the
/// member leaves or the room is deleted).
pub async fn devices_and_mutes(store: &dyn Store, scope: &str) -> CheckResult {
    const C: &str = "devices_and_mutes";
    let (group, room) = ids(scope, C);
    let alice = user(&format!("{scope}-alice"));
    let bob = user(&format!("{scope}-bob"));
    let carol = user(&format!("{scope}-carol"));
    let device = |token: &str, platform, at| DeviceRecord {
        token: token.to_owned(),
        platform,
        created: at,
        last_used: at,
    };
    ok!(
        C,
        store
            .put_device(&alice, device("tok-a1", Platform::Android, 1_000))
            .await
    );
    ok!(
        C,
        store
            .put_device(&alice, device("tok-a2:x_y-z", Platform::Ios, 2_000))
            .await
    );
    ok!(
        C,
        store
            .put_device(&bob, device("tok-b1", Platform::Web, 3_000))
            .await
    );
    // Registering a known token again keeps `created` and takes the rest.
    ok!(
        C,
        store
            .put_device(&alice, device("tok-a1", Platform::Web, 5_000))
            .await
    );
    let found = ok!(
        C,
        store
            .devices_of(&[carol.clone(), alice.clone(), bob.clone()])
            .await
    );
    let users: Vec<&UserId> = found.iter().map(|(u, _)| u).collect();
    ensure!(
        C,
        users == [&alice, &bob],
        "users with devices, in order: {users:?}"
    );
    let mut mine = found[0].1.clone();
    mine.sort_by(|a, b| a.token.cmp(&b.token));
    ensure!(C, mine.len() == 2, "alice has {} devices", mine.len());
    ensure!(
        C,
        (mine[0].platform, mine[0].created, mine[0].last_used) == (Platform::Web, 1_000, 5_000),
        "re-registered device: {:?}",
        mine[0]
    );
    ensure!(
        C,
        mine[1].token == "tok-a2:x_y-z" && mine[1].platform == Platform::Ios,
        "second device: {:?}",
        mine[1]
    );
    ok!(C, store.delete_device(&alice, "tok-a2:x_y-z").await);
    ok!(C, store.delete_device(&alice, "never-registered").await);
    let found = ok!(C, store.devices_of(std::slice::from_ref(&alice)).await);
    ensure!(
        C,
        found.len() == 1 && found[0].1.len() == 1 && found[0].1[0].token == "tok-a1",
        "after delete: {found:?}"
    );

    ok!(
        C,
        create(store, &group, &room, &alice, &[&bob, &carol]).await
    );
    let everyone = [alice.clone(), bob.clone(), carol.clone()];
    ok!(C, store.set_muted(&group, &room, &alice, true).await);
    ok!(C, store.set_muted(&group, &room, &bob, true).await);
    ok!(C, store.set_muted(&group, &room, &bob, true).await);
    let muted = ok!(C, store.muted_among(&group, &room, &everyone).await);
    ensure!(
        C,
        muted.len() == 2 && muted.contains(&alice) && muted.contains(&bob),
        "muted: {muted:?}"
    );
    ok!(C, store.set_muted(&group, &room, &alice, false).await);
    let muted = ok!(C, store.muted_among(&group, &room, &everyone).await);
    ensure!(
        C,
        muted.len() == 1 && muted.contains(&bob),
        "after unmute: {muted:?}"
    );
    ok!(C, store.remove_member(&group, &room, &bob).await);
    let muted = ok!(C, store.muted_among(&group, &room, &everyone).await);
    ensure!(C, muted.is_empty(), "after bob left: {muted:?}");
    ok!(C, store.set_muted(&group, &room, &carol, true).await);
    ok!(C, store.delete_room(&group, &room).await);
    let muted = ok!(C, store.muted_among(&group, &room, &everyone).await);
    ensure!(C, muted.is_empty(), "after the room was deleted: {muted:?}");
    Ok(())
}

/// Runs every check against `store`, in a scope of group names unique to this run.
pub async fn run_all(store: &dyn Store, scope: &str) -> Vec<CheckFailed> {
    let mut failed = Vec::new();
    for result in [
        rooms_create_get_delete(store, scope).await,
        history_pages(store, scope).await,
        idempotent_append(store, scope).await,
        batched_append(store, scope).await,
        members_cursors_chat_list(store, scope).await,
        edit_and_delete(store, scope).await,
        devices_and_mutes(store, scope).await,
        media_records(store, scope).await,
    ] {
        if let Err(e) = result {
            failed.push(e);
        }
    }
    if let Err(e) = store.ping().await {
        failed.push(CheckFailed {
            check: "ping",
            detail: e.to_string(),
        });
    }
    failed
}
