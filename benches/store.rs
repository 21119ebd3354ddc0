//! The embedded store: durable appends with group commit (many concurrent writers, as many
//! rooms produce them: one message per call, and each room's messages in one call), the latest
//! page of a room, and the chat list of a user with 1,000 rooms.
//!
//! Criterion reports the mean; the targets are stated as throughput and p99, so each bench also
//! prints those from its own samples.
//!
//! `STORE_BENCH_NAMES=short|uuid|default` picks the length of the group and room names in the
//! append benches (see [`names`]): `STORE_BENCH_NAMES=uuid cargo bench --bench store`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use chatnode::ids::{GroupId, RoomId, UserId, now_ms};
use chatnode::protocol::MessageKind;
use chatnode::store::conformance::{member, record};
use chatnode::store::embedded::EmbeddedStore;
use chatnode::store::{MemberRecord, RoomKind, RoomRecord, Store, StoredMessage};

/// The node's allocator, so the bench measures what the node runs (see [`chatnode::Allocator`]).
#[global_allocator]
static ALLOCATOR: chatnode::Allocator = chatnode::Allocator;

const ROOMS: usize = 100;
/// Messages per timed burst of appends.
const BURST: u64 = 10_000;
const TEXT: usize = 120;

fn message(id: u64, seq: u64, from: &UserId) -> StoredMessage {
    StoredMessage {
        id,
        seq,
        from: from.clone(),
        kind: MessageKind::Text,
        text: Some("x".repeat(TEXT)),
        media: None,
        ts: now_ms(),
        cmid: Some(format!("cmid-{id}")),
        edited: None,
        deleted: false,
    }
}

/// The names of the append benches' group and rooms, from `STORE_BENCH_NAMES`: `short` (`b`,
/// `r0`..), `uuid` (36-character UUIDs, as many apps name things), or the default (`bench`,
/// `room0`..). The store's keys begin with both names, so their length weighs on every key
/// comparison in the memtable.
fn names() -> (GroupId, fn(usize) -> String) {
    let (group, room): (&str, fn(usize) -> String) =
        match std::env::var("STORE_BENCH_NAMES").as_deref() {
            Ok("short") => ("b", |r| format!("r{r}")),
            Ok("uuid") => ("3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f", |r| {
                format!("8e7d6c5b-4a39-4281-b7c6-d5e4f3a2b{r:03}")
            }),
            Ok("default") | Err(_) => ("bench", |r| format!("room{r}")),
            Ok(other) => panic!("STORE_BENCH_NAMES is short, uuid or default, not {other}"),
        };
    (GroupId::parse(group).expect("a group id"), room)
}

async fn setup(store: &EmbeddedStore, group: &GroupId, user: &UserId) -> Vec<RoomId> {
    let (_, room_name) = names();
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let room = RoomId::parse(&room_name(r)).expect("a room id");
        store
            .create_room(record(group, &room, user), vec![member(user)])
            .await
            .expect("create");
        rooms.push(room);
    }
    rooms
}

/// Times `iters` bursts of [`BURST`] messages for criterion and keeps each burst's rate in
/// `rates`. `prepare` builds one burst's messages, untimed (the store's callers hand over
/// messages they already hold); `burst` starts their writes and returns what waits for all of
/// them, which is what is timed.
fn timed_bursts<I, W: Future<Output = ()>>(
    runtime: &tokio::runtime::Runtime,
    iters: u64,
    rates: &mut Vec<f64>,
    mut prepare: impl FnMut() -> I,
    mut burst: impl FnMut(I) -> W,
) -> Duration {
    runtime.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let input = prepare();
            let start = Instant::now();
            burst(input).await;
            let elapsed = start.elapsed();
            rates.push(BURST as f64 / elapsed.as_secs_f64());
            total += elapsed;
        }
        total
    })
}

