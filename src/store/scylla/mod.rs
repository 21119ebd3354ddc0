//! The ScyllaDB store: the production backend of [`Store`], for many nodes sharing one cluster.
//!
//! Layout (all CQL is in [`schema`], beside the table it uses):
//! - `messages`: one partition per room and time bucket, newest first. A bucket is 2^22 ms
//!   (about 70 minutes) of the snowflake clock, `bucket = id >> 44`; a room sending 20 messages
//!   a second for the whole span fills about 84k rows, about 42 MB ([`buckets`] has the
//!   arithmetic). `message_buckets` lists the buckets a room has written, so history walks back
//!   bucket by bucket over buckets that hold messages and stops at the room's first ([`walk`]).
//! - `rooms` (the record and the member count), `members` (with read cursors), `user_rooms` (the
//!   chat list), `idempotency` (24 h keys), `schema_version`.
//! - `push_devices` (one partition per user) and `room_mutes` (one per room): push settings
//!   ([`devices`]).
//!
//! Writes and why each is safe without counters or multi-partition transactions:
//! - **Room creation** is `INSERT ... IF NOT EXISTS` (a lightweight transaction): of two
//!   creators exactly one wins and the other gets `Exists`. The members are written after; if
//!   that fails, the room is deleted again (best effort) so that a retry starts clean.
//! - **Idempotency keys** are claimed with `INSERT ... IF NOT EXISTS USING TTL 86400`, before the
//!   message is written: of concurrent duplicates exactly one claim is applied, the others read
//!   the claimed message and answer `Duplicate`. A claim whose message never appeared (the
//!   writer died between the two writes) is taken over with `IF message_id = ?` after
//!   [`CLAIM_GRACE_MS`], so a crash cannot block a `cmid` for a day.
//! - **Member counts** are recomputed from the members partition (`COUNT(joined)`) after every
//!   membership change and written with `IF EXISTS`. A recount is idempotent, so a retry or the
//!   next change repairs any earlier failure, which a counter (or an increment) could not.
//! - **Cursors** move forward only: `save_cursors` reads the members' cursors and writes the
//!   larger values as one unlogged batch per room partition (one mutation, applied atomically).
//! - Membership changes, cursor writes and room deletion of one room are serialised by a lock
//!   in this process (striped by room), and a room is served by one `RoomActor` on one node,
//!   so these read-modify-writes do not race. A cursor write that races a removal on another
//!   node can leave a row without `joined`, which every read ignores.
//! - **Edits and deletes**: a delete writes the whole row with `deleted = true`; an edit writes
//!   every column but `deleted`; a deleted row is read without text or media. So an edit that
//!   races a delete can never resurrect text.
//! - **Last message for the chat list**: read from the messages themselves (the newest of the
//!   newest bucket), never copied, so edits and deletes show at once.
//!
//! Errors: every driver error becomes [`StoreError::Unavailable`] with a short reason (the
//! details are logged, never sent to clients); a row that does not decode is `Corrupt`.
//! The driver's defaults route each prepared statement to a replica of its partition and to
//! the right shard (token-aware, shard-aware); consistency (`LOCAL_QUORUM` by default) and the
//! request timeout come from [`ScyllaSettings`]. TLS is not offered yet (see `settings.rs`).

pub mod buckets;
pub mod devices;
pub mod rows;
pub mod schema;
pub mod settings;
pub mod tls;
pub mod walk;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::deserialize::row::DeserializeRow;
use ::scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use ::scylla::response::PagingState;
use ::scylla::response::query_result::QueryResult;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::{SerialConsistency, Statement};
use ::scylla::value::{CqlValue, Row};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use futures_util::stream;
use tokio::sync::Mutex as AsyncMutex;

use self::buckets::Bucket;
use self::rows::{
    EditValues, MediaRow, MediaValues, MemberRow, MemberValues, MessageRow, MessageValues, RoomRow,
    RoomValues, clamp_bigint, to_bigint,
};
use self::schema::{Prepared, SCHEMA_COMPONENT, SCHEMA_VERSION};
use self::walk::{Bound, BucketSource, Direction, walk};
use super::{
    AppendOutcome, ChatListEntry, CreateOutcome, DeviceRecord, LoadedRoom, MediaRecord,
    MemberRecord, Page, RoomRecord, Store, StoreError, StoreResult, StoredMessage,
};
use crate::config::ScyllaSettings;
use crate::ids::{GroupId, MessageId, RoomId, UserId, now_ms};

/// How long a claimed `cmid` whose message is missing is left to its claimant before another
/// send may take it over: far longer than a write can take (the request timeout and the
/// server's own write timeout are seconds).
pub const CLAIM_GRACE_MS: i64 = 60_000;

/// How often a duplicate looks for the claimed message before answering `unavailable`: the
/// claimant writes it right after its claim, so it normally appears within milliseconds.
const FIRST_MESSAGE_POLLS: u32 = 5;
const FIRST_MESSAGE_POLL_DELAY: Duration = Duration::from_millis(20);

/// Statements at most in one unlogged cursor batch.
const MAX_BATCH: usize = 100;

/// Requests one store call may have in flight (member writes, chat-list entries, deletes).
const CONCURRENCY: usize = 32;

/// Stripes of the per-room lock (see the module documentation).
const LOCK_STRIPES: usize = 1024;

