//! Time buckets: the pure arithmetic that splits a room's messages into bounded partitions.
//!
//! A message id is a snowflake: 41 bits of milliseconds since 2024-01-01 ([`SNOWFLAKE_EPOCH_MS`]),
//! then 10 bits of node and 12 bits of sequence. A bucket is a span of [`BUCKET_SPAN_MS`] =
//! 2^22 ms (69 min 54.3 s) of that clock, so the bucket of an id is simply `id >> 44`
//! (22 bits of node and sequence, then 22 bits of milliseconds). Every id of one bucket lies in
//! `first_id(b)..=last_id(b)`, and buckets are ordered like the ids they hold.
//!
//! Why 2^22 ms: a busy room sending 20 messages a second without pause (72,000 an hour, far
//! beyond a lively group chat) fills one bucket with 4,194 s × 20 = 83,886 rows; at about 500
//! bytes a row on disk (text, sender, ids, cell overhead) that is about 42 MB, well under
//! ScyllaDB's 100 MB large-partition mark. A partition reaches 100 MB only at about 48 such
//! messages a second kept up for the whole 70 minutes. Smaller buckets would cost quiet rooms
//! more partition reads per page of history; the bucket index (`message_buckets`, see
//! `walk.rs`) keeps those reads to buckets that hold messages.

use crate::ids::{MessageId, SNOWFLAKE_EPOCH_MS};

/// A time bucket number: `0` is the first 2^22 ms after the snowflake epoch.
pub type Bucket = i64;

/// How many low bits of an id lie below the bucket number: 22 bits of node and sequence, then
/// 22 bits of milliseconds.
pub const BUCKET_SHIFT: u32 = 44;

/// The span of one bucket in milliseconds: 2^22 = 4,194,304 ms, about 70 minutes.
pub const BUCKET_SPAN_MS: i64 = 1 << 22;

/// The bucket that holds the message `id`.
pub fn bucket_of(id: MessageId) -> Bucket {
    // A u64 shifted right by 44 has at most 20 bits: it always fits.
    (id >> BUCKET_SHIFT) as Bucket
}

/// The bucket of a stored (bigint) id; negative ids do not occur and fall in bucket 0.
pub fn bucket_of_i64(id: i64) -> Bucket {
    bucket_of(u64::try_from(id).unwrap_or(0))
}

/// The smallest id that falls in `bucket`.
pub fn first_id(bucket: Bucket) -> MessageId {
    u64::try_from(bucket).unwrap_or(0) << BUCKET_SHIFT
}

/// The largest id that falls in `bucket`.
pub fn last_id(bucket: Bucket) -> MessageId {
    first_id(bucket) | ((1u64 << BUCKET_SHIFT) - 1)
}

/// The Unix time (ms) at which `bucket` begins.
pub fn bucket_start_ms(bucket: Bucket) -> i64 {
    SNOWFLAKE_EPOCH_MS + bucket * BUCKET_SPAN_MS
}

/// The bucket covering the Unix time `ms` (times before the epoch fall in bucket 0).
pub fn bucket_at_ms(ms: i64) -> Bucket {
    (ms - SNOWFLAKE_EPOCH_MS).max(0) / BUCKET_SPAN_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Snowflake;

    #[test]
    fn the_bucket_is_the_time_divided_by_the_span() {
        let generator = Snowflake::new(1023);
        for _ in 0..10_000 {
            let id = generator.next_id();
            let ms = Snowflake::timestamp_ms(id);
            assert_eq!(bucket_of(id), bucket_at_ms(ms));
            assert_eq!(bucket_of(id), (ms - SNOWFLAKE_EPOCH_MS) / BUCKET_SPAN_MS);
        }
    }

    #[test]
    fn span_is_about_seventy_minutes() {
        assert_eq!(BUCKET_SPAN_MS, 4_194_304);
        assert_eq!(1u64 << (BUCKET_SHIFT - 22), BUCKET_SPAN_MS as u64);
        let minutes = BUCKET_SPAN_MS as f64 / 60_000.0;
        assert!((69.0..71.0).contains(&minutes), "{minutes}");
    }

    #[test]
    fn a_busy_room_stays_well_under_100_mb_per_partition() {
        let rows = (BUCKET_SPAN_MS / 1000) * 20;
        let bytes = rows * 500;
        assert!(bytes < 50 * 1024 * 1024, "{bytes} bytes");
    }

    #[test]
    fn ids_and_buckets_line_up_at_the_edges() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(last_id(0)), 0);
        assert_eq!(bucket_of(last_id(0) + 1), 1);
        for b in [0, 1, 2, 1000, 123_456, (1 << 19) - 1] {
            assert_eq!(bucket_of(first_id(b)), b);
            assert_eq!(bucket_of(last_id(b)), b);
            assert_eq!(last_id(b) + 1, first_id(b + 1));
            assert_eq!(bucket_start_ms(b), SNOWFLAKE_EPOCH_MS + b * BUCKET_SPAN_MS);
            assert_eq!(bucket_at_ms(bucket_start_ms(b)), b);
            assert_eq!(bucket_at_ms(bucket_start_ms(b + 1) - 1), b);
        }
        // The largest snowflake (41 bits of ms) still has a bucket that fits a bigint.
        assert_eq!(bucket_of(u64::MAX >> 1), (1 << 19) - 1);
        assert_eq!(bucket_of(u64::MAX), (1 << 20) - 1);
        assert_eq!(bucket_of_i64(-5), 0);
        assert_eq!(bucket_of_i64(i64::MAX), (1 << 19) - 1);
        assert_eq!(bucket_at_ms(0), 0);
    }

    #[test]
    fn buckets_are_ordered_like_ids() {
        let ids = [1u64, 99, 1 << 44, (1 << 44) + 5, 3 << 44, u64::MAX >> 1];
        for pair in ids.windows(2) {
            assert!(bucket_of(pair[0]) <= bucket_of(pair[1]));
        }
    }
}
