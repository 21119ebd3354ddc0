//! The ScyllaDB schema: every table as data (from which its `CREATE TABLE` is generated) and,
//! beside each table, every CQL statement that uses it. Nothing else in the backend writes CQL
//! text; a test checks that each statement names only its own table and that table's columns.
//!
//! Names avoid CQL keywords (`group`, `from`, `text` are spelled `group_id`, `sender`, `body`).
//! Ids are bigints: a snowflake has 63 significant bits, so every id fits and sorts the same.

use ::scylla::client::session::Session;
use ::scylla::errors::PrepareError;
use ::scylla::statement::prepared::PreparedStatement;

/// The schema version this build writes and expects. Raise it with every change to the tables
/// below, and teach `chatnode migrate` to bring older versions forward.
pub const SCHEMA_VERSION: i32 = 3;

/// The row of `schema_version` that records this application's schema.
pub const SCHEMA_COMPONENT: &str = "chatnode";

/// How long an idempotency key lives, in seconds (`USING TTL` below): 24 hours
/// (docs/protocol.md §3.2).
pub const IDEMPOTENCY_TTL_SECS: i64 = 86_400;

/// Clustering order of a clustering column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A table as data: its name, its columns with their CQL types, and its key.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
    pub partition_key: &'static [&'static str],
    pub clustering: &'static [(&'static str, Order)],
    /// Created by `chatnode migrate`; `false` for the server's own tables that are only read.
    pub ours: bool,
}

/// One CQL statement and the table it uses.
#[derive(Debug)]
pub struct Stmt {
    pub table: &'static Table,
    pub cql: &'static str,
    /// Safe for the driver to retry after a timeout (never true for a conditional statement).
    pub idempotent: bool,
}

const fn stmt(table: &'static Table, cql: &'static str) -> Stmt {
    Stmt {
        table,
        cql,
        idempotent: true,
    }
}

/// A conditional (lightweight-transaction) statement: not retried blindly by the driver.
const fn lwt(table: &'static Table, cql: &'static str) -> Stmt {
    Stmt {
        table,
        cql,
        idempotent: false,
    }
}

// ---------------------------------------------------------------------------------------------
/// Which schema version the keyspace holds. `chatnode migrate` writes it; a node refuses to start
/// when it is missing or older than [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_TABLE: Table = Table {
    name: "schema_version",
    columns: &[
        ("component", "text"),
        ("version", "int"),
        ("applied_at", "bigint"),
    ],
    partition_key: &["component"],
    clustering: &[],
    ours: true,
};

pub const SELECT_SCHEMA_VERSION: Stmt = stmt(
    &SCHEMA_VERSION_TABLE,
    "SELECT version FROM schema_version WHERE component = ?",
);

pub const UPSERT_SCHEMA_VERSION: Stmt = stmt(
    &SCHEMA_VERSION_TABLE,
    "INSERT INTO schema_version (component, version, applied_at) VALUES (?, ?, ?)",
);

// ---------------------------------------------------------------------------------------------
/// A room's record and its member count. Every write to this table is conditional (IF NOT
/// EXISTS / IF EXISTS), so creation is decided once and a late count update cannot bring a
/// deleted room back. The count is not a counter column: counters are not idempotent on retry.
pub const ROOMS: Table = Table {
    name: "rooms",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("title", "text"),
        ("kind", "text"),
        ("owner", "text"),
        ("max_members", "bigint"),
        ("password_hash", "text"),
        ("created", "bigint"),
        ("member_count", "bigint"),
    ],
    partition_key: &["group_id", "room_id"],
    clustering: &[],
    ours: true,
};

pub const INSERT_ROOM: Stmt = lwt(
    &ROOMS,
    "INSERT INTO rooms (group_id, room_id, title, kind, owner, max_members, password_hash, \
     created, member_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
);

pub const SELECT_ROOM: Stmt = stmt(
    &ROOMS,
    "SELECT title, kind, owner, max_members, password_hash, created, member_count \
     FROM rooms WHERE group_id = ? AND room_id = ?",
);

pub const SET_MEMBER_COUNT: Stmt = lwt(
    &ROOMS,
    "UPDATE rooms SET member_count = ? WHERE group_id = ? AND room_id = ? IF EXISTS",
);

pub const DELETE_ROOM: Stmt = lwt(
    &ROOMS,
    "DELETE FROM rooms WHERE group_id = ? AND room_id = ? IF EXISTS",
);

// ---------------------------------------------------------------------------------------------
/// A room's members and their read cursors, one partition per room. A row without `joined` is
/// the remains of a cursor write that raced a removal and is not a member.
pub const MEMBERS: Table = Table {
    name: "members",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("user_id", "text"),
        ("cursor_id", "bigint"),
        ("cursor_seq", "bigint"),
        ("joined", "bigint"),
    ],
    partition_key: &["group_id", "room_id"],
    clustering: &[("user_id", Order::Asc)],
    ours: true,
};