/// Why the store could not be opened or migrated. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("configuration: `{0}` {1}")]
    Settings(&'static str, String),
    #[error("cannot connect to ScyllaDB at {nodes}: {detail}")]
    Connect { nodes: String, detail: String },
    #[error("keyspace `{0}` does not exist: create it and its tables with `chatnode migrate`")]
    KeyspaceMissing(String),
    #[error(
        "keyspace `{0}` has no chatnode schema (no schema_version row): run `chatnode migrate`"
    )]
    SchemaMissing(String),
    #[error(
        "keyspace `{keyspace}` holds chatnode schema version {found}, this build needs version \
         {wanted}: run `chatnode migrate` (a node never alters the schema itself)"
    )]
    SchemaOutdated {
        keyspace: String,
        found: i32,
        wanted: i32,
    },
    #[error(
        "keyspace `{keyspace}` records this build's schema version but a statement was refused \
         ({detail}): the tables were changed by hand or by another build; run `chatnode migrate`"
    )]
    SchemaMismatch { keyspace: String, detail: String },
    #[error("ScyllaDB refused to {what}: {detail}")]
    Refused { what: String, detail: String },
}

/// What `chatnode migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// The schema was created or brought up to [`SCHEMA_VERSION`] (from the version given).
    Applied { from: Option<i32>, to: i32 },
    /// It was at [`SCHEMA_VERSION`] already.
    UpToDate(i32),
    /// A newer build has migrated it; this one left it alone.
    Newer(i32),
}

fn refused(what: impl Into<String>, e: impl std::fmt::Display) -> OpenError {
    OpenError::Refused {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// A short, safe reason for a failed request (the full error is logged).
fn reason(e: &ExecutionError) -> &'static str {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => match db {
            DbError::Unavailable { .. } => "the cluster cannot meet the consistency level",
            DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => {
                "the cluster did not answer in time"
            }
            DbError::Overloaded | DbError::RateLimitReached { .. } => "the cluster is overloaded",
            DbError::IsBootstrapping => "the coordinator is still starting",
            DbError::Unauthorized | DbError::AuthenticationError => {
                "the cluster refused the credentials"
            }
            DbError::Invalid | DbError::SyntaxError => {
                "the cluster refused a statement (is the schema current?)"
            }
            _ => "the cluster refused the request",
        },
        ExecutionError::RequestTimeout(_) => "the request timed out",
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => {
            "no connection to the cluster"
        }
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_)) => {
            "the connection to the cluster broke"
        }
        _ => "the request failed",
    }
}

/// Maps a driver error to `Unavailable`, logging the details.
fn failed(op: &'static str, e: &ExecutionError) -> StoreError {
    let why = reason(e);
    tracing::warn!(op, error = %e, "scylla request failed: {why}");
    StoreError::Unavailable(format!("scylla: {why}"))
}

/// Records `chatnode_store_write_seconds` when dropped: the time one write call took, from
/// the caller's side, as the embedded store records it for every write (answered or failed).
struct WriteTimer(Instant);

impl WriteTimer {
    fn start() -> Self {
        Self(Instant::now())
    }
}

impl Drop for WriteTimer {
    fn drop(&mut self) {
        metrics::histogram!("chatnode_store_write_seconds").record(self.0.elapsed().as_secs_f64());
    }
}

/// Maps a row that did not decode to `Corrupt`, logging the details.
fn undecodable(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    tracing::error!(op, error = %e, "scylla row did not decode");
    StoreError::Corrupt(format!("scylla {op}: a row did not decode"))
}

fn is_invalid(e: &RequestAttemptError) -> bool {
    matches!(e, RequestAttemptError::DbError(DbError::Invalid, _))
}

/// The outcome of a conditional statement: whether it applied, and the row the server sent
/// back with it (the existing row when it did not apply).
struct Lwt {
    applied: bool,
    columns: HashMap<String, CqlValue>,
}

impl Lwt {
    fn bigint(&self, column: &str) -> Option<i64> {
        match self.columns.get(column) {
            Some(CqlValue::BigInt(v)) => Some(*v),
            _ => None,
        }
    }
}

/// Opens a driver session (no keyspace yet) with the configured consistency and timeout.
async fn connect(settings: &ScyllaSettings) -> Result<Session, OpenError> {
    settings::check(settings).map_err(|(k, p)| OpenError::Settings(k, p))?;
    let nodes = settings::contact_points(settings.nodes.as_deref().unwrap_or_default());
    let consistency = settings::parse_consistency(&settings.consistency)
        .ok_or_else(|| OpenError::Settings("scylla.consistency", "is not a level".into()))?;
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&nodes)
        .default_execution_profile_handle(profile.into_handle())
        .connection_timeout(timeout.max(Duration::from_secs(5)));
    if let Some(user) = &settings.username {
        builder = builder.user(user, settings.password.as_deref().unwrap_or_default());
    }
    if let Some(tls) = tls::client_config(settings).map_err(|e| match e {
        tls::TlsSetupError::File { key, path, detail } => {
            OpenError::Settings(key, format!("{path}: {detail}"))
        }
        tls::TlsSetupError::Rustls(detail) => OpenError::Settings("scylla.tls", detail),
    })? {
        builder = builder.tls_context(Some(tls));
    }
    builder.build().await.map_err(|e| OpenError::Connect {
        nodes: nodes.join(","),
        detail: e.to_string(),
    })
}

/// Fails with `KeyspaceMissing` unless the server lists the keyspace. Statements name their
/// keyspace themselves (no `USE`), so a missing keyspace and a missing table would otherwise
/// look alike.
async fn check_keyspace(session: &Session, keyspace: &str) -> Result<(), OpenError> {
    let result = session
        .query_unpaged(schema::SELECT_KEYSPACE.cql, (keyspace,))
        .await
        .map_err(|e| refused("list the keyspaces", e))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| refused("list the keyspaces", e))?;
    let found = rows
        .maybe_first_row::<(String,)>()
        .map_err(|e| refused("list the keyspaces", e))?;
    match found {
        Some(_) => Ok(()),
        None => Err(OpenError::KeyspaceMissing(keyspace.to_owned())),
    }
}

