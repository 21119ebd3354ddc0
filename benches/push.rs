//! Push under load, against the local FCM mock of the integration tests (`tests/node/fcm_mock.rs`,
//! which checks and records every request), with the embedded store on tmpfs:
//!
//! 1. **Throughput**: one message for 10,000 absent recipients with one device each, handed to
//!    a real `PushActor`; the rate at which the mock receives the 10,000 pushes.
//! 2. **The room's send latency** with push off and on: a real `NodeSupervisor` → `GroupActor` →
//!    `RoomActor` for a room of 10,001 members (one sender, 10,000 absent with devices), messages
//!    posted open-loop at a fixed rate, the time from post to the `sent` reply.
//!
//! Not a criterion bench: it reports percentiles and a rate, which criterion does not. Run with
//! `cargo bench --bench push`; `PUSH_BENCH_RECIPIENTS`, `PUSH_BENCH_RATE` (messages per second)
//! and `PUSH_BENCH_SECONDS` change the shape.
//!
//! `PUSH_BENCH_CPUS=a,b` splits the process over two CPUs, the way the load tests split node and
//! harness: the room side (the posting thread, the store and its writer, the room's arbiter) on
//! CPU `a`, the push side (the push actor's thread, its HTTP client and the FCM mock, which
//! stands in for a remote service) on CPU `b`. Threads inherit the affinity of the thread that
//! starts them, so each side is started while the main thread is pinned to its CPU.

#[path = "../tests/node/fcm_mock.rs"]
mod fcm_mock;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use chatnode::actors::group::ResolveRoom;
use chatnode::actors::supervisor::{GetGroup, NodeSupervisor};
use chatnode::actors::{ActorDeps, Responder, room::PostMessage};
use chatnode::config::{PushSettings, Settings};
use chatnode::ids::{GroupId, RoomId, Snowflake, UserId, now_ms};
use chatnode::protocol::MessageKind;
use chatnode::push::{MessageNote, PushHandle};
use chatnode::store::embedded::EmbeddedStore;
use chatnode::store::{DeviceRecord, MemberRecord, Platform, RoomKind, RoomRecord, SharedStore};

