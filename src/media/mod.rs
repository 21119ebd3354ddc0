//! Media storage (docs/protocol.md §6): where uploaded files live and how they get there.
//!
//! [`MediaStore`] wraps an `Arc<dyn ObjectStore>` chosen by configuration: the local file
//! system under `<data_dir>/media` (the default), any S3-compatible service, or memory (for
//! tests and benches). It streams uploads into the object store (one `put` for small bodies,
//! a multipart upload in [`PART_SIZE`] parts for large ones, so a body is never held whole in
//! memory), checks the declared type against the first bytes and the size against the kind's
//! limit while streaming, and cleans up what a refused upload left. Downloads are streamed from
//! the local backend or handed out as short-lived signed URLs by the S3 backend. Thumbnails of
//! images are made off the request path ([`MediaStore::spawn_thumbnail`]).
//!
//! Object keys are `{group}/{room}/{id}` and `{group}/{room}/{id}.thumb`: the group and room
//! are validated ids (and escaped again as path segments), the id is 128 random bits chosen by
//! the node. Nothing the client sends becomes part of a key otherwise.
//!
//! The media metadata (uploader, room, type, size, name) lives in the [`Store`]; this module
//! only reads and writes objects. Invariant: `media/` never imports actix.

pub mod thumbnail;
pub mod types;

use std::fmt::Display;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};
use tokio::sync::Semaphore;

use crate::config::MediaSettings;
use crate::ids::{GroupId, RoomId};
use crate::protocol::MessageKind;
use crate::store::{MediaRecord, SharedStore};
pub use types::{RangeRequest, kind_of};

/// The size of the parts of a multipart upload (S3 wants at least 5 MiB for all but the last,
/// and some S3-compatible services want them all equal). An upload holds at most two parts in
/// memory: one being sent, one being filled.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Thumbnails made at once (each decodes a whole image in memory).
const THUMBNAIL_JOBS: usize = 1;

pub type SharedMedia = Arc<MediaStore>;

/// Why a media operation failed. Storage details go to the log, never to a client.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the file is larger than the {limit} bytes allowed for this kind")]
    TooLarge { limit: u64 },
    #[error("the file's bytes are {sniffed}, not the declared type")]
    TypeMismatch { sniffed: &'static str },
    #[error("the body is empty")]
    Empty,
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("the media store failed: {0}")]
    Storage(#[from] object_store::Error),
    #[error("media configuration: {0}")]
    Config(String),
}

/// Which backend holds the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
    Memory,
}

/// What an upload is: where it goes, what it claims to be, how large it may get.
#[derive(Debug, Clone)]
pub struct UploadTarget {
    pub key: Path,
    pub content_type: String,
    pub name: Option<String>,
    pub limit: u64,
}

/// The media store of a node.
pub struct MediaStore {
    objects: Arc<dyn ObjectStore>,
    /// The S3 backend, for signed URLs.
    signer: Option<Arc<AmazonS3>>,
    backend: Backend,
    settings: MediaSettings,
    thumbnails: Arc<Semaphore>,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("backend", &self.backend)
            .field("objects", &self.objects.to_string())
            .finish()
    }
}

/// Credentials from the standard AWS variables; none means the SDK's other sources (instance
/// or container roles).
fn s3_builder(settings: &MediaSettings) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new()
        .with_region(settings.s3_region.trim())
        .with_bucket_name(settings.s3_bucket.as_deref().unwrap_or_default().trim())
        .with_virtual_hosted_style_request(!settings.s3_path_style);
    if let Some(endpoint) = &settings.s3_endpoint {
        builder = builder
            .with_endpoint(endpoint.trim())
            .with_allow_http(endpoint.starts_with("http://"));
    }
    for (var, set) in [
        (
            "AWS_ACCESS_KEY_ID",
            AmazonS3Builder::with_access_key_id as fn(AmazonS3Builder, String) -> AmazonS3Builder,
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            AmazonS3Builder::with_secret_access_key,
        ),
        ("AWS_SESSION_TOKEN", AmazonS3Builder::with_token),
    ] {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            builder = set(builder, value);
        }
    }
    builder
}