/// The schema version recorded in the keyspace, or `SchemaMissing` without the table or row.
async fn read_schema_version(session: &Session, keyspace: &str) -> Result<Option<i32>, OpenError> {
    let select = match schema::prepare_one(session, &schema::SELECT_SCHEMA_VERSION, keyspace).await
    {
        Ok(select) => select,
        Err((_, PrepareError::AllAttemptsFailed { first_attempt }))
            if is_invalid(&first_attempt) =>
        {
            return Err(OpenError::SchemaMissing(keyspace.to_owned()));
        }
        Err((_, e)) => return Err(refused("read the schema version", e)),
    };
    let result = session
        .execute_unpaged(&select, (SCHEMA_COMPONENT,))
        .await
        .map_err(|e| refused("read the schema version", e))?;
    let rows = result
        .into_rows_result()
        .map_err(|e| refused("read the schema version", e))?;
    let row = rows
        .maybe_first_row::<(Option<i32>,)>()
        .map_err(|e| refused("read the schema version", e))?;
    Ok(row.and_then(|(v,)| v))
}

/// Whether the keyspace must ask for vnodes: a ScyllaDB that uses tablets but cannot run
/// conditional statements on them. Cassandra (no `supported_features`) needs nothing.
async fn needs_vnodes(session: &Session) -> Result<bool, OpenError> {
    let result = match session.query_unpaged(schema::PROBE_FEATURES.cql, ()).await {
        Ok(result) => result,
        Err(ExecutionError::LastAttemptError(e)) if is_invalid(&e) => return Ok(false),
        Err(e) => return Err(refused("describe the cluster", e)),
    };
    let rows = result
        .into_rows_result()
        .map_err(|e| refused("describe the cluster", e))?;
    let features = rows
        .maybe_first_row::<(Option<String>,)>()
        .map_err(|e| refused("describe the cluster", e))?
        .and_then(|(f,)| f)
        .unwrap_or_default();
    Ok(tablets_without_lwt(&features))
}

/// How long one schema change may take (creating a table waits for the whole cluster to
/// agree on the schema, which takes longer than an ordinary request).
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// A schema statement with [`DDL_TIMEOUT`].
fn ddl(cql: String) -> Statement {
    let mut statement = Statement::new(cql);
    statement.set_request_timeout(Some(DDL_TIMEOUT));
    statement
}

/// `supported_features` lists TABLETS but not LWT_WITH_TABLETS.
fn tablets_without_lwt(features: &str) -> bool {
    let has = |name: &str| features.split(',').any(|f| f.trim() == name);
    has("TABLETS") && !has("LWT_WITH_TABLETS")
}

/// `chatnode migrate`: creates the keyspace (with the configured replication), every table,
/// and records the schema version. Idempotent: run it as often as you like.
pub async fn migrate(settings: &ScyllaSettings) -> Result<Migrated, OpenError> {
    let session = connect(settings).await?;
    let replication = settings::replication_map(&settings.replication)
        .map_err(|p| OpenError::Settings("scylla.replication", p))?;
    let keyspace = settings.keyspace.as_str();
    let vnodes = needs_vnodes(&session).await?;
    let create = schema::create_keyspace_cql(keyspace, &replication, vnodes);
    session
        .query_unpaged(ddl(create), ())
        .await
        .map_err(|e| refused(format!("create keyspace `{keyspace}`"), e))?;
    let found = match read_schema_version(&session, keyspace).await {
        Ok(found) => found,
        Err(OpenError::SchemaMissing(_)) => None,
        Err(e) => return Err(e),
    };
    if let Some(v) = found
        && v > SCHEMA_VERSION
    {
        return Ok(Migrated::Newer(v));
    }
    // Version 1 is the first: every table is created if absent. A later version adds its
    // steps here, each idempotent, before the version row is written. Version 2 only adds
    // tables (`media`, `room_media`), which the loop below creates like every other, and so
    // does version 3 (`push_devices`, `room_mutes`).
    for table in schema::TABLES {
        session
            .query_unpaged(ddl(schema::create_table_cql(keyspace, table)), ())
            .await
            .map_err(|e| refused(format!("create table {}", table.name), e))?;
    }
    if found == Some(SCHEMA_VERSION) {
        return Ok(Migrated::UpToDate(SCHEMA_VERSION));
    }
    let upsert = schema::prepare_one(&session, &schema::UPSERT_SCHEMA_VERSION, keyspace)
        .await
        .map_err(|(_, e)| refused("record the schema version", e))?;
    session
        .execute_unpaged(&upsert, (SCHEMA_COMPONENT, SCHEMA_VERSION, now_ms()))
        .await
        .map_err(|e| refused("record the schema version", e))?;
    Ok(Migrated::Applied {
        from: found,
        to: SCHEMA_VERSION,
    })
}

/// Drops a keyspace (for test harnesses that create one per run).
pub async fn drop_keyspace(settings: &ScyllaSettings) -> Result<(), OpenError> {
    let session = connect(settings).await?;
    session
        .query_unpaged(ddl(schema::drop_keyspace_cql(&settings.keyspace)), ())
        .await
        .map_err(|e| refused(format!("drop keyspace `{}`", settings.keyspace), e))?;
    Ok(())
}

/// The ScyllaDB store. Share it as `Arc<dyn Store>`.
pub struct ScyllaStore {
    session: Session,
    q: Prepared,
    locks: Box<[AsyncMutex<()>]>,
    closed: AtomicBool,
}

/// Whether a claim of a `cmid` won or found the first message.
enum Claim {
    Won,
    Duplicate(StoredMessage),
}