pub const UPSERT_MEMBER: Stmt = stmt(
    &MEMBERS,
    "INSERT INTO members (group_id, room_id, user_id, cursor_id, cursor_seq, joined) \
     VALUES (?, ?, ?, ?, ?, ?)",
);

pub const SELECT_MEMBERS: Stmt = stmt(
    &MEMBERS,
    "SELECT user_id, cursor_id, cursor_seq, joined FROM members \
     WHERE group_id = ? AND room_id = ?",
);

pub const SELECT_MEMBER: Stmt = stmt(
    &MEMBERS,
    "SELECT user_id, cursor_id, cursor_seq, joined FROM members \
     WHERE group_id = ? AND room_id = ? AND user_id = ?",
);

/// At most [`MAX_IN`] users per call.
pub const SELECT_MEMBERS_IN: Stmt = stmt(
    &MEMBERS,
    "SELECT user_id, cursor_id, cursor_seq, joined FROM members \
     WHERE group_id = ? AND room_id = ? AND user_id IN ?",
);

/// The most values bound to one `IN ?` (ScyllaDB refuses more than 100 clustering keys).
pub const MAX_IN: usize = 100;

/// Batched (unlogged, one partition) by `save_cursors`.
pub const UPDATE_CURSOR: Stmt = stmt(
    &MEMBERS,
    "UPDATE members SET cursor_id = ?, cursor_seq = ? \
     WHERE group_id = ? AND room_id = ? AND user_id = ?",
);

/// Counts members, not the remains of raced cursor writes (`COUNT(joined)` skips nulls).
pub const COUNT_MEMBERS: Stmt = stmt(
    &MEMBERS,
    "SELECT COUNT(joined) FROM members WHERE group_id = ? AND room_id = ?",
);

pub const DELETE_MEMBER: Stmt = stmt(
    &MEMBERS,
    "DELETE FROM members WHERE group_id = ? AND room_id = ? AND user_id = ?",
);

pub const DELETE_MEMBERS: Stmt = stmt(
    &MEMBERS,
    "DELETE FROM members WHERE group_id = ? AND room_id = ?",
);

// ---------------------------------------------------------------------------------------------
/// Each user's rooms in a group, for the chat list (the record and activity are read from the
/// room's own rows, so there is no copy to keep up to date).
pub const USER_ROOMS: Table = Table {
    name: "user_rooms",
    columns: &[
        ("user_id", "text"),
        ("group_id", "text"),
        ("room_id", "text"),
    ],
    partition_key: &["user_id", "group_id"],
    clustering: &[("room_id", Order::Asc)],
    ours: true,
};

pub const INSERT_USER_ROOM: Stmt = stmt(
    &USER_ROOMS,
    "INSERT INTO user_rooms (user_id, group_id, room_id) VALUES (?, ?, ?)",
);

pub const SELECT_USER_ROOMS: Stmt = stmt(
    &USER_ROOMS,
    "SELECT room_id FROM user_rooms WHERE user_id = ? AND group_id = ?",
);

pub const DELETE_USER_ROOM: Stmt = stmt(
    &USER_ROOMS,
    "DELETE FROM user_rooms WHERE user_id = ? AND group_id = ? AND room_id = ?",
);

// ---------------------------------------------------------------------------------------------
/// The buckets a room has written messages to, highest first. Its lowest row is the room's first
/// bucket: history walks these rows and stops there (see `walk.rs`).
pub const MESSAGE_BUCKETS: Table = Table {
    name: "message_buckets",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("bucket", "bigint"),
    ],
    partition_key: &["group_id", "room_id"],
    clustering: &[("bucket", Order::Desc)],
    ours: true,
};

pub const INSERT_BUCKET: Stmt = stmt(
    &MESSAGE_BUCKETS,
    "INSERT INTO message_buckets (group_id, room_id, bucket) VALUES (?, ?, ?)",
);

pub const SELECT_BUCKETS_OLDER: Stmt = stmt(
    &MESSAGE_BUCKETS,
    "SELECT bucket FROM message_buckets WHERE group_id = ? AND room_id = ? AND bucket <= ? \
     LIMIT ?",
);

pub const SELECT_BUCKETS_NEWER: Stmt = stmt(
    &MESSAGE_BUCKETS,
    "SELECT bucket FROM message_buckets WHERE group_id = ? AND room_id = ? AND bucket >= ? \
     ORDER BY bucket ASC LIMIT ?",
);