/// The node's allocator, so the bench measures what the node runs (see [`chatnode::Allocator`]).
#[global_allocator]
static ALLOCATOR: chatnode::Allocator = chatnode::Allocator;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// `PUSH_BENCH_CPUS=a,b`: the room side's CPU and the push side's.
fn split_cpus() -> Option<(usize, usize)> {
    let value = std::env::var("PUSH_BENCH_CPUS").ok()?;
    let (a, b) = value.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Pins the calling thread (and so every thread it starts from now on) to one CPU.
fn pin_current(cpu: Option<usize>) {
    let Some(cpu) = cpu else {
        return;
    };
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index in range");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // `cargo test --benches` runs bench targets with `--bench` absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") && std::env::var("PUSH_BENCH_FORCE").is_err() {
        println!("push bench: run with `cargo bench --bench push`");
        return;
    }
    let recipients = env_or("PUSH_BENCH_RECIPIENTS", 10_000) as usize;
    let rate = env_or("PUSH_BENCH_RATE", 50);
    let seconds = env_or("PUSH_BENCH_SECONDS", 20);
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("tmpfs dir")
    } else {
        tempfile::tempdir().expect("temp dir")
    };
    let key_dir = tempfile::tempdir().expect("temp dir");
    let cpus = split_cpus();
    let (room_cpu, push_cpu) = (cpus.map(|c| c.0), cpus.map(|c| c.1));
    if let Some((a, b)) = cpus {
        println!("room side on CPU {a}, push side (push thread, HTTP client, FCM mock) on CPU {b}");
    }
    pin_current(push_cpu);
    // FCM is remote in production: its stand-in runs at the lowest priority unless asked not to.
    let low = std::env::var("PUSH_BENCH_MOCK_NORMAL").is_err();
    let mock = fcm_mock::FcmMock::start_with("bench-project", 3600, low);
    let key = mock.write_key_file(key_dir.path());
    pin_current(room_cpu);
    let system = actix::System::new();
    system.block_on(async move {
        let store: SharedStore =
            Arc::new(EmbeddedStore::open(&dir.path().join("store")).expect("store"));
        let users: Vec<UserId> = (0..recipients)
            .map(|i| UserId::parse(&format!("user{i}")).expect("id"))
            .collect();
        let registered: Vec<_> = futures_util::stream::iter(users.iter())
            .map(|user| {
                let store = store.clone();
                async move {
                    store
                        .put_device(
                            user,
                            DeviceRecord {
                                token: format!("device-of-{user}"),
                                platform: Platform::Android,
                                created: now_ms(),
                                last_used: now_ms(),
                            },
                        )
                        .await
                }
            })
            .buffer_unordered(1024)
            .collect()
            .await;
        assert!(registered.iter().all(Result::is_ok), "devices registered");
        let group = GroupId::parse("bench").expect("id");

        // 1. Throughput of the push actor.
        // Unpaced, to see what the actor can do (the default paces at FCM's default quota).
        let fast = PushSettings {
            fcm_key_file: Some(key.clone()),
            fcm_endpoint: mock.base(),
            coalesce_ms: 10,
            max_rate: 0,
            ..PushSettings::default()
        };
        pin_current(push_cpu);
        let push = chatnode::push::start(&fast, store.clone()).expect("push");
        pin_current(room_cpu);
        let room = RoomId::parse("throughput").expect("id");
        let mut rates = Vec::new();
        for round in 0..3u64 {
            let before = mock.send_count();
            let handed = Instant::now();
            push.handle.absent(
                group.clone(),
                room.clone(),
                Arc::new(MessageNote {
                    id: 1000 + round,
                    from: UserId::parse("sender").expect("id"),
                    from_name: Some("Sender".into()),
                    room_title: "Bench".into(),
                    kind: MessageKind::Text,
                    preview: Some("x".repeat(100)),
                }),
                users.iter().map(|u| (u.clone(), 1)).collect(),
            );
            let sends = mock
                .wait_for(Duration::from_secs(300), |s| s.len() >= before + recipients)
                .await;
            let batch = &sends[before..];
            let first = batch.iter().map(|s| s.at).min().expect("sends");
            let last = batch.iter().map(|s| s.at).max().expect("sends");
            let rate = recipients as f64 / last.duration_since(first).as_secs_f64().max(1e-6);
            println!(
                "throughput round {round}: {recipients} pushes, first after {}, all after {}, {:.0} pushes/s (first to last)",
                ms(first.duration_since(handed)),
                ms(last.duration_since(handed)),
                rate
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!("throughput median: {:.0} pushes/s", rates[1]);
        assert!(mock.errors().is_empty(), "mock errors: {:?}", mock.errors());
        push.handle.flush(Duration::from_secs(60)).await;

        // 2. The room's send latency, push off and on (default window, 2 s).
        let normal = PushSettings {
            fcm_key_file: Some(key.clone()),
            fcm_endpoint: mock.base(),
            coalesce_ms: env_or("PUSH_BENCH_COALESCE_MS", 2000),
            max_rate: env_or("PUSH_BENCH_MAX_RATE", 10_000) as u32,
            ..PushSettings::default()
        };
        pin_current(push_cpu);
        let push_on = chatnode::push::start(&normal, store.clone()).expect("push");
        pin_current(room_cpu);
        let sender = UserId::parse("sender").expect("id");
        for (label, handle) in [
            ("off", PushHandle::disabled()),
            ("on", push_on.handle.clone()),
        ] {
            let room_id = RoomId::parse(&format!("latency-{label}")).expect("id");
            let mut members: Vec<MemberRecord> = users
                .iter()
                .chain(std::iter::once(&sender))
                .map(|u| MemberRecord {
                    user: u.clone(),
                    cursor: 0,
                    cursor_seq: 0,
                    joined: now_ms(),
                })
                .collect();
            members.rotate_right(1);
            store
                .create_room(
                    RoomRecord {
                        group: group.clone(),
                        room: room_id.clone(),
                        title: "Bench".into(),
                        kind: RoomKind::Group,
                        owner: sender.clone(),
                        max: None,
                        password_hash: None,
                        created: now_ms(),
                    },
                    members,
                )
                .await
                .expect("create");
            let settings = Settings {
                push: normal.clone(),
                ..Settings::default()
            };
            let deps = ActorDeps {
                settings: Arc::new(settings),
                store: store.clone(),
                snowflake: Arc::new(Snowflake::new(0)),
                media: Arc::new(chatnode::media::MediaStore::in_memory(
                    &chatnode::config::MediaSettings::default(),
                )),
                push: handle,
            };
            // The group and its room on an arbiter of their own, as in a node: the posting and
            // timing below run on this thread, like connections on HTTP workers.
            let arbiter = actix::Arbiter::new();
            let supervisor =
                actix::Actor::start(NodeSupervisor::new(deps, vec![arbiter.handle()]));
            let group_addr = supervisor
                .send(GetGroup {
                    group: group.clone(),
                    near: None,
                })
                .await
                .expect("mailbox")
                .expect("group");
            let room = group_addr
                .send(ResolveRoom { room: room_id })
                .await
                .expect("mailbox")
                .expect("room");
            let before = mock.send_count();
            let count = (rate * seconds) as usize;
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            let mut waits = Vec::with_capacity(count);
            let started = Instant::now();
            for i in 0..count {
                tick.tick().await;
                let (responder, rx) = Responder::channel();
                let posted = Instant::now();
                room.do_send(PostMessage {
                    from: sender.clone(),
                    from_name: Some("Sender".into()),
                    service: false,
                    kind: MessageKind::Text,
                    text: Some(format!("message {i} {}", "x".repeat(80))),
                    media: None,
                    cmid: format!("{label}-{i}"),
                    responder,
                });
                waits.push(actix::spawn(async move {
                    rx.await.ok().and_then(Result::ok).map(|_| posted.elapsed())
                }));
            }
            let mut latencies = Vec::with_capacity(count);
            for wait in waits {
                if let Ok(Some(latency)) = wait.await {
                    latencies.push(latency);
                }
            }
            let elapsed = started.elapsed();
            arbiter.stop();
            latencies.sort();
            println!(
                "send latency, push {label}: {} of {count} sent in {:.1} s; p50 {}, p99 {}, max {}; pushes received meanwhile: {}",
                latencies.len(),
                elapsed.as_secs_f64(),
                ms(percentile(&latencies, 0.50)),
                ms(percentile(&latencies, 0.99)),
                ms(latencies.last().copied().unwrap_or_default()),
                mock.send_count() - before
            );
        }
        push_on.handle.flush(Duration::from_secs(60)).await;
        println!(
            "mock: {} sends, {} token requests, {} errors",
            mock.send_count(),
            mock.token_requests(),
            mock.errors().len()
        );
        let _ = store.close().await;
    });
}