impl ScyllaStore {
    /// Connects, checks that the keyspace holds the schema this build expects (it never alters
    /// it: that is `chatnode migrate`'s job), and prepares every statement. The driver's
    /// connection tasks run on the runtime that calls this.
    pub async fn open(settings: &ScyllaSettings) -> Result<Self, OpenError> {
        let session = connect(settings).await?;
        let keyspace = settings.keyspace.as_str();
        check_keyspace(&session, keyspace).await?;
        match read_schema_version(&session, keyspace).await? {
            None => return Err(OpenError::SchemaMissing(keyspace.to_owned())),
            Some(found) if found < SCHEMA_VERSION => {
                return Err(OpenError::SchemaOutdated {
                    keyspace: keyspace.to_owned(),
                    found,
                    wanted: SCHEMA_VERSION,
                });
            }
            Some(found) if found > SCHEMA_VERSION => tracing::warn!(
                found,
                expected = SCHEMA_VERSION,
                "the ScyllaDB schema is newer than this build; continuing (migrations only add)"
            ),
            Some(_) => {}
        }
        let q = Prepared::prepare(&session, keyspace)
            .await
            .map_err(|(cql, e)| match e {
                PrepareError::AllAttemptsFailed { first_attempt } if is_invalid(&first_attempt) => {
                    tracing::error!(cql, error = %first_attempt, "statement refused");
                    OpenError::SchemaMismatch {
                        keyspace: keyspace.to_owned(),
                        detail: first_attempt.to_string(),
                    }
                }
                e => refused("prepare the statements", e),
            })?;
        let locks = (0..LOCK_STRIPES).map(|_| AsyncMutex::new(())).collect();
        tracing::info!(
            keyspace,
            consistency = %settings.consistency,
            "ScyllaDB store open"
        );
        Ok(Self {
            session,
            q,
            locks,
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// The lock that serialises membership, cursor and deletion writes of one room.
    fn room_lock(&self, group: &GroupId, room: &RoomId) -> &AsyncMutex<()> {
        let mut hasher = DefaultHasher::new();
        (group.as_str(), room.as_str()).hash(&mut hasher);
        let at = (hasher.finish() % self.locks.len() as u64) as usize;
        &self.locks[at]
    }

    async fn exec(
        &self,
        op: &'static str,
        ps: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<QueryResult> {
        let started = Instant::now();
        let result = self.session.execute_unpaged(ps, values).await;
        metrics::histogram!("chatnode_store_scylla_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        result.map_err(|e| failed(op, &e))
    }

    /// All rows of a single-page (LIMITed or single-partition, small) select.
    async fn rows<R>(
        &self,
        op: &'static str,
        ps: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let result = self.exec(op, ps, values).await?;
        decode_rows(op, result)
    }

    async fn first<R>(
        &self,
        op: &'static str,
        ps: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Option<R>>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(op, ps, values).await?.into_iter().next())
    }

    /// All rows of a select that may span many pages (a room's members or buckets).
    async fn rows_paged<R, V>(
        &self,
        op: &'static str,
        ps: &PreparedStatement,
        values: V,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
        V: SerializeRow,
    {
        let mut out = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(ps, &values, paging)
                .await
                .map_err(|e| failed(op, &e))?;
            out.extend(decode_rows::<R>(op, result)?);
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Break(()) => return Ok(out),
                std::ops::ControlFlow::Continue(state) => paging = state,
            }
        }
    }

    /// Runs a conditional statement and reads `[applied]` and the row sent back by name (the
    /// columns differ between ScyllaDB and Cassandra).
    async fn lwt(
        &self,
        op: &'static str,
        ps: &PreparedStatement,
        values: impl SerializeRow,
    ) -> StoreResult<Lwt> {
        let result = self.exec(op, ps, values).await?;
        let rows = result.into_rows_result().map_err(|e| undecodable(op, e))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let row = rows
            .maybe_first_row::<Row>()
            .map_err(|e| undecodable(op, e))?
            .ok_or_else(|| undecodable(op, "a conditional statement returned no row"))?;
        let mut columns = HashMap::new();
        for (name, value) in names.into_iter().zip(row.columns) {
            if let Some(value) = value {
                columns.insert(name, value);
            }
        }
        let applied = matches!(columns.get("[applied]"), Some(CqlValue::Boolean(true)));
        Ok(Lwt { applied, columns })
    }

    /// Runs `f` over `items` with at most [`CONCURRENCY`] in flight; the first error wins.
    async fn each<T, F, Fut>(items: Vec<T>, f: F) -> StoreResult<()>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        let results: Vec<StoreResult<()>> = stream::iter(items)
            .map(f)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn room_row(
        &self,
        group: &GroupId,
        room: &RoomId,
    ) -> StoreResult<Option<(RoomRecord, u32)>> {
        let row: Option<RoomRow> = self
            .first(
                "get_room",
                &self.q.select_room,
                (group.as_str(), room.as_str()),
            )
            .await?;
        match row {
            Some(row) => row.into_record(group, room),
            None => Ok(None),
        }
    }

    async fn members(&self, group: &GroupId, room: &RoomId) -> StoreResult<Vec<MemberRecord>> {
        let rows: Vec<MemberRow> = self
            .rows_paged(
                "members",
                &self.q.select_members,
                (group.as_str(), room.as_str()),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(member) = row.into_record()? {
                out.push(member);
            }
        }
        Ok(out)
    }

    async fn write_member(
        &self,
        group: &GroupId,
        room: &RoomId,
        member: &MemberRecord,
    ) -> StoreResult<()> {
        let values = MemberValues::new(group, room, member)?;
        let user_room = (member.user.as_str(), group.as_str(), room.as_str());
        let (a, b) = futures_util::future::join(
            self.exec("put_member", &self.q.upsert_member, values),
            self.exec("put_member", &self.q.insert_user_room, user_room),
        )
        .await;
        a?;
        b?;
        Ok(())
    }

    /// Recounts the room's members and stores the count (see the module documentation).
    async fn recount(&self, group: &GroupId, room: &RoomId) -> StoreResult<()> {
        let key = (group.as_str(), room.as_str());
        let count: Option<(i64,)> = self.first("recount", &self.q.count_members, key).await?;
        let count = count.map_or(0, |(c,)| c);
        // Not applied means the room is gone: nothing to count.
        self.lwt(
            "recount",
            &self.q.set_member_count,
            (count, group.as_str(), room.as_str()),
        )
        .await?;
        Ok(())
    }

    fn source<'a>(&'a self, group: &'a GroupId, room: &'a RoomId) -> RoomSource<'a> {
        RoomSource {
            store: self,
            group: group.as_str(),
            room: room.as_str(),
        }
    }

    /// Claims `cmid` for `msg`, or finds the message that claimed it first.
    async fn claim(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: &StoredMessage,
        cmid: &str,
    ) -> StoreResult<Claim> {
        let id = to_bigint(msg.id, "message id")?;
        let (g, r, user) = (group.as_str(), room.as_str(), msg.from.as_str());
        let claim = self
            .lwt(
                "append",
                &self.q.claim_cmid,
                (g, r, user, cmid, id, now_ms()),
            )
            .await?;
        if claim.applied {
            return Ok(Claim::Won);
        }
        let Some(held) = claim.bigint("message_id") else {
            return Err(undecodable("append", "a claim without a message id"));
        };
        if held == id {
            // Our own claim, applied by an earlier attempt of this very request.
            return Ok(Claim::Won);
        }
        for attempt in 0..FIRST_MESSAGE_POLLS {
            if let Ok(held_id) = u64::try_from(held)
                && let Some(first) = self.get_message(group, room, held_id).await?
            {
                return Ok(Claim::Duplicate(first));
            }
            if attempt + 1 < FIRST_MESSAGE_POLLS {
                tokio::time::sleep(FIRST_MESSAGE_POLL_DELAY).await;
            }
        }
        // The first message is not there. Its sender may still be writing it, or have died
        // between the claim and the write: only an old claim is taken over.
        let claimed_at = claim.bigint("claimed_at").unwrap_or(0);
        if now_ms() - claimed_at < CLAIM_GRACE_MS {
            return Err(StoreError::Unavailable(
                "an earlier send with this cmid is still being stored".into(),
            ));
        }
        let take = self
            .lwt(
                "append",
                &self.q.take_over_cmid,
                (id, now_ms(), g, r, user, cmid, held),
            )
            .await?;
        if take.applied {
            tracing::warn!(%group, %room, "took over an idempotency key whose message was never stored");
            Ok(Claim::Won)
        } else {
            Err(StoreError::Unavailable(
                "a concurrent send with this cmid is being stored".into(),
            ))
        }
    }

    async fn chat_entry(
        &self,
        user: &UserId,
        group: &GroupId,
        room_id: String,
    ) -> StoreResult<Option<ChatListEntry>> {
        let room = RoomId::parse(&room_id).map_err(|e| undecodable("chat_list", e))?;
        let member_key = (group.as_str(), room.as_str(), user.as_str());
        let (record, member, last) = futures_util::future::join3(
            self.room_row(group, &room),
            self.first::<MemberRow>("chat_list", &self.q.select_member, member_key),
            walk(&self.source(group, &room), Bound::AtMost(i64::MAX), 1),
        )
        .await;
        let Some((record, members)) = record? else {
            // Deleted meanwhile.
            return Ok(None);
        };
        let member = match member? {
            Some(row) => row.into_record()?,
            None => None,
        };
        let last = last?.into_iter().next();
        let last_seq = last.as_ref().map_or(0, |m| m.seq);
        let unread = member.map_or(0, |m| last_seq.saturating_sub(m.cursor_seq));
        Ok(Some(ChatListEntry {
            record,
            members,
            last,
            unread,
        }))
    }
}

fn decode_rows<R>(op: &'static str, result: QueryResult) -> StoreResult<Vec<R>>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = result.into_rows_result().map_err(|e| undecodable(op, e))?;
    let iter = rows.rows::<R>().map_err(|e| undecodable(op, e))?;
    iter.map(|row| row.map_err(|e| undecodable(op, e)))
        .collect()
}

/// A room's buckets and messages as the walk reads them.
struct RoomSource<'a> {
    store: &'a ScyllaStore,
    group: &'a str,
    room: &'a str,
}