pub const SELECT_ALL_BUCKETS: Stmt = stmt(
    &MESSAGE_BUCKETS,
    "SELECT bucket FROM message_buckets WHERE group_id = ? AND room_id = ?",
);

pub const DELETE_BUCKETS: Stmt = stmt(
    &MESSAGE_BUCKETS,
    "DELETE FROM message_buckets WHERE group_id = ? AND room_id = ?",
);

// ---------------------------------------------------------------------------------------------
/// Messages, one partition per room and time bucket (`buckets.rs`), newest first. Deletion wins:
/// only a tombstone writes `deleted` (as true, with the whole row); an edit writes every other
/// column, and a row whose `deleted` is true is read without text or media whatever an edit that
/// raced the delete left there.
pub const MESSAGES: Table = Table {
    name: "messages",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("bucket", "bigint"),
        ("id", "bigint"),
        ("seq", "bigint"),
        ("sender", "text"),
        ("kind", "text"),
        ("body", "text"),
        ("media", "blob"),
        ("ts", "bigint"),
        ("cmid", "text"),
        ("edited", "bigint"),
        ("deleted", "boolean"),
    ],
    partition_key: &["group_id", "room_id", "bucket"],
    clustering: &[("id", Order::Desc)],
    ours: true,
};

/// Appends and tombstones (a tombstone is the whole row with `deleted = true`).
pub const INSERT_MESSAGE: Stmt = stmt(
    &MESSAGES,
    "INSERT INTO messages (group_id, room_id, bucket, id, seq, sender, kind, body, media, ts, \
     cmid, edited, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
);

/// Edits: every column except `deleted`, so an edit can never undo a delete.
pub const EDIT_MESSAGE: Stmt = stmt(
    &MESSAGES,
    "UPDATE messages SET seq = ?, sender = ?, kind = ?, body = ?, media = ?, ts = ?, cmid = ?, \
     edited = ? WHERE group_id = ? AND room_id = ? AND bucket = ? AND id = ?",
);

pub const SELECT_MESSAGE: Stmt = stmt(
    &MESSAGES,
    "SELECT id, seq, sender, kind, body, media, ts, cmid, edited, deleted FROM messages \
     WHERE group_id = ? AND room_id = ? AND bucket = ? AND id = ?",
);

pub const SELECT_MESSAGES_BELOW: Stmt = stmt(
    &MESSAGES,
    "SELECT id, seq, sender, kind, body, media, ts, cmid, edited, deleted FROM messages \
     WHERE group_id = ? AND room_id = ? AND bucket = ? AND id < ? LIMIT ?",
);

pub const SELECT_MESSAGES_AT_MOST: Stmt = stmt(
    &MESSAGES,
    "SELECT id, seq, sender, kind, body, media, ts, cmid, edited, deleted FROM messages \
     WHERE group_id = ? AND room_id = ? AND bucket = ? AND id <= ? LIMIT ?",
);

pub const SELECT_MESSAGES_ABOVE: Stmt = stmt(
    &MESSAGES,
    "SELECT id, seq, sender, kind, body, media, ts, cmid, edited, deleted FROM messages \
     WHERE group_id = ? AND room_id = ? AND bucket = ? AND id > ? ORDER BY id ASC LIMIT ?",
);

pub const DELETE_MESSAGE_BUCKET: Stmt = stmt(
    &MESSAGES,
    "DELETE FROM messages WHERE group_id = ? AND room_id = ? AND bucket = ?",
);

// ---------------------------------------------------------------------------------------------
/// Idempotency keys: (sender, cmid) → the message it produced, for 24 hours. One partition per
/// room so that deleting a room deletes its keys at once. Claims are `IF NOT EXISTS`, so of
/// concurrent duplicates exactly one wins; the driver routes a partition's conditional
/// statements to one coordinator in a fixed order, which serialises them instead of letting
/// them contend.
pub const IDEMPOTENCY: Table = Table {
    name: "idempotency",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("user_id", "text"),
        ("cmid", "text"),
        ("message_id", "bigint"),
        ("claimed_at", "bigint"),
    ],
    partition_key: &["group_id", "room_id"],
    clustering: &[("user_id", Order::Asc), ("cmid", Order::Asc)],
    ours: true,
};

pub const CLAIM_CMID: Stmt = lwt(
    &IDEMPOTENCY,
    "INSERT INTO idempotency (group_id, room_id, user_id, cmid, message_id, claimed_at) \
     VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL 86400",
);

/// Takes over a claim whose message was never written (see `append_message`).
pub const TAKE_OVER_CMID: Stmt = lwt(
    &IDEMPOTENCY,
    "UPDATE idempotency USING TTL 86400 SET message_id = ?, claimed_at = ? \
     WHERE group_id = ? AND room_id = ? AND user_id = ? AND cmid = ? IF message_id = ?",
);