impl MediaStore {
    /// Opens the configured backend (`local` under `data_dir/media`, or `s3`).
    pub fn open(settings: &MediaSettings, data_dir: &FsPath) -> Result<Self, MediaError> {
        match settings.backend.as_str() {
            "s3" => {
                let s3 = Arc::new(s3_builder(settings).build()?);
                Ok(Self::with(s3.clone(), Some(s3), Backend::S3, settings))
            }
            "local" => {
                let root = data_dir.join("media");
                std::fs::create_dir_all(&root).map_err(|e| {
                    MediaError::Config(format!("cannot create {}: {e}", root.display()))
                })?;
                let local = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
                Ok(Self::with(Arc::new(local), None, Backend::Local, settings))
            }
            other => Err(MediaError::Config(format!(
                "unknown media backend `{other}`"
            ))),
        }
    }

    /// A store in memory (tests and benches).
    pub fn in_memory(settings: &MediaSettings) -> Self {
        Self::with(Arc::new(InMemory::new()), None, Backend::Memory, settings)
    }

    fn with(
        objects: Arc<dyn ObjectStore>,
        signer: Option<Arc<AmazonS3>>,
        backend: Backend,
        settings: &MediaSettings,
    ) -> Self {
        Self {
            objects,
            signer,
            backend,
            settings: settings.clone(),
            thumbnails: Arc::new(Semaphore::new(THUMBNAIL_JOBS)),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The objects themselves (tests look inside).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// The size limit of a kind, from configuration.
    pub fn limit(&self, kind: MessageKind) -> u64 {
        match kind {
            MessageKind::Image => self.settings.image_max_bytes,
            MessageKind::Video => self.settings.video_max_bytes,
            MessageKind::Text | MessageKind::File => self.settings.file_max_bytes,
        }
    }

    /// `{group}/{room}`: the prefix of a room's objects.
    pub fn room_prefix(group: &GroupId, room: &RoomId) -> Path {
        Path::from_iter([
            PathPart::from(group.as_str()),
            PathPart::from(room.as_str()),
        ])
    }

    /// `{group}/{room}/{id}`.
    pub fn object_key(group: &GroupId, room: &RoomId, id: &str) -> Path {
        Self::room_prefix(group, room).join(PathPart::from(id))
    }

    /// `{group}/{room}/{id}.thumb`.
    pub fn thumbnail_key(group: &GroupId, room: &RoomId, id: &str) -> Path {
        Self::room_prefix(group, room).join(PathPart::from(format!("{id}.thumb")))
    }

    /// Attributes stored with an object where the backend keeps them (S3): what a download
    /// through a signed URL is served as.
    fn attributes(&self, content_type: &str, name: Option<&str>) -> Attributes {
        let mut attributes = Attributes::new();
        if self.backend == Backend::S3 {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            attributes.insert(
                Attribute::ContentDisposition,
                types::content_disposition(types::inline(content_type), name).into(),
            );
        }
        attributes
    }

    /// Streams `body` into the object at `target.key` and returns its size.
    ///
    /// The first [`types::SNIFF_BYTES`] are checked against the declared type before anything
    /// is written. A body that fits in one part is written with one `put`; a larger one goes
    /// up as a multipart upload, one part in flight while the next is read. A body over the
    /// limit, a mismatched type, a broken body or a failed write leaves nothing behind (the
    /// multipart upload is aborted).
    pub async fn upload<S, E>(&self, target: &UploadTarget, body: S) -> Result<u64, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut body = body;
        let mut buffer = PartBuffer::default();
        let mut total: u64 = 0;
        let mut ended = false;
        let mut read =
            async |buffer: &mut PartBuffer, total: &mut u64| -> Result<bool, MediaError> {
                match body.next().await {
                    None => Ok(false),
                    Some(Err(e)) => Err(MediaError::Body(e.to_string())),
                    Some(Ok(chunk)) => {
                        *total += chunk.len() as u64;
                        if *total > target.limit {
                            return Err(MediaError::TooLarge {
                                limit: target.limit,
                            });
                        }
                        buffer.push(chunk);
                        Ok(true)
                    }
                }
            };
        // The head: sniffed before anything is stored.
        while buffer.len < types::SNIFF_BYTES {
            if !read(&mut buffer, &mut total).await? {
                ended = true;
                break;
            }
        }
        if total == 0 {
            return Err(MediaError::Empty);
        }
        types::check_sniffed(&target.content_type, &buffer.head(types::SNIFF_BYTES))
            .map_err(|sniffed| MediaError::TypeMismatch { sniffed })?;
        // Small bodies: one put.
        while !ended && buffer.len < PART_SIZE {
            if !read(&mut buffer, &mut total).await? {
                ended = true;
            }
        }
        let attributes = self.attributes(&target.content_type, target.name.as_deref());
        if ended && buffer.len <= PART_SIZE {
            let opts = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            self.objects
                .put_opts(&target.key, buffer.take_all(), opts)
                .await?;
            return Ok(total);
        }
        // Large bodies: multipart.
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let mut upload = self.objects.put_multipart_opts(&target.key, opts).await?;
        let mut in_flight: Option<tokio::task::JoinHandle<object_store::Result<()>>> = None;
        let result: Result<(), MediaError> = async {
            loop {
                while buffer.len >= PART_SIZE {
                    let part = buffer.take(PART_SIZE);
                    if let Some(previous) = in_flight.take() {
                        join_part(previous).await?;
                    }
                    in_flight = Some(tokio::spawn(upload.put_part(part)));
                }
                if ended {
                    break;
                }
                if !read(&mut buffer, &mut total).await? {
                    ended = true;
                }
            }
            if let Some(previous) = in_flight.take() {
                join_part(previous).await?;
            }
            if buffer.len > 0 {
                upload.put_part(buffer.take_all()).await?;
            }
            upload.complete().await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(total),
            Err(e) => {
                if let Some(previous) = in_flight.take() {
                    let _ = previous.await;
                }
                abort(upload.as_mut(), &target.key).await;
                Err(e)
            }
        }
    }

    /// The bytes `range` (or all) of an object, as a stream.
    pub async fn read(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, MediaError>>, MediaError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self.objects.get_opts(key, options).await?;
        Ok(result.into_stream().map_err(MediaError::from).boxed())
    }

    /// A URL that serves the object for [`MediaSettings::signed_url_secs`], with the type and
    /// disposition it must be served as; `None` for backends that serve through the node.
    pub async fn signed_url(
        &self,
        key: &Path,
        content_type: &str,
        disposition: &str,
    ) -> Result<Option<String>, MediaError> {
        let Some(s3) = &self.signer else {
            return Ok(None);
        };
        let expires = Duration::from_secs(self.settings.signed_url_secs);
        let options = SignedUrlOptions::new().with_query([
            ("response-content-type", content_type),
            ("response-content-disposition", disposition),
        ]);
        let url = s3
            .signed_url_opts(object_store::signer::Method::GET, key, expires, &options)
            .await?;
        Ok(Some(url.to_string()))
    }

    /// Deletes a media's object and thumbnail (a missing one is no error). A deleted message's
    /// media loses its record before the delete is answered (downloads ask the record first,
    /// so it is unreachable from then on); its objects go afterwards, through this.
    pub async fn delete_objects(&self, group: &GroupId, room: &RoomId, id: &str) {
        for key in [
            Self::object_key(group, room, id),
            Self::thumbnail_key(group, room, id),
        ] {
            delete_quietly(self.objects.as_ref(), &key).await;
        }
    }

    /// Deletes every object of a room (its records go with the room in the store).
    pub async fn remove_room(&self, group: &GroupId, room: &RoomId) {
        let prefix = Self::room_prefix(group, room);
        let locations = self
            .objects
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.objects.delete_stream(locations);
        let mut count = 0u64;
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => count += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(%group, %room, error = %e, "a room's media object was not deleted");
                }
            }
        }
        tracing::debug!(%group, %room, count, "room media deleted");
    }

    /// Makes the thumbnail of an uploaded image in the background: reads the object, shrinks
    /// it on a blocking thread, stores the JPEG beside it and marks the record. A media
    /// deleted meanwhile gets no thumbnail (the mark fails and the object is removed again).
    pub fn spawn_thumbnail(self: &Arc<Self>, store: SharedStore, media: MediaRecord) {
        if !types::thumbnailable(&media.content_type) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = this.thumbnails.clone().acquire_owned().await else {
                return;
            };
            if let Err(e) = this.make_thumbnail(&store, &media).await {
                tracing::info!(media = %media.id, error = %e, "no thumbnail");
            }
        });
    }

    async fn make_thumbnail(
        &self,
        store: &SharedStore,
        media: &MediaRecord,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let key = Self::object_key(&media.group, &media.room, &media.id);
        let bytes = self.objects.get(&key).await?.bytes().await?;
        let px = self.settings.thumbnail_px;
        let jpeg =
            tokio::task::spawn_blocking(move || thumbnail::make_thumbnail(&bytes, px)).await??;
        let thumb = Self::thumbnail_key(&media.group, &media.room, &media.id);
        let opts = PutOptions {
            attributes: self.attributes("image/jpeg", None),
            ..PutOptions::default()
        };
        self.objects
            .put_opts(&thumb, PutPayload::from(jpeg), opts)
            .await?;
        if !store.set_media_thumbnail(&media.id).await? {
            delete_quietly(self.objects.as_ref(), &thumb).await;
        }
        Ok(())
    }
}

