//! `NodeSupervisor`: the root of the actor tree, one per node.
//!
//! It starts a [`GroupActor`] the first time a group is used, on one of the node's group
//! arbiters (chosen by the group's hash, so a node's cores share the groups), restarts one that
//! died (a panic ends an actor; its address then reports disconnected and the next request
//! starts a fresh actor that reloads its rooms from the store), forgets idle ones, and drains
//! them all at shutdown. It knows nothing of rooms.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use super::ActorDeps;
use super::group::{Drain as DrainGroup, GroupActor};
use crate::error::ChatError;
use crate::ids::GroupId;

/// Returns the group's actor, starting (or restarting) it when needed; `unavailable` once
/// the node is draining.
#[derive(Message)]
#[rtype(result = "Result<Addr<GroupActor>, ChatError>")]
pub struct GetGroup {
    pub group: GroupId,
    /// The arbiter of the caller (a connection's worker thread): a new group starts there, so
    /// the connections that use it most and its rooms share a thread and messages between
    /// them need no cross-thread wake-up. `None`: one of the node's group arbiters.
    pub near: Option<ArbiterHandle>,
}

/// From a group: it stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupStopped {
    pub group: GroupId,
    pub generation: u64,
}

/// Drains every group (rooms flush their cursors), for shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainAll;

struct GroupEntry {
    addr: Addr<GroupActor>,
    generation: u64,
    alive: CancellationToken,
}

pub struct NodeSupervisor {
    deps: ActorDeps,
    arbiters: Vec<ArbiterHandle>,
    hasher: RandomState,
    groups: HashMap<GroupId, GroupEntry>,
    next_generation: u64,
    draining: bool,
}

impl NodeSupervisor {
    /// `arbiters` are the threads group actors run on (at least one).
    pub fn new(deps: ActorDeps, arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            deps,
            arbiters,
            hasher: RandomState::new(),
            groups: HashMap::new(),
            next_generation: 0,
            draining: false,
        }
    }

    fn start_group(
        &mut self,
        group: GroupId,
        near: Option<ArbiterHandle>,
        ctx: &mut Context<Self>,
    ) -> Addr<GroupActor> {
        self.next_generation += 1;
        let generation = self.next_generation;
        let alive = CancellationToken::new();
        let deps = self.deps.clone();
        let supervisor = ctx.address();
        let group_for_actor = group.clone();
        let alive_for_actor = alive.clone();
        let make = move |_: &mut Context<GroupActor>| {
            GroupActor::new(
                deps,
                group_for_actor,
                supervisor,
                generation,
                alive_for_actor,
            )
        };
        let addr = if let Some(arbiter) = near {
            GroupActor::start_in_arbiter(&arbiter, make)
        } else if self.arbiters.is_empty() {
            GroupActor::create(make)
        } else {
            let at = (self.hasher.hash_one(&group) as usize) % self.arbiters.len();
            GroupActor::start_in_arbiter(&self.arbiters[at], make)
        };
        self.groups.insert(
            group,
            GroupEntry {
                addr: addr.clone(),
                generation,
                alive,
            },
        );
        addr
    }
}

impl Actor for NodeSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
    }
}

impl Handler<GetGroup> for NodeSupervisor {
    type Result = Result<Addr<GroupActor>, ChatError>;

    fn handle(&mut self, msg: GetGroup, ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Err(ChatError::new(
                crate::protocol::ErrorCode::Unavailable,
                "the node is shutting down; connect to another",
            ));
        }
        if let Some(entry) = self.groups.get(&msg.group) {
            if entry.addr.connected() {
                return Ok(entry.addr.clone());
            }
            // The group died without stopping cleanly: make sure its rooms are gone, then
            // start it again (its rooms reload from the store on first use).
            tracing::warn!(group = %msg.group, "group actor died; restarting it");
            metrics::counter!("chatnode_group_restarts_total").increment(1);
            entry.alive.cancel();
        }
        Ok(self.start_group(msg.group, msg.near, ctx))
    }
}

impl Handler<GroupStopped> for NodeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: GroupStopped, _ctx: &mut Self::Context) {
        if self
            .groups
            .get(&msg.group)
            .is_some_and(|e| e.generation == msg.generation)
        {
            self.groups.remove(&msg.group);
        }
    }
}

impl Handler<DrainAll> for NodeSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: DrainAll, _ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let groups: Vec<Addr<GroupActor>> = self.groups.values().map(|e| e.addr.clone()).collect();
        Box::pin(async move {
            let drains = groups.into_iter().map(|g| async move {
                let _ = g.send(DrainGroup).await;
            });
            futures_util::future::join_all(drains).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::actors::group::{Crash, ResolveRoom};
    use crate::config::Settings;
    use crate::ids::{RoomId, Snowflake, UserId};
    use crate::store::Store;
    use crate::store::conformance::{member, record};
    use crate::store::embedded::EmbeddedStore;

    #[actix_web::test]
    async fn a_group_that_panics_is_restarted_and_reloads_its_rooms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
        let group = GroupId::parse("g").expect("id");
        let room = RoomId::parse("r").expect("id");
        let owner = UserId::parse("alice").expect("id");
        store
            .create_room(record(&group, &room, &owner), vec![member(&owner)])
            .await
            .expect("create");
        let deps = ActorDeps {
            settings: Arc::new(Settings::default()),
            store,
            snowflake: Arc::new(Snowflake::new(0)),
            media: Arc::new(crate::media::MediaStore::in_memory(
                &crate::config::MediaSettings::default(),
            )),
            push: crate::push::PushHandle::disabled(),
        };
        let supervisor = NodeSupervisor::new(deps, Vec::new()).start();
        let first = supervisor
            .send(GetGroup {
                group: group.clone(),
                near: None,
            })
            .await
            .expect("mailbox")
            .expect("group");
        let room_addr = first
            .send(ResolveRoom { room: room.clone() })
            .await
            .expect("mailbox")
            .expect("room");
        // A connection present in the room.
        let (session, _outbound) = crate::session::handle::SessionHandle::new(
            UserId::parse("alice").expect("id"),
            crate::session::handle::Transport::WebSocket,
            16,
        );
        let (responder, entered) = crate::actors::Responder::channel();
        room_addr.do_send(crate::actors::room::Attach {
            session: session.clone(),
            service: false,
            since: None,
            limit: 10,
            responder,
        });
        entered.await.expect("answered").expect("entered the room");
        first.do_send(Crash);
        // The dead group's rooms stop with it, and end the connections present in them (their
        // clients reconnect and recover) instead of leaving them in a dead room.
        let lost = tokio::time::timeout(Duration::from_secs(5), session.trouble())
            .await
            .expect("the connection is told");
        assert_eq!(lost, crate::session::handle::Trouble::RoomLost);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (first.connected() || room_addr.connected()) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!first.connected(), "the crashed group is gone");
        assert!(!room_addr.connected(), "its room stopped with it");
        let second = supervisor
            .send(GetGroup { group, near: None })
            .await
            .expect("mailbox")
            .expect("group");
        assert!(second.connected());
        let reloaded = second
            .send(ResolveRoom { room })
            .await
            .expect("mailbox")
            .expect("room reloads from the store");
        assert!(reloaded.connected());
    }
}