pub const DELETE_CMIDS: Stmt = stmt(
    &IDEMPOTENCY,
    "DELETE FROM idempotency WHERE group_id = ? AND room_id = ?",
);

// ---------------------------------------------------------------------------------------------
/// Uploaded media (version 2), one partition per media id: a download names only the id.
pub const MEDIA: Table = Table {
    name: "media",
    columns: &[
        ("media_id", "text"),
        ("group_id", "text"),
        ("room_id", "text"),
        ("uploader", "text"),
        ("content_type", "text"),
        ("size", "bigint"),
        ("file_name", "text"),
        ("created", "bigint"),
        ("has_thumbnail", "boolean"),
    ],
    partition_key: &["media_id"],
    clustering: &[],
    ours: true,
};

pub const INSERT_MEDIA: Stmt = stmt(
    &MEDIA,
    "INSERT INTO media (media_id, group_id, room_id, uploader, content_type, size, file_name, \
     created, has_thumbnail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
);

pub const SELECT_MEDIA: Stmt = stmt(
    &MEDIA,
    "SELECT media_id, group_id, room_id, uploader, content_type, size, file_name, created, \
     has_thumbnail FROM media WHERE media_id = ?",
);

/// Conditional, so a thumbnail that finishes after its media was deleted cannot recreate the
/// row.
pub const SET_MEDIA_THUMBNAIL: Stmt = lwt(
    &MEDIA,
    "UPDATE media SET has_thumbnail = ? WHERE media_id = ? IF EXISTS",
);

pub const DELETE_MEDIA: Stmt = stmt(&MEDIA, "DELETE FROM media WHERE media_id = ?");

// ---------------------------------------------------------------------------------------------
/// Each room's media ids (version 2), so that deleting a room finds its media records.
pub const ROOM_MEDIA: Table = Table {
    name: "room_media",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("media_id", "text"),
    ],
    partition_key: &["group_id", "room_id"],
    clustering: &[("media_id", Order::Asc)],
    ours: true,
};

pub const INSERT_ROOM_MEDIA: Stmt = stmt(
    &ROOM_MEDIA,
    "INSERT INTO room_media (group_id, room_id, media_id) VALUES (?, ?, ?)",
);

pub const SELECT_ROOM_MEDIA: Stmt = stmt(
    &ROOM_MEDIA,
    "SELECT media_id FROM room_media WHERE group_id = ? AND room_id = ?",
);

pub const DELETE_ONE_ROOM_MEDIA: Stmt = stmt(
    &ROOM_MEDIA,
    "DELETE FROM room_media WHERE group_id = ? AND room_id = ? AND media_id = ?",
);

pub const DELETE_ROOM_MEDIA: Stmt = stmt(
    &ROOM_MEDIA,
    "DELETE FROM room_media WHERE group_id = ? AND room_id = ?",
);

// ---------------------------------------------------------------------------------------------
/// Each user's push devices (version 3), one partition per user: a push reads them all at once.
/// `device_token` is the FCM registration token (`token` is a CQL keyword).
pub const PUSH_DEVICES: Table = Table {
    name: "push_devices",
    columns: &[
        ("user_id", "text"),
        ("device_token", "text"),
        ("platform", "text"),
        ("created", "bigint"),
        ("last_used", "bigint"),
    ],
    partition_key: &["user_id"],
    clustering: &[("device_token", Order::Asc)],
    ours: true,
};

/// Read before a registration, so that registering a known token again keeps its `created`.
pub const SELECT_DEVICE_CREATED: Stmt = stmt(
    &PUSH_DEVICES,
    "SELECT created FROM push_devices WHERE user_id = ? AND device_token = ?",
);

pub const UPSERT_DEVICE: Stmt = stmt(
    &PUSH_DEVICES,
    "INSERT INTO push_devices (user_id, device_token, platform, created, last_used) \
     VALUES (?, ?, ?, ?, ?)",
);

pub const SELECT_DEVICES: Stmt = stmt(
    &PUSH_DEVICES,
    "SELECT device_token, platform, created, last_used FROM push_devices WHERE user_id = ?",
);

pub const DELETE_DEVICE: Stmt = stmt(
    &PUSH_DEVICES,
    "DELETE FROM push_devices WHERE user_id = ? AND device_token = ?",
);

// ---------------------------------------------------------------------------------------------
/// Rooms muted by their members (version 3), one partition per room: a push asks once which of
/// its recipients muted the room, and deleting the room deletes its mutes.
pub const ROOM_MUTES: Table = Table {
    name: "room_mutes",
    columns: &[
        ("group_id", "text"),
        ("room_id", "text"),
        ("user_id", "text"),
        ("muted_at", "bigint"),
    ],
    partition_key: &["group_id", "room_id"],
    clustering: &[("user_id", Order::Asc)],
    ours: true,
};

