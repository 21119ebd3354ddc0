//! Room setup over REST (docs/protocol.md §4.2) with a service token, before any connection opens:
//! create each room with up to 1000 initial members, then add the rest one by one, many
//! requests in flight.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;

/// The most members a create request may name (the node's limit).
pub const MAX_INITIAL_MEMBERS: usize = 1000;
/// REST requests in flight during setup.
const IN_FLIGHT: usize = 32;

pub struct Rest {
    client: reqwest::Client,
    bases: Vec<String>,
    token: String,
}

#[derive(Serialize)]
struct CreateRoom<'a> {
    room: &'a str,
    title: &'a str,
    kind: &'static str,
    members: &'a [String],
}

#[derive(Serialize)]
struct AddMember<'a> {
    user: &'a str,
}

/// A room to create.
#[derive(Debug, Clone)]
pub struct RoomPlan {
    pub room: String,
    pub members: Vec<String>,
}

impl Rest {
    /// `bases`: `http://host:port` of each node; requests rotate over them.
    pub fn new(bases: Vec<String>, token: String) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(IN_FLIGHT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            bases,
            token,
        })
    }

    fn base(&self, i: usize) -> &str {
        &self.bases[i % self.bases.len()]
    }

    /// Checks the node answers and the token is accepted, with a clear message otherwise.
    pub async fn check(&self, group: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/groups/{group}/rooms", self.base(0));
        let response = self
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base(0)))?;
        match response.status().as_u16() {
            200 => Ok(()),
            401 => bail!(
                "the node refused the harness's token (401): give the node's HS256 secret with \
                 --secret, CHATNODE_AUTH_SECRET or --secret-file DATA_DIR/auth.secret"
            ),
            status => bail!(
                "GET {url} answered {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    async fn post<T: Serialize>(&self, url: String, body: &T, ok: u16) -> anyhow::Result<()> {
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        if status != ok {
            bail!(
                "POST {url} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Creates every room of `plans` in `group` and adds the members a create cannot hold.
    /// `progress` is told after each request.
    pub async fn create_rooms(
        &self,
        group: &str,
        plans: &[RoomPlan],
        progress: &(dyn Fn() + Sync),
    ) -> anyhow::Result<()> {
        futures_util::stream::iter(plans.iter().enumerate())
            .map(|(i, plan)| async move {
                let first = plan.members.len().min(MAX_INITIAL_MEMBERS);
                let url = format!("{}/v1/groups/{group}/rooms", self.base(i));
                self.post(
                    url,
                    &CreateRoom {
                        room: &plan.room,
                        title: &plan.room,
                        kind: "group",
                        members: &plan.members[..first],
                    },
                    201,
                )
                .await?;
                progress();
                Ok::<_, anyhow::Error>(())
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        let extra: Vec<(usize, &str, &str)> = plans
            .iter()
            .flat_map(|plan| {
                plan.members
                    .iter()
                    .skip(MAX_INITIAL_MEMBERS)
                    .map(move |m| (plan.room.as_str(), m.as_str()))
            })
            .enumerate()
            .map(|(i, (room, user))| (i, room, user))
            .collect();
        futures_util::stream::iter(extra)
            .map(|(i, room, user)| async move {
                let url = format!("{}/v1/groups/{group}/rooms/{room}/members", self.base(i));
                self.post(url, &AddMember { user }, 204).await?;
                progress();
                Ok::<_, anyhow::Error>(())
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Requests [`Rest::create_rooms`] makes for `plans`.
pub fn request_count(plans: &[RoomPlan]) -> usize {
    plans
        .iter()
        .map(|p| 1 + p.members.len().saturating_sub(MAX_INITIAL_MEMBERS))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_rooms_need_member_requests_beyond_the_first_thousand() {
        let plan = |n: usize| RoomPlan {
            room: "r".into(),
            members: (0..n).map(|i| format!("u{i}")).collect(),
        };
        assert_eq!(request_count(&[plan(10), plan(10)]), 2);
        assert_eq!(request_count(&[plan(1000)]), 1);
        assert_eq!(request_count(&[plan(5000)]), 4001);
    }
}