/// Prints the median of `rates` and the sustained rate (all messages over all the bursts' time,
/// which counts the slow bursts that flushes and compactions cause), as `what: median N
/// messages/s, sustained S messages/s, over M bursts of BURST{how}`, and the slowest bursts.
fn print_rates(rates: &mut [f64], what: &str, how: &str) {
    rates.sort_by(f64::total_cmp);
    let seconds: f64 = rates.iter().map(|r| BURST as f64 / r).sum();
    let sustained = (rates.len() as f64 * BURST as f64) / seconds;
    if let Some(median) = rates.get(rates.len() / 2) {
        let burst_ms = |r: f64| BURST as f64 / r * 1000.0;
        let p10 = rates[rates.len() / 10];
        println!(
            "{what}: median {median:.0} messages/s, sustained {sustained:.0} messages/s, over {} \
             bursts of {BURST}{how}; burst time median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            rates.len(),
            burst_ms(*median),
            burst_ms(p10),
            burst_ms(rates[0]),
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A store of its own in a temporary directory (kept while the directory lives).
fn temp_store() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    (dir, store)
}

/// A two-thread runtime and a [`temp_store`].
fn runtime_and_store() -> (
    tokio::runtime::Runtime,
    tempfile::TempDir,
    Arc<EmbeddedStore>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, store) = temp_store();
    (runtime, dir, store)
}

fn store_benches(c: &mut Criterion) {
    let (runtime, _dir, store) = runtime_and_store();
    let (group, _) = names();
    let user = UserId::parse("author").expect("id");
    let rooms = runtime.block_on(setup(&store, &group, &user));
    let mut next_id = 1u64;

    // 10,000 messages over 100 rooms, handed over as each room's batch: 100 concurrent
    // `append_messages` calls of 100 messages (what a busy room's pending queue hands the
    // store), all durable by group commit. First, in a store of its own that is closed after:
    // the single appends below leave millions of messages whose flushes and compactions would
    // otherwise run during this bench and be counted against it. Its own flushes and
    // compactions are counted.
    let (_batched_dir, batched_store) = temp_store();
    let batched_rooms = runtime.block_on(setup(&batched_store, &group, &user));
    const PER_ROOM: u64 = BURST / ROOMS as u64;
    let mut rates = Vec::new();
    c.bench_function("embedded store durable append (batched)", |b| {
        b.iter_custom(|iters| {
            let prepare = || {
                batched_rooms
                    .iter()
                    .map(|_| {
                        let first = next_id;
                        next_id += PER_ROOM;
                        (first..first + PER_ROOM)
                            .map(|id| message(id, id, &user))
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            };
            timed_bursts(&runtime, iters, &mut rates, prepare, |batches| {
                let tasks: Vec<_> = batched_rooms
                    .iter()
                    .zip(batches)
                    .map(|(room, msgs)| {
                        let store = batched_store.clone();
                        let (group, room) = (group.clone(), room.clone());
                        tokio::spawn(
                            async move { store.append_messages(&group, &room, msgs).await },
                        )
                    })
                    .collect();
                async {
                    for t in tasks {
                        let outcomes = t.await.expect("join").expect("append");
                        assert_eq!(outcomes.len(), PER_ROOM as usize);
                    }
                }
            })
        })
    });
    print_rates(
        &mut rates,
        "durable appends, batched",
        &format!(" ({ROOMS} calls of {PER_ROOM})"),
    );
    runtime.block_on(batched_store.close()).expect("close");
    drop(batched_store);

    // 10,000 concurrent durable appends across 100 rooms: one batch of the node's work.
    let mut rates = Vec::new();
    c.bench_function("durable append, 10k concurrent over 100 rooms", |b| {
        b.iter_custom(|iters| {
            let prepare = || {
                (0..BURST)
                    .map(|_| {
                        let id = next_id;
                        next_id += 1;
                        message(id, id, &user)
                    })
                    .collect::<Vec<_>>()
            };
            timed_bursts(&runtime, iters, &mut rates, prepare, |msgs| {
                let tasks: Vec<_> = msgs
                    .into_iter()
                    .enumerate()
                    .map(|(i, msg)| {
                        let store = store.clone();
                        let room = rooms[i % ROOMS].clone();
                        let group = group.clone();
                        tokio::spawn(async move { store.append_message(&group, &room, msg).await })
                    })
                    .collect();
                async {
                    for t in tasks {
                        t.await.expect("join").expect("append");
                    }
                }
            })
        })
    });
    print_rates(&mut rates, "durable appends", "");

    // The latest 50 of a room holding 10,000 messages (plus 100 other busy rooms).
    let hot = RoomId::parse("hot").expect("id");
    runtime.block_on(async {
        store
            .create_room(record(&group, &hot, &user), vec![])
            .await
            .expect("create");
        let mut tasks = Vec::new();
        for seq in 1..=10_000u64 {
            let store = store.clone();
            let (group, hot, user) = (group.clone(), hot.clone(), user.clone());
            let id = next_id;
            next_id += 1;
            tasks.push(tokio::spawn(async move {
                store
                    .append_message(&group, &hot, message(id, seq, &user))
                    .await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("append");
        }
    });
    let mut samples = Vec::new();
    c.bench_function("latest page of 50", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let page = store
                        .messages_before(&group, &hot, None, 50)
                        .await
                        .expect("page");
                    let elapsed = start.elapsed();
                    assert_eq!(page.msgs.len(), 50);
                    samples.push(elapsed);
                    total += elapsed;
                }
                total
            })
        })
    });
    samples.sort();
    if !samples.is_empty() {
        println!(
            "latest page of 50: p50 {:?} p99 {:?} max {:?} over {} reads",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            samples.len()
        );
    }
}