pub const INSERT_MUTE: Stmt = stmt(
    &ROOM_MUTES,
    "INSERT INTO room_mutes (group_id, room_id, user_id, muted_at) VALUES (?, ?, ?, ?)",
);

pub const DELETE_MUTE: Stmt = stmt(
    &ROOM_MUTES,
    "DELETE FROM room_mutes WHERE group_id = ? AND room_id = ? AND user_id = ?",
);

/// At most [`MAX_IN`] users per call.
pub const SELECT_MUTES_IN: Stmt = stmt(
    &ROOM_MUTES,
    "SELECT user_id FROM room_mutes WHERE group_id = ? AND room_id = ? AND user_id IN ?",
);

pub const DELETE_ROOM_MUTES: Stmt = stmt(
    &ROOM_MUTES,
    "DELETE FROM room_mutes WHERE group_id = ? AND room_id = ?",
);

// ---------------------------------------------------------------------------------------------
/// The server's own description of itself, read by `chatnode migrate` to learn whether it has
/// tablets (conditional statements need a keyspace without them on servers that lack
/// `LWT_WITH_TABLETS`). Cassandra has no such column, which the probe reads as "no tablets".
pub const SYSTEM_LOCAL: Table = Table {
    name: "system.local",
    columns: &[("key", "text"), ("supported_features", "text")],
    partition_key: &["key"],
    clustering: &[],
    ours: false,
};

pub const PROBE_FEATURES: Stmt = stmt(
    &SYSTEM_LOCAL,
    "SELECT supported_features FROM system.local WHERE key = 'local'",
);

/// The server's list of keyspaces, read by a node at start to tell a missing keyspace apart from
/// a missing table (a node never sends `USE`, so nothing else says which is missing).
pub const SYSTEM_KEYSPACES: Table = Table {
    name: "system_schema.keyspaces",
    columns: &[("keyspace_name", "text")],
    partition_key: &["keyspace_name"],
    clustering: &[],
    ours: false,
};

pub const SELECT_KEYSPACE: Stmt = stmt(
    &SYSTEM_KEYSPACES,
    "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
);

// ---------------------------------------------------------------------------------------------

/// Every table `chatnode migrate` creates, in creation order.
pub const TABLES: &[&Table] = &[
    &SCHEMA_VERSION_TABLE,
    &ROOMS,
    &MEMBERS,
    &USER_ROOMS,
    &MESSAGE_BUCKETS,
    &MESSAGES,
    &IDEMPOTENCY,
    &MEDIA,
    &ROOM_MEDIA,
    &PUSH_DEVICES,
    &ROOM_MUTES,
];

/// Statements that `chatnode migrate` or a node's start runs once (not kept prepared).
pub const MIGRATE_ONLY: &[&Stmt] = &[&UPSERT_SCHEMA_VERSION, &PROBE_FEATURES, &SELECT_KEYSPACE];

/// Declares the statements a node prepares at connect: one field each, and the list [`ALL`] that
/// the schema test checks, so no statement can be run without being checked.
macro_rules! prepared {
    ($($field:ident: $stmt:ident,)*) => {
        /// Every statement the backend runs, prepared once at connect.
        pub struct Prepared {
            $(pub $field: PreparedStatement,)*
        }

        /// Every statement a node runs, in the order [`Prepared`] declares them.
        pub const ALL: &[&Stmt] = &[$(&$stmt,)*];

        impl Prepared {
            /// Prepares every statement (on every node of the cluster, by the driver).
            pub async fn prepare(
                session: &Session,
                keyspace: &str,
            ) -> Result<Self, (&'static str, PrepareError)> {
                Ok(Self {
                    $($field: prepare_one(session, &$stmt, keyspace).await?,)*
                })
            }
        }
    };
}