fn limit(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl BucketSource for RoomSource<'_> {
    async fn buckets(
        &self,
        from: Bucket,
        direction: Direction,
        n: usize,
    ) -> StoreResult<Vec<Bucket>> {
        let q = &self.store.q;
        let ps = match direction {
            Direction::Older => &q.select_buckets_older,
            Direction::Newer => &q.select_buckets_newer,
        };
        let rows: Vec<(i64,)> = self
            .store
            .rows("history", ps, (self.group, self.room, from, limit(n)))
            .await?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }

    async fn messages(
        &self,
        bucket: Bucket,
        bound: Bound,
        n: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        let q = &self.store.q;
        let (ps, x) = match bound {
            Bound::Below(x) => (&q.select_messages_below, x),
            Bound::AtMost(x) => (&q.select_messages_at_most, x),
            Bound::Above(x) => (&q.select_messages_above, x),
        };
        let rows: Vec<MessageRow> = self
            .store
            .rows("history", ps, (self.group, self.room, bucket, x, limit(n)))
            .await?;
        rows.into_iter().map(MessageRow::into_message).collect()
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> StoreResult<()> {
        self.check_open()?;
        let _: Vec<(Option<i32>,)> = self
            .rows("ping", &self.q.select_schema_version, (SCHEMA_COMPONENT,))
            .await?;
        Ok(())
    }

    async fn create_room(
        &self,
        record: RoomRecord,
        members: Vec<MemberRecord>,
    ) -> StoreResult<CreateOutcome> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let (group, room) = (record.group.clone(), record.room.clone());
        let _lock = self.room_lock(&group, &room).lock().await;
        let distinct: std::collections::HashSet<&UserId> =
            members.iter().map(|m| &m.user).collect();
        let values = RoomValues::new(&record, distinct.len());
        let insert = self
            .lwt("create_room", &self.q.insert_room, &values)
            .await?;
        if !insert.applied {
            return match self.room_row(&group, &room).await? {
                Some((existing, _)) => Ok(CreateOutcome::Exists(existing)),
                None => Err(StoreError::Unavailable(
                    "the room was deleted while being created; retry".into(),
                )),
            };
        }
        let written = Self::each(members, |member| {
            let (group, room) = (&group, &room);
            async move { self.write_member(group, room, &member).await }
        })
        .await;
        if let Err(e) = written {
            // Undo the room so that a retry can create it whole.
            if let Err(undo) = self.delete_room_locked(&group, &room).await {
                tracing::error!(%group, %room, error = %undo, "a half-created room could not be removed");
            }
            return Err(e);
        }
        Ok(CreateOutcome::Created)
    }

    async fn get_room(&self, group: &GroupId, room: &RoomId) -> StoreResult<Option<RoomRecord>> {
        self.check_open()?;
        Ok(self.room_row(group, room).await?.map(|(record, _)| record))
    }

    async fn delete_room(&self, group: &GroupId, room: &RoomId) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let _lock = self.room_lock(group, room).lock().await;
        self.delete_room_locked(group, room).await
    }

    async fn load_room(
        &self,
        group: &GroupId,
        room: &RoomId,
        recent: usize,
    ) -> StoreResult<Option<LoadedRoom>> {
        self.check_open()?;
        let Some((record, _)) = self.room_row(group, room).await? else {
            return Ok(None);
        };
        let (members, page) = futures_util::future::join(
            self.members(group, room),
            self.messages_before(group, room, None, recent),
        )
        .await;
        Ok(Some(LoadedRoom {
            record,
            members: members?,
            recent: page?.msgs,
        }))
    }

    async fn put_member(
        &self,
        group: &GroupId,
        room: &RoomId,
        member: MemberRecord,
    ) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let _lock = self.room_lock(group, room).lock().await;
        if self.room_row(group, room).await?.is_none() {
            return Ok(());
        }
        self.write_member(group, room, &member).await?;
        self.recount(group, room).await
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        room: &RoomId,
        user: &UserId,
    ) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let _lock = self.room_lock(group, room).lock().await;
        let (g, r, u) = (group.as_str(), room.as_str(), user.as_str());
        let (a, b, c) = futures_util::future::join3(
            self.exec("remove_member", &self.q.delete_member, (g, r, u)),
            self.exec("remove_member", &self.q.delete_user_room, (u, g, r)),
            // A member who leaves takes their mute with them.
            self.exec("remove_member", &self.q.delete_mute, (g, r, u)),
        )
        .await;
        a?;
        b?;
        c?;
        self.recount(group, room).await
    }

    async fn save_cursors(
        &self,
        group: &GroupId,
        room: &RoomId,
        cursors: Vec<(UserId, MessageId, u64)>,
    ) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        if cursors.is_empty() {
            return Ok(());
        }
        let _lock = self.room_lock(group, room).lock().await;
        let (g, r) = (group.as_str(), room.as_str());
        // The highest cursor asked for each member.
        let mut wanted: HashMap<&str, (u64, u64)> = HashMap::new();
        for (user, cursor, seq) in &cursors {
            let entry = wanted.entry(user.as_str()).or_insert((0, 0));
            *entry = (entry.0.max(*cursor), entry.1.max(*seq));
        }
        let users: Vec<&str> = wanted.keys().copied().collect();
        let mut updates: Vec<(i64, i64, &str, &str, &str)> = Vec::new();
        for chunk in users.chunks(schema::MAX_IN) {
            let rows: Vec<MemberRow> = self
                .rows(
                    "save_cursors",
                    &self.q.select_members_in,
                    (g, r, chunk.to_vec()),
                )
                .await?;
            for row in rows {
                let Some(member) = row.into_record()? else {
                    continue;
                };
                let Some((user, (cursor, seq))) = wanted.get_key_value(member.user.as_str()) else {
                    continue;
                };
                if *cursor > member.cursor || *seq > member.cursor_seq {
                    updates.push((
                        clamp_bigint(member.cursor.max(*cursor)),
                        clamp_bigint(member.cursor_seq.max(*seq)),
                        g,
                        r,
                        *user,
                    ));
                }
            }
        }
        for chunk in updates.chunks(MAX_BATCH) {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            for _ in chunk {
                batch.append_statement(self.q.update_cursor.clone());
            }
            let started = Instant::now();
            let result = self.session.batch(&batch, chunk).await;
            metrics::histogram!("chatnode_store_scylla_seconds", "op" => "save_cursors")
                .record(started.elapsed().as_secs_f64());
            result.map_err(|e| failed("save_cursors", &e))?;
        }
        Ok(())
    }

    async fn append_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<AppendOutcome> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        self.append_one(group, room, msg).await
    }

    async fn append_messages(
        &self,
        group: &GroupId,
        room: &RoomId,
        msgs: Vec<StoredMessage>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        // A cmid repeated within the call is answered from its first occurrence; the others
        // are appended concurrently (their keys differ, so they cannot race each other), at
        // most CONCURRENCY at once, and answered in order.
        let mut first_of: HashMap<(&UserId, &str), usize> = HashMap::new();
        let mut earlier: Vec<Option<usize>> = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            let first =
                msg.cmid
                    .as_deref()
                    .and_then(|cmid| match first_of.entry((&msg.from, cmid)) {
                        std::collections::hash_map::Entry::Occupied(o) => Some(*o.get()),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(i);
                            None
                        }
                    });
            earlier.push(first);
        }
        let own: Vec<StoredMessage> = msgs
            .iter()
            .zip(&earlier)
            .filter(|(_, first)| first.is_none())
            .map(|(msg, _)| msg.clone())
            .collect();
        let results: Vec<StoreResult<AppendOutcome>> = stream::iter(own)
            .map(|msg| self.append_one(group, room, msg))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut results = results.into_iter();
        let mut out: Vec<AppendOutcome> = Vec::with_capacity(msgs.len());
        for first in &earlier {
            let outcome = match first {
                None => results
                    .next()
                    .ok_or_else(|| StoreError::Unavailable("an append went unanswered".into()))??,
                Some(j) => match &out[*j] {
                    AppendOutcome::Stored => AppendOutcome::Duplicate(msgs[*j].clone()),
                    duplicate => duplicate.clone(),
                },
            };
            out.push(outcome);
        }
        Ok(out)
    }

    async fn update_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let Some(existing) = self.get_message(group, room, msg.id).await? else {
            return Ok(());
        };
        // Deletion wins: a tombstone is never replaced by a live version.
        if existing.deleted && !msg.deleted {
            return Ok(());
        }
        if msg.deleted {
            let values = MessageValues::new(group, room, &msg)?;
            self.exec("update_message", &self.q.insert_message, &values)
                .await?;
        } else {
            let values = EditValues::new(group, room, &msg)?;
            self.exec("update_message", &self.q.edit_message, &values)
                .await?;
        }
        Ok(())
    }

    async fn get_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>> {
        self.check_open()?;
        let Ok(bigint) = i64::try_from(id) else {
            return Ok(None);
        };
        let key = (
            group.as_str(),
            room.as_str(),
            buckets::bucket_of(id),
            bigint,
        );
        let row: Option<MessageRow> = self
            .first("get_message", &self.q.select_message, key)
            .await?;
        row.map(MessageRow::into_message).transpose()
    }

    async fn messages_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page> {
        self.check_open()?;
        let bound = match before.map(i64::try_from) {
            Some(Ok(before)) => Bound::Below(before),
            // No id reaches past the bigint range: everything is before it.
            Some(Err(_)) | None => Bound::AtMost(i64::MAX),
        };
        let mut msgs = walk(&self.source(group, room), bound, limit.saturating_add(1)).await?;
        let more = msgs.len() > limit;
        msgs.truncate(limit);
        msgs.reverse();
        Ok(Page { msgs, more })
    }

    async fn messages_after(
        &self,
        group: &GroupId,
        room: &RoomId,
        since: MessageId,
        limit: usize,
    ) -> StoreResult<Page> {
        self.check_open()?;
        let Ok(since) = i64::try_from(since) else {
            return Ok(Page {
                msgs: Vec::new(),
                more: false,
            });
        };
        let mut msgs = walk(
            &self.source(group, room),
            Bound::Above(since),
            limit.saturating_add(1),
        )
        .await?;
        let more = msgs.len() > limit;
        msgs.truncate(limit);
        Ok(Page { msgs, more })
    }

    async fn message_at_or_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>> {
        self.check_open()?;
        let found = walk(
            &self.source(group, room),
            Bound::AtMost(clamp_bigint(id)),
            1,
        )
        .await?;
        Ok(found.into_iter().next())
    }

    async fn chat_list(&self, user: &UserId, group: &GroupId) -> StoreResult<Vec<ChatListEntry>> {
        self.check_open()?;
        let rooms: Vec<(String,)> = self
            .rows_paged(
                "chat_list",
                &self.q.select_user_rooms,
                (user.as_str(), group.as_str()),
            )
            .await?;
        let entries: Vec<StoreResult<Option<ChatListEntry>>> = stream::iter(rooms)
            .map(|(room,)| self.chat_entry(user, group, room))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(entry) = entry? {
                out.push(entry);
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.last.as_ref().map_or(e.record.created, |m| m.ts)));
        Ok(out)
    }

    async fn put_media(&self, media: MediaRecord) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let values = MediaValues::new(&media)?;
        // The room's index first, so a room deleted later always finds the record.
        self.exec(
            "put_media",
            &self.q.insert_room_media,
            (media.group.as_str(), media.room.as_str(), media.id.as_str()),
        )
        .await?;
        self.exec("put_media", &self.q.insert_media, values).await?;
        Ok(())
    }

    async fn get_media(&self, id: &str) -> StoreResult<Option<MediaRecord>> {
        self.check_open()?;
        let row: Option<MediaRow> = self.first("get_media", &self.q.select_media, (id,)).await?;
        match row {
            Some(row) => row.into_record(),
            None => Ok(None),
        }
    }

    async fn set_media_thumbnail(&self, id: &str) -> StoreResult<bool> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let outcome = self
            .lwt(
                "set_media_thumbnail",
                &self.q.set_media_thumbnail,
                (true, id),
            )
            .await?;
        Ok(outcome.applied)
    }

    async fn delete_media(&self, id: &str) -> StoreResult<()> {
        self.check_open()?;
        let _timer = WriteTimer::start();
        let Some(media) = self.get_media(id).await? else {
            return Ok(());
        };
        // The record before its index entry: a failure half-way leaves an index entry that a
        // room deletion cleans up, never a record that nothing points to.
        self.exec("delete_media", &self.q.delete_media, (id,))
            .await?;
        self.exec(
            "delete_media",
            &self.q.delete_one_room_media,
            (media.group.as_str(), media.room.as_str(), id),
        )
        .await?;
        Ok(())
    }

    async fn put_device(&self, user: &UserId, device: DeviceRecord) -> StoreResult<()> {
        let _timer = WriteTimer::start();
        self.put_device_row(user, device).await
    }

    async fn delete_device(&self, user: &UserId, token: &str) -> StoreResult<()> {
        let _timer = WriteTimer::start();
        self.delete_device_row(user, token).await
    }

    async fn devices_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, Vec<DeviceRecord>)>> {
        self.device_rows(users).await
    }

    async fn set_muted(
        &self,
        group: &GroupId,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> StoreResult<()> {
        let _timer = WriteTimer::start();
        self.set_mute_row(group, room, user, muted).await
    }

    async fn muted_among(
        &self,
        group: &GroupId,
        room: &RoomId,
        users: &[UserId],
    ) -> StoreResult<std::collections::HashSet<UserId>> {
        self.mutes_among(group, room, users).await
    }

    async fn close(&self) -> StoreResult<()> {
        // Every write has been answered by the time it returned: nothing is buffered here.
        // The session's connections close when the store is dropped.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

impl ScyllaStore {
    /// Appends one message (the store is open; the caller times the write).
    async fn append_one(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<AppendOutcome> {
        let values = MessageValues::new(group, room, &msg)?;
        // The bucket is indexed before the message exists, so a history walk never misses it.
        let index = self.exec(
            "append",
            &self.q.insert_bucket,
            (group.as_str(), room.as_str(), values.bucket),
        );
        match &msg.cmid {
            Some(cmid) => {
                let (claim, index) =
                    futures_util::future::join(self.claim(group, room, &msg, cmid), index).await;
                index?;
                if let Claim::Duplicate(first) = claim? {
                    return Ok(AppendOutcome::Duplicate(first));
                }
            }
            None => {
                index.await?;
            }
        }
        self.exec("append", &self.q.insert_message, &values).await?;
        Ok(AppendOutcome::Stored)
    }

    /// Deletes a room (the caller holds its lock). What locates other rows (members → their
    /// chat-list entries, the bucket index → the message partitions) is deleted after what it
    /// locates, and the room row last, so a delete that fails half-way can simply be retried.
    async fn delete_room_locked(&self, group: &GroupId, room: &RoomId) -> StoreResult<()> {
        let (g, r) = (group.as_str(), room.as_str());
        let (members, buckets) = futures_util::future::join(
            self.rows_paged::<MemberRow, _>("delete_room", &self.q.select_members, (g, r)),
            self.rows_paged::<(i64,), _>("delete_room", &self.q.select_all_buckets, (g, r)),
        )
        .await;
        let (members, buckets) = (members?, buckets?);
        let media: Vec<(String,)> = self
            .rows_paged("delete_room", &self.q.select_room_media, (g, r))
            .await?;
        Self::each(media, |(id,)| async move {
            self.exec("delete_room", &self.q.delete_media, (id.as_str(),))
                .await
                .map(|_| ())
        })
        .await?;
        self.exec("delete_room", &self.q.delete_room_media, (g, r))
            .await?;
        self.exec("delete_room", &self.q.delete_room_mutes, (g, r))
            .await?;
        let users: Vec<String> = members.into_iter().map(|m| m.user_id).collect();
        Self::each(users, |user| async move {
            self.exec(
                "delete_room",
                &self.q.delete_user_room,
                (user.as_str(), g, r),
            )
            .await
            .map(|_| ())
        })
        .await?;
        Self::each(buckets, |(bucket,)| async move {
            self.exec("delete_room", &self.q.delete_message_bucket, (g, r, bucket))
                .await
                .map(|_| ())
        })
        .await?;
        let (a, b, c) = futures_util::future::join3(
            self.exec("delete_room", &self.q.delete_members, (g, r)),
            self.exec("delete_room", &self.q.delete_buckets, (g, r)),
            self.exec("delete_room", &self.q.delete_cmids, (g, r)),
        )
        .await;
        a?;
        b?;
        c?;
        self.lwt("delete_room", &self.q.delete_room, (g, r)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablets_are_avoided_only_without_lwt_support() {
        assert!(tablets_without_lwt("CDC,TABLETS,VIEWS"));
        assert!(!tablets_without_lwt("CDC,TABLETS,LWT_WITH_TABLETS"));
        assert!(!tablets_without_lwt("CDC,LWT"));
        assert!(!tablets_without_lwt(""));
        assert!(!tablets_without_lwt("TABLETS_X"));
    }

    #[test]
    fn errors_give_short_reasons() {
        let timeout = ExecutionError::RequestTimeout(Duration::from_secs(5));
        assert_eq!(reason(&timeout), "the request timed out");
        let unavailable = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Unavailable {
                consistency: ::scylla::statement::Consistency::LocalQuorum,
                required: 2,
                alive: 1,
            },
            "Cannot achieve consistency level".into(),
        ));
        assert_eq!(
            reason(&unavailable),
            "the cluster cannot meet the consistency level"
        );
        match failed("test", &unavailable) {
            StoreError::Unavailable(msg) => {
                assert_eq!(msg, "scylla: the cluster cannot meet the consistency level");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reason(&ExecutionError::EmptyPlan),
            "no connection to the cluster"
        );
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let e = OpenError::SchemaOutdated {
            keyspace: "chat".into(),
            found: 0,
            wanted: SCHEMA_VERSION,
        };
        assert!(e.to_string().contains("chatnode migrate"), "{e}");
        assert!(
            OpenError::KeyspaceMissing("chat".into())
                .to_string()
                .contains("chatnode migrate")
        );
        assert!(
            OpenError::SchemaMissing("chat".into())
                .to_string()
                .contains("chatnode migrate")
        );
    }

    /// Without a reachable cluster, opening and migrating fail with a connection error (this
    /// is as far as a machine without ScyllaDB can follow the path).
    #[tokio::test]
    async fn without_a_cluster_open_fails_clearly() {
        let settings = ScyllaSettings {
            // Port 1 on loopback: nothing listens there.
            nodes: Some("127.0.0.1:1".into()),
            request_timeout_ms: 500,
            ..ScyllaSettings::default()
        };
        let Err(e) = ScyllaStore::open(&settings).await else {
            panic!("opened a store without a cluster");
        };
        assert!(matches!(e, OpenError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        let e = migrate(&settings)
            .await
            .expect_err("migrated without a cluster");
        assert!(matches!(e, OpenError::Connect { .. }), "{e}");
        let missing = ScyllaSettings::default();
        let e = migrate(&missing).await.expect_err("no nodes");
        assert!(matches!(e, OpenError::Settings("scylla.nodes", _)), "{e}");
    }
}
