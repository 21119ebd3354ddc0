//! Push devices and room mutes in ScyllaDB (`push_devices` and `room_mutes`, schema version 3):
//! the bodies of the [`Store`](crate::store::Store) methods that `mod.rs` delegates here, and
//! their row mapping.

use std::collections::HashSet;

use ::scylla::DeserializeRow;
use futures_util::StreamExt as _;
use futures_util::stream;

use super::{CONCURRENCY, ScyllaStore, schema};
use crate::ids::{GroupId, RoomId, UserId, now_ms};
use crate::store::{DeviceRecord, Platform, StoreError, StoreResult};

/// A row of `SELECT_DEVICES`.
#[derive(Clone, PartialEq, Eq, DeserializeRow)]
pub struct DeviceRow {
    pub device_token: String,
    pub platform: String,
    pub created: Option<i64>,
    pub last_used: Option<i64>,
}

impl DeviceRow {
    pub const COLUMNS: &'static [&'static str] =
        &["device_token", "platform", "created", "last_used"];

    pub fn into_record(self) -> StoreResult<DeviceRecord> {
        let platform = Platform::parse(&self.platform).ok_or_else(|| {
            StoreError::Corrupt(format!("device: unknown platform {:?}", self.platform))
        })?;
        let created = self.created.unwrap_or(0);
        Ok(DeviceRecord {
            token: self.device_token,
            platform,
            created,
            last_used: self.last_used.unwrap_or(created),
        })
    }
}

impl ScyllaStore {
    pub(super) async fn put_device_row(
        &self,
        user: &UserId,
        device: DeviceRecord,
    ) -> StoreResult<()> {
        self.check_open()?;
        let key = (user.as_str(), device.token.as_str());
        let existing: Option<(Option<i64>,)> = self
            .first("put_device", &self.q.select_device_created, key)
            .await?;
        let created = existing.and_then(|(c,)| c).unwrap_or(device.created);
        self.exec(
            "put_device",
            &self.q.upsert_device,
            (
                user.as_str(),
                device.token.as_str(),
                device.platform.as_str(),
                created,
                device.last_used,
            ),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn delete_device_row(&self, user: &UserId, token: &str) -> StoreResult<()> {
        self.check_open()?;
        self.exec(
            "delete_device",
            &self.q.delete_device,
            (user.as_str(), token),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn device_rows(
        &self,
        users: &[UserId],
    ) -> StoreResult<Vec<(UserId, Vec<DeviceRecord>)>> {
        self.check_open()?;
        // Owned items: a stream over borrowed ones is not `Send` for every lifetime.
        let found: Vec<StoreResult<(UserId, Vec<DeviceRecord>)>> = stream::iter(users.to_vec())
            .map(|user| async move {
                let rows: Vec<DeviceRow> = self
                    .rows_paged("devices", &self.q.select_devices, (user.as_str(),))
                    .await?;
                let devices = rows
                    .into_iter()
                    .map(DeviceRow::into_record)
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok((user, devices))
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for entry in found {
            let (user, devices) = entry?;
            if !devices.is_empty() {
                out.push((user, devices));
            }
        }
        Ok(out)
    }

    pub(super) async fn set_mute_row(
        &self,
        group: &GroupId,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> StoreResult<()> {
        self.check_open()?;
        let (g, r, u) = (group.as_str(), room.as_str(), user.as_str());
        if muted {
            self.exec("set_muted", &self.q.insert_mute, (g, r, u, now_ms()))
                .await?;
        } else {
            self.exec("set_muted", &self.q.delete_mute, (g, r, u))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn mutes_among(
        &self,
        group: &GroupId,
        room: &RoomId,
        users: &[UserId],
    ) -> StoreResult<HashSet<UserId>> {
        self.check_open()?;
        let (g, r) = (group.as_str(), room.as_str());
        let chunks: Vec<Vec<String>> = users
            .chunks(schema::MAX_IN)
            .map(|chunk| chunk.iter().map(|u| u.as_str().to_owned()).collect())
            .collect();
        let found: Vec<StoreResult<Vec<(String,)>>> = stream::iter(chunks)
            .map(|chunk| async move {
                self.rows("muted_among", &self.q.select_mutes_in, (g, r, chunk))
                    .await
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut out = HashSet::new();
        for rows in found {
            for (user,) in rows? {
                let user =
                    UserId::parse(&user).map_err(|e| StoreError::Corrupt(format!("mute: {e}")))?;
                out.insert(user);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed_columns(cql: &str) -> Vec<String> {
        let rest = cql.strip_prefix("SELECT ").unwrap_or(cql);
        let end = rest.find(" FROM ").unwrap_or(rest.len());
        rest[..end]
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect()
    }

    #[test]
    fn the_device_select_matches_its_row() {
        assert_eq!(
            listed_columns(schema::SELECT_DEVICES.cql),
            DeviceRow::COLUMNS
        );
    }

    #[test]
    fn device_rows_round_trip_and_bad_ones_are_corrupt() {
        let row = DeviceRow {
            device_token: "tok".into(),
            platform: "ios".into(),
            created: Some(5),
            last_used: Some(7),
        };
        let device = row.clone().into_record().expect("device");
        assert_eq!(device.platform, Platform::Ios);
        assert_eq!((device.created, device.last_used), (5, 7));
        let bad = DeviceRow {
            platform: "symbian".into(),
            ..row
        };
        assert!(matches!(bad.into_record(), Err(StoreError::Corrupt(_))));
    }
}