prepared! {
    select_schema_version: SELECT_SCHEMA_VERSION,
    insert_room: INSERT_ROOM,
    select_room: SELECT_ROOM,
    set_member_count: SET_MEMBER_COUNT,
    delete_room: DELETE_ROOM,
    upsert_member: UPSERT_MEMBER,
    select_members: SELECT_MEMBERS,
    select_member: SELECT_MEMBER,
    select_members_in: SELECT_MEMBERS_IN,
    update_cursor: UPDATE_CURSOR,
    count_members: COUNT_MEMBERS,
    delete_member: DELETE_MEMBER,
    delete_members: DELETE_MEMBERS,
    insert_user_room: INSERT_USER_ROOM,
    select_user_rooms: SELECT_USER_ROOMS,
    delete_user_room: DELETE_USER_ROOM,
    insert_bucket: INSERT_BUCKET,
    select_buckets_older: SELECT_BUCKETS_OLDER,
    select_buckets_newer: SELECT_BUCKETS_NEWER,
    select_all_buckets: SELECT_ALL_BUCKETS,
    delete_buckets: DELETE_BUCKETS,
    insert_message: INSERT_MESSAGE,
    edit_message: EDIT_MESSAGE,
    select_message: SELECT_MESSAGE,
    select_messages_below: SELECT_MESSAGES_BELOW,
    select_messages_at_most: SELECT_MESSAGES_AT_MOST,
    select_messages_above: SELECT_MESSAGES_ABOVE,
    delete_message_bucket: DELETE_MESSAGE_BUCKET,
    claim_cmid: CLAIM_CMID,
    take_over_cmid: TAKE_OVER_CMID,
    delete_cmids: DELETE_CMIDS,
    insert_media: INSERT_MEDIA,
    select_media: SELECT_MEDIA,
    set_media_thumbnail: SET_MEDIA_THUMBNAIL,
    delete_media: DELETE_MEDIA,
    insert_room_media: INSERT_ROOM_MEDIA,
    select_room_media: SELECT_ROOM_MEDIA,
    delete_one_room_media: DELETE_ONE_ROOM_MEDIA,
    delete_room_media: DELETE_ROOM_MEDIA,
    select_device_created: SELECT_DEVICE_CREATED,
    upsert_device: UPSERT_DEVICE,
    select_devices: SELECT_DEVICES,
    delete_device: DELETE_DEVICE,
    insert_mute: INSERT_MUTE,
    delete_mute: DELETE_MUTE,
    select_mutes_in: SELECT_MUTES_IN,
    delete_room_mutes: DELETE_ROOM_MUTES,
}

/// Prepares one statement on `keyspace`'s table; the error names the statement (CQL text
/// holds no secrets).
pub async fn prepare_one(
    session: &Session,
    stmt: &'static Stmt,
    keyspace: &str,
) -> Result<PreparedStatement, (&'static str, PrepareError)> {
    let mut prepared = session
        .prepare(qualified_cql(stmt, keyspace))
        .await
        .map_err(|e| (stmt.cql, e))?;
    prepared.set_is_idempotent(stmt.idempotent);
    Ok(prepared)
}

/// `stmt`'s CQL with its table named with the keyspace (`FROM ks.rooms`). A node never sends
/// `USE <keyspace>`: Cassandra warns about prepared statements that lean on it (which table an
/// unqualified name means depends on the connection), and a statement that names its keyspace
/// is routed by it. The server's own tables (`system.local`) are named whole already.
pub fn qualified_cql(stmt: &Stmt, keyspace: &str) -> String {
    if !stmt.table.ours {
        return stmt.cql.to_owned();
    }
    for keyword in ["FROM ", "INTO ", "UPDATE "] {
        let named = format!("{keyword}{} ", stmt.table.name);
        if let Some(at) = stmt.cql.find(&named) {
            let name_at = at + keyword.len();
            return format!(
                "{}{keyspace}.{}",
                &stmt.cql[..name_at],
                &stmt.cql[name_at..]
            );
        }
    }
    // Every statement names its table after one of the keywords (a test checks it).
    stmt.cql.to_owned()
}

/// The `CREATE TABLE` of `table` in `keyspace`, generated from its definition.
pub fn create_table_cql(keyspace: &str, table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| format!("{name} {ty}"))
        .collect();
    let clustering: Vec<&str> = table.clustering.iter().map(|(name, _)| *name).collect();
    let mut key = format!("({})", table.partition_key.join(", "));
    for name in &clustering {
        key.push_str(", ");
        key.push_str(name);
    }
    let mut cql = format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.{} ({}, PRIMARY KEY ({key}))",
        table.name,
        columns.join(", ")
    );
    if !table.clustering.is_empty() {
        let order: Vec<String> = table
            .clustering
            .iter()
            .map(|(name, order)| {
                let dir = match order {
                    Order::Asc => "ASC",
                    Order::Desc => "DESC",
                };
                format!("{name} {dir}")
            })
            .collect();
        cql.push_str(&format!(" WITH CLUSTERING ORDER BY ({})", order.join(", ")));
    }
    cql
}

/// The `CREATE KEYSPACE` for `keyspace` with the replication map `replication` (both checked
/// by the settings; see `settings.rs`). `disable_tablets` asks a ScyllaDB that uses tablets by
/// default for vnodes, which conditional statements need on servers without
/// `LWT_WITH_TABLETS`.
pub fn create_keyspace_cql(keyspace: &str, replication: &str, disable_tablets: bool) -> String {
    let mut cql =
        format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}");
    if disable_tablets {
        cql.push_str(" AND tablets = {'enabled': false}");
    }
    cql
}