/// The chat list of a user who is a member of 1,000 rooms, each with a recent message.
fn chat_list(c: &mut Criterion) {
    let (runtime, _dir, store) = runtime_and_store();
    let group = GroupId::parse("lists").expect("id");
    let user = UserId::parse("busy").expect("id");
    runtime.block_on(async {
        let mut id = 1u64;
        for r in 0..1_000 {
            let room = RoomId::parse(&format!("room{r}")).expect("id");
            store
                .create_room(
                    RoomRecord {
                        group: group.clone(),
                        room: room.clone(),
                        title: format!("Room {r}"),
                        kind: RoomKind::Group,
                        owner: user.clone(),
                        max: None,
                        password_hash: None,
                        created: now_ms(),
                    },
                    vec![MemberRecord {
                        user: user.clone(),
                        cursor: 0,
                        cursor_seq: 0,
                        joined: now_ms(),
                    }],
                )
                .await
                .expect("create");
            for seq in 1..=3 {
                store
                    .append_message(&group, &room, message(id, seq, &user))
                    .await
                    .expect("append");
                id += 1;
            }
        }
    });
    let mut samples = Vec::new();
    c.bench_function("chat list of 1,000 rooms", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let list = store.chat_list(&user, &group).await.expect("list");
                    let elapsed = start.elapsed();
                    assert_eq!(list.len(), 1_000);
                    samples.push(elapsed);
                    total += elapsed;
                }
                total
            })
        })
    });
    samples.sort();
    if !samples.is_empty() {
        println!(
            "chat list of 1,000 rooms: p50 {:?} p99 {:?} max {:?} over {} reads",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples[samples.len() - 1],
            samples.len()
        );
    }
}

/// The read cursors of a room of 5,000 present members, saved after one message moved them
/// all (what a big room's periodic cursor flush hands the store), in the order of the room's
/// set of moved cursors.
fn big_room_cursors(c: &mut Criterion) {
    const MEMBERS: usize = 5_000;
    let (runtime, _dir, store) = runtime_and_store();
    let group = GroupId::parse("big").expect("id");
    let room = RoomId::parse("hall").expect("id");
    let users: std::collections::HashSet<UserId> = (0..MEMBERS)
        .map(|u| UserId::parse(&format!("user{u}")).expect("id"))
        .collect();
    let owner = users.iter().next().expect("a member").clone();
    runtime.block_on(async {
        store
            .create_room(
                record(&group, &room, &owner),
                users.iter().map(member).collect(),
            )
            .await
            .expect("create");
    });
    let mut cursor = 0u64;
    c.bench_function("cursors of 5,000 members saved", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    cursor += 1;
                    let cursors = users.iter().map(|u| (u.clone(), cursor, cursor)).collect();
                    let start = Instant::now();
                    store
                        .save_cursors(&group, &room, cursors)
                        .await
                        .expect("save");
                    total += start.elapsed();
                }
                total
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = store_benches, chat_list, big_room_cursors
}
criterion_main!(benches);