async fn join_part(
    handle: tokio::task::JoinHandle<object_store::Result<()>>,
) -> Result<(), MediaError> {
    match handle.await {
        Ok(result) => result.map_err(MediaError::from),
        Err(e) => Err(MediaError::Body(format!("a part upload failed: {e}"))),
    }
}

async fn abort(upload: &mut dyn MultipartUpload, key: &Path) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(%key, error = %e, "aborting a multipart upload failed");
    }
}

async fn delete_quietly(objects: &dyn ObjectStore, key: &Path) {
    match objects.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(%key, error = %e, "a media object was not deleted"),
    }
}

/// Chunks of the body waiting to be written, without copying them.
#[derive(Default)]
struct PartBuffer {
    chunks: Vec<Bytes>,
    len: usize,
}

impl PartBuffer {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// The first `n` bytes, copied (only the sniffed head is).
    fn head(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n.min(self.len));
        for chunk in &self.chunks {
            let want = n - out.len();
            if want == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..want.min(chunk.len())]);
        }
        out
    }

    /// Exactly `n` bytes from the front (splitting a chunk without copying it).
    fn take(&mut self, n: usize) -> PutPayload {
        let mut taken = Vec::new();
        let mut need = n;
        let mut rest = Vec::with_capacity(self.chunks.len());
        for mut chunk in self.chunks.drain(..) {
            if need == 0 {
                rest.push(chunk);
            } else if chunk.len() <= need {
                need -= chunk.len();
                taken.push(chunk);
            } else {
                taken.push(chunk.split_to(need));
                need = 0;
                rest.push(chunk);
            }
        }
        self.chunks = rest;
        self.len -= n - need;
        PutPayload::from_iter(taken)
    }

    fn take_all(&mut self) -> PutPayload {
        self.len = 0;
        PutPayload::from_iter(std::mem::take(&mut self.chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (GroupId, RoomId) {
        (
            GroupId::parse("..").unwrap_or_else(|_| unreachable!()),
            RoomId::parse("r.1").unwrap_or_else(|_| unreachable!()),
        )
    }

    #[test]
    fn keys_are_built_from_ids_only() {
        let (g, r) = ids();
        let key = MediaStore::object_key(&g, &r, "0123");
        assert_eq!(key.as_ref(), "%2E%2E/r.1/0123");
        assert_eq!(
            MediaStore::thumbnail_key(&g, &r, "0123").as_ref(),
            "%2E%2E/r.1/0123.thumb"
        );
        assert!(key.prefix_matches(&MediaStore::room_prefix(&g, &r)));
    }

    #[test]
    fn the_part_buffer_splits_without_losing_bytes() {
        let mut buffer = PartBuffer::default();
        for i in 0..10u8 {
            buffer.push(Bytes::from(vec![i; 7]));
        }
        assert_eq!(buffer.head(9), [0, 0, 0, 0, 0, 0, 0, 1, 1]);
        let part = buffer.take(20);
        assert_eq!(part.content_length(), 20);
        assert_eq!(buffer.len, 50);
        let rest = buffer.take_all();
        assert_eq!(rest.content_length(), 50);
        let all: Vec<u8> = part
            .iter()
            .chain(rest.iter())
            .flat_map(|b| b.to_vec())
            .collect();
        let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 7]).collect();
        assert_eq!(all, expected);
    }

    fn body(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
    }

    const PNG: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
    ];

    #[tokio::test]
    async fn uploads_small_and_multipart_and_refuses_cleanly() {
        let settings = MediaSettings::default();
        let media = MediaStore::in_memory(&settings);
        let (g, r) = ids();
        let target = |id: &str, ty: &str, limit: u64| UploadTarget {
            key: MediaStore::object_key(&g, &r, id),
            content_type: ty.into(),
            name: None,
            limit,
        };
        // Small.
        let size = media
            .upload(
                &target("a", "image/png", 1 << 20),
                body(vec![PNG.to_vec(), vec![1; 100]]),
            )
            .await
            .expect("small upload");
        assert_eq!(size, PNG.len() as u64 + 100);
        // Multipart: two and a half parts, in odd-sized chunks.
        let total = PART_SIZE * 2 + PART_SIZE / 2;
        let chunks: Vec<Vec<u8>> = (0..total / 100_003 + 1)
            .map(|i| {
                let len = 100_003.min(total - i * 100_003);
                (0..len).map(|j| ((i * 100_003 + j) % 251) as u8).collect()
            })
            .filter(|c: &Vec<u8>| !c.is_empty())
            .collect();
        let size = media
            .upload(
                &target("b", "application/octet-stream", u64::MAX),
                body(chunks),
            )
            .await
            .expect("multipart upload");
        assert_eq!(size, total as u64);
        let stored = media
            .objects()
            .get(&MediaStore::object_key(&g, &r, "b"))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(stored.len(), total);
        assert!(
            stored
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8)
        );
        // Refusals leave nothing.
        let err = media
            .upload(
                &target("c", "image/jpeg", 1 << 20),
                body(vec![PNG.to_vec()]),
            )
            .await
            .expect_err("mismatch");
        assert!(matches!(
            err,
            MediaError::TypeMismatch {
                sniffed: "image/png"
            }
        ));
        let big = vec![vec![0u8; PART_SIZE]; 3];
        let err = media
            .upload(&target("d", "video/mp4", (PART_SIZE * 2) as u64), body(big))
            .await
            .expect_err("too large");
        assert!(matches!(err, MediaError::TooLarge { .. }));
        let err = media
            .upload(&target("e", "text/plain", 10), body(vec![]))
            .await
            .expect_err("empty");
        assert!(matches!(err, MediaError::Empty));
        let listed: Vec<_> = media
            .objects()
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .expect("list");
        let mut names: Vec<String> = listed.iter().map(|m| m.location.to_string()).collect();
        names.sort();
        assert_eq!(names, ["%2E%2E/r.1/a", "%2E%2E/r.1/b"]);
        media.remove_room(&g, &r).await;
        let left: Vec<_> = media
            .objects()
            .list(None)
            .try_collect()
            .await
            .expect("list");
        assert!(left.is_empty(), "{left:?}");
    }
}