/// `DROP KEYSPACE` (used by the test harness for its throwaway keyspaces).
pub fn drop_keyspace_cql(keyspace: &str) -> String {
    format!("DROP KEYSPACE IF EXISTS {keyspace}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// CQL words a statement may use besides its table and columns.
    const KEYWORDS: &[&str] = &[
        "select", "from", "where", "and", "insert", "into", "values", "update", "set", "delete",
        "if", "not", "exists", "using", "ttl", "limit", "order", "by", "asc", "desc", "in",
        "count",
    ];

    /// Reserved CQL words that may not name a column (Cassandra's and ScyllaDB's lists).
    const RESERVED: &[&str] = &[
        "add",
        "allow",
        "alter",
        "and",
        "apply",
        "asc",
        "authorize",
        "batch",
        "begin",
        "by",
        "columnfamily",
        "create",
        "delete",
        "desc",
        "describe",
        "drop",
        "entries",
        "execute",
        "from",
        "full",
        "grant",
        "group",
        "if",
        "in",
        "index",
        "infinity",
        "insert",
        "into",
        "is",
        "keyspace",
        "limit",
        "modify",
        "nan",
        "norecursive",
        "not",
        "null",
        "of",
        "on",
        "or",
        "order",
        "primary",
        "rename",
        "replace",
        "revoke",
        "schema",
        "select",
        "set",
        "table",
        "to",
        "token",
        "truncate",
        "unlogged",
        "update",
        "use",
        "using",
        "view",
        "where",
        "with",
        "text",
        "ttl",
        "writetime",
        "timestamp",
        "key",
    ];

    /// The words of a statement, lower case: identifiers (with `ks.table` kept whole), without
    /// string literals, numbers, bind markers or punctuation. Not a parser: just enough to see
    /// which names a statement uses.
    fn words(cql: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = cql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                }
            } else if c.is_ascii_alphabetic() || c == '_' {
                let mut word = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' {
                        word.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(word.to_ascii_lowercase());
            } else if c.is_ascii_digit() {
                while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    chars.next();
                }
            }
        }
        out
    }

    fn all_statements() -> impl Iterator<Item = &'static Stmt> {
        ALL.iter().chain(MIGRATE_ONLY.iter()).copied()
    }

    #[test]
    fn every_statement_names_only_its_table_and_its_columns() {
        let declared: HashSet<&str> = TABLES
            .iter()
            .map(|t| t.name)
            .chain(["system.local", "system_schema.keyspaces"])
            .collect();
        for stmt in all_statements() {
            let table = stmt.table;
            assert!(
                declared.contains(table.name),
                "{} is not declared",
                table.name
            );
            let words = words(stmt.cql);
            let mut named_table = None;
            for (i, word) in words.iter().enumerate() {
                let after = i.checked_sub(1).map(|j| words[j].as_str());
                if matches!(after, Some("from" | "into" | "update")) {
                    named_table = Some(word.clone());
                    assert_eq!(word, table.name, "in {:?}", stmt.cql);
                } else if !KEYWORDS.contains(&word.as_str()) {
                    assert!(
                        table.columns.iter().any(|(c, _)| c == word),
                        "`{word}` is not a column of {} in {:?}",
                        table.name,
                        stmt.cql
                    );
                }
            }
            assert!(named_table.is_some(), "no table named in {:?}", stmt.cql);
        }
    }

    #[test]
    fn every_statement_names_its_whole_partition_key() {
        // So each statement reads or writes one partition, routed to its replicas (token-aware).
        for stmt in all_statements() {
            let words = words(stmt.cql);
            for key in stmt.table.partition_key {
                assert!(
                    words.iter().any(|w| w == key),
                    "{key} missing in {:?}",
                    stmt.cql
                );
            }
            if stmt.cql.starts_with("INSERT") {
                for (key, _) in stmt.table.clustering {
                    assert!(
                        words.iter().any(|w| w == key),
                        "{key} missing in {:?}",
                        stmt.cql
                    );
                }
            }
        }
    }

    #[test]
    fn conditional_statements_are_not_retried_blindly() {
        for stmt in all_statements() {
            let conditional = words(stmt.cql).iter().any(|w| w == "if");
            assert_eq!(stmt.idempotent, !conditional, "{:?}", stmt.cql);
        }
    }

    #[test]
    fn tables_are_well_formed() {
        let mut names = HashSet::new();
        for table in TABLES {
            assert!(table.ours);
            assert!(names.insert(table.name), "{} twice", table.name);
            let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            let unique: HashSet<&&str> = columns.iter().collect();
            assert_eq!(
                unique.len(),
                columns.len(),
                "a column twice in {}",
                table.name
            );
            for column in &columns {
                assert!(!RESERVED.contains(column), "{column} is a CQL keyword");
            }
            for key in table
                .partition_key
                .iter()
                .chain(table.clustering.iter().map(|(c, _)| c))
            {
                assert!(
                    columns.contains(key),
                    "{key} is not a column of {}",
                    table.name
                );
            }
            assert!(!table.partition_key.is_empty());
        }
        let stmts: HashSet<&str> = ALL.iter().map(|s| s.cql).collect();
        assert_eq!(stmts.len(), ALL.len(), "a statement is listed twice");
    }

    #[test]
    fn create_table_is_generated_from_the_definition() {
        assert_eq!(
            create_table_cql("ks", &MESSAGE_BUCKETS),
            "CREATE TABLE IF NOT EXISTS ks.message_buckets (group_id text, room_id text, \
             bucket bigint, PRIMARY KEY ((group_id, room_id), bucket)) \
             WITH CLUSTERING ORDER BY (bucket DESC)"
        );
        assert_eq!(
            create_table_cql("ks", &SCHEMA_VERSION_TABLE),
            "CREATE TABLE IF NOT EXISTS ks.schema_version (component text, version int, \
             applied_at bigint, PRIMARY KEY ((component)))"
        );
        let messages = create_table_cql("ks", &MESSAGES);
        assert!(messages.contains("PRIMARY KEY ((group_id, room_id, bucket), id)"));
        assert!(messages.ends_with("WITH CLUSTERING ORDER BY (id DESC)"));
        let idem = create_table_cql("ks", &IDEMPOTENCY);
        assert!(idem.ends_with("WITH CLUSTERING ORDER BY (user_id ASC, cmid ASC)"));
        // Every generated CREATE TABLE names only what its definition declares.
        for table in TABLES {
            let cql = create_table_cql("ks", table);
            for word in words(&cql) {
                let known = format!("ks.{}", table.name) == word
                    || table
                        .columns
                        .iter()
                        .any(|(c, ty)| *c == word || *ty == word)
                    || [
                        "create",
                        "table",
                        "if",
                        "not",
                        "exists",
                        "primary",
                        "key",
                        "with",
                        "clustering",
                        "order",
                        "by",
                        "asc",
                        "desc",
                    ]
                    .contains(&word.as_str());
                assert!(known, "{word} in {cql}");
            }
        }
    }

    #[test]
    fn statements_name_their_keyspace() {
        for stmt in all_statements() {
            let cql = qualified_cql(stmt, "chat_ks");
            if !stmt.table.ours {
                assert_eq!(cql, stmt.cql);
                continue;
            }
            let named = format!("chat_ks.{}", stmt.table.name);
            assert_eq!(cql.matches(&named).count(), 1, "{cql}");
            // Only the table's name changed.
            assert_eq!(cql.replacen("chat_ks.", "", 1), stmt.cql);
            let table_word = words(&cql)
                .windows(2)
                .find(|w| matches!(w[0].as_str(), "from" | "into" | "update"))
                .map(|w| w[1].clone());
            assert_eq!(table_word.as_deref(), Some(named.as_str()), "{cql}");
        }
    }

    #[test]
    fn keys_live_for_the_idempotency_window() {
        assert_eq!(
            IDEMPOTENCY_TTL_SECS * 1000,
            crate::store::IDEMPOTENCY_WINDOW_MS
        );
        for stmt in [&CLAIM_CMID, &TAKE_OVER_CMID] {
            assert!(
                stmt.cql
                    .contains(&format!("USING TTL {IDEMPOTENCY_TTL_SECS}"))
            );
        }
    }

    #[test]
    fn keyspace_statements() {
        let r = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}";
        assert_eq!(
            create_keyspace_cql("chat", r, false),
            format!("CREATE KEYSPACE IF NOT EXISTS chat WITH replication = {r}")
        );
        assert!(create_keyspace_cql("chat", r, true).ends_with("AND tablets = {'enabled': false}"));
        assert_eq!(drop_keyspace_cql("t1"), "DROP KEYSPACE IF EXISTS t1");
    }

    #[test]
    fn the_tokenizer_sees_names_only() {
        assert_eq!(
            words("SELECT a, b_2 FROM system.local WHERE key = 'lo cal' AND x < ? LIMIT 10"),
            vec![
                "select",
                "a",
                "b_2",
                "from",
                "system.local",
                "where",
                "key",
                "and",
                "x",
                "limit"
            ]
        );
    }
}
