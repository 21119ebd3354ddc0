//! Fan-out: one `msg` to 500 present connections.
//!
//! - `broadcast 500`: the room's broadcast step alone (encode once, 500 queue pushes), with the
//!   real `Encoded` and `SessionHandle` types.
//! - `room actor 500`: a real `NodeSupervisor` → `GroupActor` → `RoomActor` with the embedded
//!   store on tmpfs (`/dev/shm` when present, so fsync costs nothing and the actor path is what
//!   is measured): post one message and wait until all 500 queues hold it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use chatnode::actors::ActorDeps;
use chatnode::actors::Responder;
use chatnode::actors::group::ResolveRoom;
use chatnode::actors::room::{Attach, PostMessage};
use chatnode::actors::supervisor::{GetGroup, NodeSupervisor};
use chatnode::config::Settings;
use chatnode::ids::{GroupId, RoomId, Snowflake, UserId, now_ms};
use chatnode::protocol::MessageKind;
use chatnode::protocol::frame::{Id, ServerFrame};
use chatnode::session::handle::{Encoded, Outbound, SessionHandle, Transport};
use chatnode::store::embedded::EmbeddedStore;
use chatnode::store::{MemberRecord, RoomKind, RoomRecord, Store};

/// The node's allocator, so the bench measures what the node runs (see [`chatnode::Allocator`]).
#[global_allocator]
static ALLOCATOR: chatnode::Allocator = chatnode::Allocator;

const MEMBERS: usize = 500;

fn sessions(n: usize) -> (Vec<SessionHandle>, Vec<Outbound>) {
    sessions_over(n, Transport::WebSocket)
}

fn sessions_over(n: usize, transport: Transport) -> (Vec<SessionHandle>, Vec<Outbound>) {
    (0..n)
        .map(|i| {
            let user = UserId::parse(&format!("user{i}")).expect("id");
            SessionHandle::new(user, transport, 1 << 16)
        })
        .unzip()
}

fn broadcast(c: &mut Criterion) {
    for (name, transport) in [
        (
            "broadcast 500 WebSocket (encode once + 500 queue pushes)",
            Transport::WebSocket,
        ),
        (
            "broadcast 500 SSE (encode once + 500 queue pushes)",
            Transport::Sse,
        ),
    ] {
        broadcast_over(c, name, transport);
    }
}

fn broadcast_over(c: &mut Criterion, name: &str, transport: Transport) {
    let (handles, mut queues) = sessions_over(MEMBERS, transport);
    let text = "x".repeat(100);
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let frame = ServerFrame::Msg {
                    group: "g",
                    room: "r",
                    id: Id(42),
                    from: "user0",
                    kind: MessageKind::Text,
                    text: Some(&text),
                    media: None,
                    ts: 1,
                    unread: 0,
                    cmid: Some("c"),
                };
                let start = Instant::now();
                let encoded = Encoded::new(&frame);
                for h in &handles {
                    h.deliver(&encoded);
                }
                total += start.elapsed();
                for q in &mut queues {
                    while q.rx.try_recv().is_ok() {}
                }
            }
            total
        })
    });
}

fn room_actor(c: &mut Criterion) {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("tmpfs dir")
    } else {
        tempfile::tempdir().expect("temp dir")
    };
    let system = actix::System::new();
    let (room, mut queues, author) = system.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
        let group = GroupId::parse("g").expect("id");
        let room_id = RoomId::parse("big").expect("id");
        let (handles, queues) = sessions(MEMBERS);
        let members = handles
            .iter()
            .map(|h| MemberRecord {
                user: h.user().clone(),
                cursor: 0,
                cursor_seq: 0,
                joined: now_ms(),
            })
            .collect();
        store
            .create_room(
                RoomRecord {
                    group: group.clone(),
                    room: room_id.clone(),
                    title: "big".into(),
                    kind: RoomKind::Group,
                    owner: handles[0].user().clone(),
                    max: None,
                    password_hash: None,
                    created: now_ms(),
                },
                members,
            )
            .await
            .expect("create");
        let deps = ActorDeps {
            settings: Arc::new(Settings::default()),
            store,
            snowflake: Arc::new(Snowflake::new(0)),
            media: Arc::new(chatnode::media::MediaStore::in_memory(
                &chatnode::config::MediaSettings::default(),
            )),
            push: chatnode::push::PushHandle::disabled(),
        };
        let supervisor = actix::Actor::start(NodeSupervisor::new(deps, Vec::new()));
        let group_addr = supervisor
            .send(GetGroup { group, near: None })
            .await
            .expect("mailbox")
            .expect("group");
        let room = group_addr
            .send(ResolveRoom { room: room_id })
            .await
            .expect("mailbox")
            .expect("room");
        for h in &handles {
            let (responder, _rx) = Responder::channel();
            room.send(Attach {
                session: h.clone(),
                service: false,
                since: None,
                limit: 1,
                responder,
            })
            .await
            .expect("attach");
        }
        (room, queues, handles[0].user().clone())
    });
    for q in &mut queues {
        while q.rx.try_recv().is_ok() {}
    }
    let mut n = 0u64;
    c.bench_function("room actor: post → 500 deliveries (tmpfs store)", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    let (responder, rx) = Responder::channel();
                    room.send(PostMessage {
                        from: author.clone(),
                        from_name: None,
                        service: false,
                        kind: MessageKind::Text,
                        text: Some("x".repeat(100)),
                        media: None,
                        cmid: format!("c{n}"),
                        responder,
                    })
                    .await
                    .expect("post");
                    rx.await.expect("answer").expect("sent");
                    for q in &mut queues {
                        while q.rx.try_recv().is_err() {
                            tokio::task::yield_now().await;
                        }
                        while q.rx.try_recv().is_ok() {}
                    }
                }
                start.elapsed()
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = broadcast, room_actor
}
criterion_main!(benches);
