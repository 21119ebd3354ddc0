//! `Directory`: how connections and REST handlers find a group's or a room's actor, with the
//! retry that makes a room's idle stop (or its group's restart) invisible to callers.

use actix::prelude::*;

use super::group::{GroupActor, ResolveRoom};
use super::room::RoomActor;
use super::supervisor::{GetGroup, NodeSupervisor};
use crate::error::ChatError;
use crate::ids::{GroupId, RoomId};

#[derive(Clone)]
pub struct Directory {
    supervisor: Addr<NodeSupervisor>,
}

impl Directory {
    pub fn new(supervisor: Addr<NodeSupervisor>) -> Self {
        Self { supervisor }
    }

    pub fn supervisor(&self) -> &Addr<NodeSupervisor> {
        &self.supervisor
    }

    pub async fn group(&self, group: &GroupId) -> Result<Addr<GroupActor>, ChatError> {
        self.supervisor
            .send(GetGroup {
                group: group.clone(),
                near: actix::Arbiter::try_current(),
            })
            .await?
    }

    pub async fn room(&self, group: &GroupId, room: &RoomId) -> Result<Addr<RoomActor>, ChatError> {
        for _ in 0..3 {
            let group_addr = self.group(group).await?;
            match group_addr.send(ResolveRoom { room: room.clone() }).await {
                Ok(result) => return result,
                // The group stopped between the two hops: ask again.
                Err(_) => continue,
            }
        }
        Err(ChatError::unavailable())
    }

    /// Delivers `msg` to the room, resolving it again if the cached address has stopped.
    /// Waits for mailbox room (backpressure), never for the room's reply.
    pub async fn deliver<M>(
        &self,
        group: &GroupId,
        room: &RoomId,
        cached: Option<Addr<RoomActor>>,
        msg: M,
    ) -> Result<Addr<RoomActor>, ChatError>
    where
        M: Message<Result = ()> + Send + 'static,
        RoomActor: Handler<M>,
    {
        let mut msg = msg;
        let mut addr = match cached {
            Some(addr) => addr,
            None => self.room(group, room).await?,
        };
        for _ in 0..3 {
            match addr.try_send(msg) {
                Ok(()) => return Ok(addr),
                Err(SendError::Full(back)) => {
                    addr.send(back).await?;
                    return Ok(addr);
                }
                Err(SendError::Closed(back)) => {
                    msg = back;
                    addr = self.room(group, room).await?;
                }
            }
        }
        Err(ChatError::unavailable())
    }
}
