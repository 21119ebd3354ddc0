//! Media (docs/protocol.md §6 and the `media` of §3.5): uploads, downloads, thumbnails, the checks
//! on both, and deletion, each on the local backend and on a real S3-compatible server.
//!
//! The S3 runs use the `moto` server that `scripts/test.sh` starts and names in
//! `CHATNODE_TEST_S3` (`http://127.0.0.1:PORT`); each test makes its own bucket. Without the
//! variable the S3 tests print that they were skipped and pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Rest, TestNode, token};

const G: &str = "media";

/// Where a node keeps its objects, and how a test looks inside.
enum Backend {
    Local,
    S3 { endpoint: String, bucket: String },
}

static BUCKETS: AtomicU32 = AtomicU32::new(0);

impl Backend {
    /// The S3 backend on the test server, with a fresh bucket; `None` (and a line saying the
    /// test was skipped) without one.
    async fn s3(test: &str) -> Option<Self> {
        let endpoint = std::env::var("CHATNODE_TEST_S3").unwrap_or_default();
        let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
        if endpoint.is_empty() {
            println!("skipped: {test} on S3: CHATNODE_TEST_S3 is not set");
            return None;
        }
        let bucket = format!(
            "chatnode-{}-{}-{}",
            std::process::id(),
            chatnode::ids::now_ms(),
            BUCKETS.fetch_add(1, Ordering::Relaxed)
        );
        let resp = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .expect("create the bucket");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
        Some(Self::S3 { endpoint, bucket })
    }

    fn env(&self) -> Vec<(String, String)> {
        match self {
            Self::Local => Vec::new(),
            Self::S3 { endpoint, bucket } => vec![
                ("CHATNODE_MEDIA_BACKEND".into(), "s3".into()),
                ("CHATNODE_MEDIA_S3_BUCKET".into(), bucket.clone()),
                ("CHATNODE_MEDIA_S3_ENDPOINT".into(), endpoint.clone()),
                ("CHATNODE_MEDIA_S3_REGION".into(), "us-east-1".into()),
                ("CHATNODE_MEDIA_S3_PATH_STYLE".into(), "true".into()),
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ],
        }
    }

    fn is_s3(&self) -> bool {
        matches!(self, Self::S3 { .. })
    }

    /// Starts a node on this backend with `extra` settings.
    fn node(&self, extra: &[(&str, &str)]) -> TestNode {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestNode::spawn(&env)
    }

    /// Every object the backend holds (and, on S3, every unfinished multipart upload).
    async fn objects(&self, node: &TestNode) -> Vec<String> {
        match self {
            Self::Local => {
                let mut out = Vec::new();
                walk(&node.data_dir.join("media"), &mut out);
                out
            }
            Self::S3 { endpoint, bucket } => {
                let client = reqwest::Client::new();
                let mut out = Vec::new();
                for (query, tag) in [("list-type=2", "Key"), ("uploads", "UploadId")] {
                    let xml = client
                        .get(format!("{endpoint}/{bucket}?{query}"))
                        .send()
                        .await
                        .expect("list")
                        .text()
                        .await
                        .expect("list body");
                    let open = format!("<{tag}>");
                    for piece in xml.split(&open).skip(1) {
                        let name = piece.split('<').next().unwrap_or_default();
                        out.push(format!("{tag}: {name}"));
                    }
                }
                out
            }
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path.display().to_string());
        }
    }
}

/// A real PNG of `w` x `h` pixels.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 200]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

/// An MP4 header (an `ftyp` box) followed by `len` bytes of noise.
fn mp4(len: usize) -> Vec<u8> {
    let mut out = vec![
        0, 0, 0, 0x18, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0, 0, 2, 0, b'i', b's',
        b'o', b'm', b'i', b's', b'o', b'2',
    ];
    out.extend((0..len).map(|i| (i * 7 % 251) as u8));
    out
}

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}

async fn upload(
    rest: &Rest,
    room: &str,
    body: reqwest::Body,
    content_type: &str,
    name: Option<&str>,
) -> (u16, Value) {
    let mut url = format!("{}/v1/groups/{G}/rooms/{room}/media", rest.base);
    if let Some(name) = name {
        url.push_str("?name=");
        url.push_str(&urlencode(name));
    }
    // A fresh connection per upload: a pooled one may be closed by the node's keep-alive timer
    // just as a body starts on it, which a client cannot retry.
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(&rest.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A download: status, headers, body. On S3 the 307 is checked and its signed URL fetched
/// without the node's token.
struct Download {
    status: u16,
    headers: HashMap<String, String>,
    body: Bytes,
    redirected: bool,
}

async fn download(node: &TestNode, user: &str, path: &str, range: Option<&str>) -> Download {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut req = client.get(node.http(path)).bearer_auth(token(user));
    if let Some(range) = range {
        req = req.header("range", range);
    }
    let resp = req.send().await.expect("download");
    let mut redirected = false;
    let resp = if resp.status().as_u16() == 307 {
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let location = header(&resp, "location");
        redirected = true;
        client.get(location).send().await.expect("signed url")
    } else {
        resp
    };
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = resp.bytes().await.expect("body");
    Download {
        status,
        headers,
        body,
        redirected,
    }
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The node's peak and current resident memory, in KiB (`VmHWM`, `VmRSS`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Polls `f` until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios, each run on both backends.

async fn each_kind_round_trips(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &["bob"]).await;
    let mut bob = node.connect("bob").await;
    bob.enter(G, "r").await;
    let mut ws = node.connect("alice").await;
    let image = png(640, 480);
    let video = mp4(300_000);
    let file = pdf();
    let cases = [
        ("image", "image/png", image.clone(), Some("cat picture.png")),
        ("video", "video/mp4", video.clone(), None),
        (
            "file",
            "application/pdf",
            file.clone(),
            Some("보고서 \"final\".pdf"),
        ),
    ];
    let mut ids = HashMap::new();
    for (i, (kind, ty, bytes, name)) in cases.iter().enumerate() {
        let (status, media) = upload(&alice, "r", bytes.clone().into(), ty, *name).await;
        assert_eq!(status, 201, "{kind}: {media}");
        let id = media["id"].as_str().expect("id").to_owned();
        assert_eq!(id.len(), 32);
        assert_eq!(media["type"], *ty);
        assert_eq!(media["size"], bytes.len());
        assert_eq!(media["name"].as_str(), *name);
        // Sent as a message: the `sent` reply, and the `msg` carries the media object.
        let reply = ws
            .call(json!({"t": "send", "group": G, "room": "r", "kind": kind, "media": id, "cmid": format!("c{i}")}))
            .await;
        assert_eq!(reply["t"], "sent", "{kind}: {reply}");
        let msg = bob.recv_type("msg").await;
        assert_eq!(msg["kind"], *kind);
        assert_eq!(msg["media"]["id"], id.as_str());
        assert_eq!(msg["media"]["type"], *ty);
        assert_eq!(msg["media"]["size"], bytes.len());
        assert_eq!(msg["media"]["name"].as_str(), *name);
        // Downloaded by another member.
        let got = download(&node, "bob", &format!("/v1/media/{id}"), None).await;
        assert_eq!(got.status, 200, "{kind}");
        assert_eq!(got.redirected, backend.is_s3());
        assert_eq!(&got.body[..], &bytes[..], "{kind} bytes");
        assert_eq!(
            got.headers.get("content-type").map(String::as_str),
            Some(*ty)
        );
        if !backend.is_s3() {
            assert_eq!(got.headers["x-content-type-options"], "nosniff");
            assert_eq!(got.headers["content-length"], bytes.len().to_string());
        }
        let disposition = got
            .headers
            .get("content-disposition")
            .cloned()
            .unwrap_or_default();
        if *kind == "file" {
            assert!(disposition.starts_with("attachment"), "{disposition}");
            assert!(disposition.contains("filename*=UTF-8''"), "{disposition}");
        } else {
            assert!(!disposition.starts_with("attachment"), "{disposition}");
        }
        ids.insert(*kind, id);
    }
    // History carries the media too.
    let (status, page) = alice.get(&format!("/v1/groups/{G}/rooms/r/messages")).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = page["msgs"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["media"]["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["image/png", "video/mp4", "application/pdf"]);
    // The image gets a thumbnail, shortly; the others never.
    let image_id = &ids["image"];
    let thumb = eventually(Duration::from_secs(20), || async {
        let got = download(
            &node,
            "bob",
            &format!("/v1/media/{image_id}/thumbnail"),
            None,
        )
        .await;
        (got.status == 200).then_some(got)
    })
    .await
    .expect("a thumbnail within 20 s");
    assert_eq!(&thumb.body[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    let decoded = image::load_from_memory(&thumb.body).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (320, 240));
    let none = download(
        &node,
        "bob",
        &format!("/v1/media/{}/thumbnail", ids["video"]),
        None,
    )
    .await;
    assert_eq!(none.status, 404);
    // A message sent now says the thumbnail exists.
    let reply = ws
        .call(json!({"t": "send", "group": G, "room": "r", "kind": "image", "media": image_id, "cmid": "again", "text": "once more"}))
        .await;
    assert_eq!(reply["t"], "sent", "{reply}");
    let msg = bob.recv_type("msg").await;
    assert_eq!(msg["media"]["thumbnail"], true, "{msg}");
    assert_eq!(msg["text"], "once more");
}

async fn large_upload_keeps_memory_flat(backend: Backend) {
    const SIZE: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    // A streamed body (chunked, no Content-Length), made before the node is asked anything:
    // making it takes seconds in a debug build, and a pooled connection left idle that long
    // may be closed by the node's keep-alive timer just as the upload starts on it.
    let head = mp4(0);
    let mut hasher = Sha256::new();
    let chunks: Vec<Bytes> = (0..SIZE / CHUNK)
        .map(|i| {
            let mut chunk: Vec<u8> = (0..CHUNK).map(|j| ((i * CHUNK + j) % 253) as u8).collect();
            if i == 0 {
                chunk[..head.len()].copy_from_slice(&head);
            }
            hasher.update(&chunk);
            Bytes::from(chunk)
        })
        .collect();
    let expected = hasher.finalize();
    let node = backend.node(&[]);
    node.rest(&token("alice")).create_room(G, "big", &[]).await;
    // A fresh client: a new connection for the upload.
    let alice = node.rest(&token("alice"));
    let (hwm_before, rss_before) = memory_kib(node.pid());
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let started = std::time::Instant::now();
    let (status, media) = upload(
        &alice,
        "big",
        reqwest::Body::wrap_stream(stream),
        "video/mp4",
        Some("big.mp4"),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 201, "{media}");
    assert_eq!(media["size"], SIZE);
    let (hwm_after, rss_after) = memory_kib(node.pid());
    let grew_kib = hwm_after.saturating_sub(rss_before);
    println!(
        "media: 50 MiB streamed upload to {}: {:.1} MiB/s; node VmRSS before {rss_before} KiB, \
         VmHWM before {hwm_before} KiB, VmHWM after {hwm_after} KiB (peak {grew_kib} KiB above \
         the RSS before), VmRSS after {rss_after} KiB",
        if backend.is_s3() { "s3" } else { "local" },
        SIZE as f64 / 1_048_576.0 / elapsed.as_secs_f64(),
    );
    // By design the node holds at most two parts of the body at once (one being written, one
    // filling: 2 x 8 MiB); the HTTP layer's buffers and the allocator's slack come on top
    // (16-23 MiB in all with jemalloc, 19 MiB with glibc's allocator). Holding the whole
    // 50 MiB body would fail this.
    let bound_kib = (2 * chatnode::media::PART_SIZE / 1024 + 12 * 1024) as u64;
    assert!(
        grew_kib < bound_kib,
        "the node's peak memory grew by {grew_kib} KiB for a 50 MiB upload (bound {bound_kib} KiB)"
    );
    let id = media["id"].as_str().expect("id");
    let got = download(&node, "alice", &format!("/v1/media/{id}"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), SIZE);
    assert_eq!(
        Sha256::digest(&got.body),
        expected,
        "the same bytes came back"
    );
}

async fn mismatched_types_are_refused(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    for declared in ["image/jpeg", "video/mp4", "text/html"] {
        let (status, err) = upload(&alice, "r", png(8, 8).into(), declared, None).await;
        assert_eq!(status, 415, "{declared}: {err}");
        assert_eq!(err["error"]["code"], "bad_request");
    }
    let (status, err) = upload(&alice, "r", mp4(1000).into(), "image/png", None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (415, Some("bad_request"))
    );
    // No or a malformed Content-Type, an empty body, a bad name.
    let (status, _) = upload(&alice, "r", png(8, 8).into(), "image/*", None).await;
    assert_eq!(status, 400);
    let (status, _) = upload(&alice, "r", Vec::<u8>::new().into(), "text/plain", None).await;
    assert_eq!(status, 400);
    let (status, _) = upload(
        &alice,
        "r",
        pdf().into(),
        "application/pdf",
        Some("../x.pdf"),
    )
    .await;
    assert_eq!(status, 400);
    let resp = alice
        .client
        .post(format!("{}/v1/groups/{G}/rooms/r/media", alice.base))
        .bearer_auth(&alice.token)
        .body(pdf())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(backend.objects(&node).await.is_empty(), "nothing stored");
    // Declared right, the same bytes pass; so does octet-stream, which claims nothing.
    let (status, _) = upload(&alice, "r", png(8, 8).into(), "image/png", None).await;
    assert_eq!(status, 201);
    let (status, media) = upload(
        &alice,
        "r",
        png(8, 8).into(),
        "application/octet-stream",
        None,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(media["type"], "application/octet-stream");
}

async fn oversize_uploads_leave_nothing(backend: Backend) {
    const MIB: usize = 1024 * 1024;
    let node = backend.node(&[
        ("CHATNODE_MEDIA_FILE_MAX_BYTES", "1048576"),
        ("CHATNODE_MEDIA_VIDEO_MAX_BYTES", "10485760"),
    ]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    // Refused from Content-Length, before any byte is stored.
    let (status, err) = upload(&alice, "r", vec![b'x'; 3 * MIB].into(), "text/plain", None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{err}"
    );
    // Refused while streaming (no Content-Length), after one 8 MiB part of a multipart upload
    // has gone to storage: the upload is aborted.
    let body = mp4(11 * MIB);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (status, err) = upload(
        &alice,
        "r",
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
        "video/mp4",
        None,
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{err}"
    );
    let left = eventually(Duration::from_secs(5), || async {
        let objects = backend.objects(&node).await;
        objects.is_empty().then_some(())
    })
    .await;
    assert!(
        left.is_some(),
        "storage holds {:?}",
        backend.objects(&node).await
    );
    // Just under the limit passes.
    let (status, _) = upload(&alice, "r", vec![b'y'; MIB].into(), "text/plain", None).await;
    assert_eq!(status, 201);
}

async fn non_members_are_refused(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &["bob"]).await;
    let carol = node.rest(&token("carol"));
    let (status, err) = upload(&carol, "r", pdf().into(), "application/pdf", None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{err}"
    );
    let (status, err) = upload(&carol, "nowhere", pdf().into(), "application/pdf", None).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    let (status, media) = upload(&alice, "r", png(64, 64).into(), "image/png", None).await;
    assert_eq!(status, 201);
    let id = media["id"].as_str().expect("id");
    for path in [
        format!("/v1/media/{id}"),
        format!("/v1/media/{id}/thumbnail"),
    ] {
        let got = download(&node, "carol", &path, None).await;
        assert_eq!(got.status, 403, "{path}");
        assert!(!got.redirected);
    }
    assert_eq!(
        download(&node, "bob", &format!("/v1/media/{id}"), None)
            .await
            .status,
        200
    );
    // Unknown ids and no token.
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        download(&node, "bob", &format!("/v1/media/{unknown}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        download(&node, "bob", "/v1/media/..%2Fetc", None)
            .await
            .status,
        404
    );
    let resp = reqwest::get(node.http(&format!("/v1/media/{id}")))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    // A member who leaves loses access.
    let (status, _) = node
        .rest(&token("bob"))
        .delete(&format!("/v1/groups/{G}/rooms/r/members/bob"))
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        download(&node, "bob", &format!("/v1/media/{id}"), None)
            .await
            .status,
        403
    );
}

async fn send_checks_the_media(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "a", &["bob"]).await;
    alice.create_room(G, "b", &["bob"]).await;
    let (_, media) = upload(&alice, "a", png(16, 16).into(), "image/png", None).await;
    let id = media["id"].as_str().expect("id").to_owned();
    let mut ws = node.connect("alice").await;
    // From another room: as if it did not exist.
    let err = ws
        .call(json!({"t": "send", "group": G, "room": "b", "kind": "image", "media": id, "cmid": "x1"}))
        .await;
    assert_eq!(
        (err["t"].as_str(), err["code"].as_str()),
        (Some("err"), Some("not_found")),
        "{err}"
    );
    // Over REST too.
    let (status, err) = alice
        .post(
            &format!("/v1/groups/{G}/rooms/b/messages"),
            json!({"kind": "image", "media": id, "cmid": "x2"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    // Someone else's upload.
    let mut bob = node.connect("bob").await;
    let err = bob
        .call(json!({"t": "send", "group": G, "room": "a", "kind": "image", "media": id, "cmid": "x3"}))
        .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    // The wrong kind.
    let err = ws
        .call(json!({"t": "send", "group": G, "room": "a", "kind": "video", "media": id, "cmid": "x4"}))
        .await;
    assert_eq!(err["code"], "bad_request", "{err}");
    // The right one, and a retry of it with the same cmid gets the same reply.
    let first = ws
        .call(json!({"t": "send", "group": G, "room": "a", "kind": "image", "media": id, "cmid": "x5"}))
        .await;
    assert_eq!(first["t"], "sent", "{first}");
    let again = ws
        .call(json!({"t": "send", "group": G, "room": "a", "kind": "image", "media": id, "cmid": "x5"}))
        .await;
    assert_eq!(again["id"], first["id"]);
    let (status, sent) = alice
        .post(
            &format!("/v1/groups/{G}/rooms/a/messages"),
            json!({"kind": "image", "media": id, "cmid": "x6"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
}

async fn deletion_removes_media(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    let mut ws = node.connect("alice").await;
    let (_, media) = upload(&alice, "r", png(100, 100).into(), "image/png", None).await;
    let id = media["id"].as_str().expect("id").to_owned();
    let sent = ws
        .call(json!({"t": "send", "group": G, "room": "r", "kind": "image", "media": id, "cmid": "d1"}))
        .await;
    assert_eq!(sent["t"], "sent");
    // Wait for the thumbnail, so the deletion has two objects to remove.
    eventually(Duration::from_secs(20), || async {
        let got = download(&node, "alice", &format!("/v1/media/{id}/thumbnail"), None).await;
        (got.status == 200).then_some(())
    })
    .await
    .expect("thumbnail");
    assert_eq!(backend.objects(&node).await.len(), 2);
    let reply = ws
        .call(json!({"t": "delete", "group": G, "room": "r", "id": sent["id"]}))
        .await;
    assert_eq!(reply["t"], "ok", "{reply}");
    assert_eq!(
        download(&node, "alice", &format!("/v1/media/{id}"), None)
            .await
            .status,
        404
    );
    let gone = eventually(Duration::from_secs(5), || async {
        backend.objects(&node).await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "left: {:?}", backend.objects(&node).await);
    // A room's media go with the room, sent or not.
    for i in 0..3 {
        let (status, _) = upload(
            &alice,
            "r",
            pdf().into(),
            "application/pdf",
            Some(&format!("{i}.pdf")),
        )
        .await;
        assert_eq!(status, 201);
    }
    assert_eq!(backend.objects(&node).await.len(), 3);
    let (status, _) = alice.delete(&format!("/v1/groups/{G}/rooms/r")).await;
    assert_eq!(status, 204);
    let gone = eventually(Duration::from_secs(5), || async {
        backend.objects(&node).await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "left: {:?}", backend.objects(&node).await);
}

/// Markup that a browser would run or sniff as a document, under a binary type's name, is
/// refused like any other mismatch (WHATWG MIME Sniffing's HTML and XML patterns, and SVG).
/// Declared as what it is, it is kept but never served inline: an attachment, nosniff.
async fn markup_is_never_an_image(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    let svg =
        br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>"#;
    let disguised: Vec<(&str, Vec<u8>)> = vec![
        ("svg", svg.to_vec()),
        (
            "svg after an XML declaration",
            format!(
                "<?xml version=\"1.0\"?>\n<!DOCTYPE svg>\n{}",
                String::from_utf8_lossy(svg)
            )
            .into_bytes(),
        ),
        (
            "html with a BOM and blank lines",
            b"\xEF\xBB\xBF \r\n\t<!doctype HTML><script>alert(1)</script>".to_vec(),
        ),
        ("html fragment", b"<ScRiPt>alert(1)</script>".to_vec()),
        (
            "html comment",
            b"<!-- x --><img src=x onerror=alert(1)>".to_vec(),
        ),
        ("xml", b"<?xml version=\"1.0\"?><a/>".to_vec()),
    ];
    for declared in ["image/png", "image/jpeg", "video/mp4", "application/pdf"] {
        for (what, bytes) in &disguised {
            let (status, err) = upload(&alice, "r", bytes.clone().into(), declared, None).await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (415, Some("bad_request")),
                "{what} as {declared}: {err}"
            );
        }
    }
    assert!(backend.objects(&node).await.is_empty(), "nothing stored");
    // Text that merely mentions a tag passes as text.
    let (status, _) = upload(
        &alice,
        "r",
        b"use <svg> for icons".to_vec().into(),
        "text/plain",
        None,
    )
    .await;
    assert_eq!(status, 201);
    // Declared as what they are, they are stored, and served only as attachments.
    for (declared, bytes) in [
        ("image/svg+xml", svg.to_vec()),
        (
            "text/html",
            b"<html><script>alert(1)</script></html>".to_vec(),
        ),
        (
            "application/xhtml+xml",
            b"<html xmlns=\"http://www.w3.org/1999/xhtml\"/>".to_vec(),
        ),
        ("text/xml", b"<?xml version=\"1.0\"?><a/>".to_vec()),
    ] {
        let (status, media) = upload(&alice, "r", bytes.clone().into(), declared, None).await;
        assert_eq!(status, 201, "{declared}: {media}");
        let id = media["id"].as_str().expect("id");
        let got = download(&node, "alice", &format!("/v1/media/{id}"), None).await;
        assert_eq!(got.status, 200, "{declared}");
        assert_eq!(got.body.as_ref(), bytes.as_slice(), "{declared}");
        let disposition = got
            .headers
            .get("content-disposition")
            .cloned()
            .unwrap_or_default();
        assert!(
            disposition.starts_with("attachment"),
            "{declared}: {disposition:?}"
        );
        if !got.redirected {
            assert_eq!(
                got.headers["x-content-type-options"], "nosniff",
                "{declared}"
            );
            assert!(
                got.headers["content-security-policy"].contains("sandbox"),
                "{declared}"
            );
        }
    }
}

/// After `delete` is acknowledged the media cannot be downloaded, not once in many tries
/// (the `ok` is the client's only signal, docs/protocol.md §3.2); its objects are gone soon after.
async fn deleted_media_is_gone_when_the_delete_is_acknowledged(backend: Backend) {
    let node = backend.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    let mut ws = node.connect("alice").await;
    let image = png(64, 64);
    // One warm keep-alive connection, so the download follows the `ok` as closely as a client
    // can make it.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let fetch = async |path: String| {
        let resp = client
            .get(node.http(&path))
            .bearer_auth(token("alice"))
            .send()
            .await
            .expect("download");
        let status = resp.status().as_u16();
        (status, resp.bytes().await.map_or(0, |b| b.len()))
    };
    let mut served = Vec::new();
    for i in 0..30 {
        let (status, media) = upload(&alice, "r", image.clone().into(), "image/png", None).await;
        assert_eq!(status, 201, "{media}");
        let id = media["id"].as_str().expect("id").to_owned();
        let sent = ws
            .call(json!({"t": "send", "group": G, "room": "r", "kind": "image", "media": id, "cmid": format!("del{i}")}))
            .await;
        assert_eq!(sent["t"], "sent", "{sent}");
        let reply = ws
            .call(json!({"t": "delete", "group": G, "room": "r", "id": sent["id"]}))
            .await;
        assert_eq!(reply["t"], "ok", "{reply}");
        // A 307 (S3) counts as served: it hands out a working URL.
        let (status, bytes) = fetch(format!("/v1/media/{id}")).await;
        if status != 404 {
            served.push((i, "file", status, bytes));
        }
        let (status, bytes) = fetch(format!("/v1/media/{id}/thumbnail")).await;
        if status != 404 {
            served.push((i, "thumbnail", status, bytes));
        }
    }
    assert!(
        served.is_empty(),
        "served after the delete's ok (try, what, status, bytes): {served:?}"
    );
    let gone = eventually(Duration::from_secs(10), || async {
        backend.objects(&node).await.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "left: {:?}", backend.objects(&node).await);
}

// ---------------------------------------------------------------------------------------------
// The tests: each scenario on the local backend and on S3.

macro_rules! on_both_backends {
    ($($scenario:ident => $local:ident, $s3:ident;)*) => {
        $(
            #[tokio::test]
            async fn $local() {
                $scenario(Backend::Local).await;
            }

            #[tokio::test]
            async fn $s3() {
                if let Some(backend) = Backend::s3(stringify!($s3)).await {
                    $scenario(backend).await;
                }
            }
        )*
    };
}

on_both_backends! {
    each_kind_round_trips => local_each_kind_round_trips, s3_each_kind_round_trips;
    large_upload_keeps_memory_flat => local_large_upload_keeps_memory_flat, s3_large_upload_keeps_memory_flat;
    mismatched_types_are_refused => local_mismatched_types_are_refused, s3_mismatched_types_are_refused;
    oversize_uploads_leave_nothing => local_oversize_uploads_leave_nothing, s3_oversize_uploads_leave_nothing;
    non_members_are_refused => local_non_members_are_refused, s3_non_members_are_refused;
    send_checks_the_media => local_send_checks_the_media, s3_send_checks_the_media;
    deletion_removes_media => local_deletion_removes_media, s3_deletion_removes_media;
    markup_is_never_an_image => local_markup_is_never_an_image, s3_markup_is_never_an_image;
    deleted_media_is_gone_when_the_delete_is_acknowledged => local_deleted_media_is_gone_when_the_delete_is_acknowledged, s3_deleted_media_is_gone_when_the_delete_is_acknowledged;
}

#[tokio::test]
async fn local_range_requests() {
    let node = Backend::Local.node(&[]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let (status, media) = upload(
        &alice,
        "r",
        bytes.clone().into(),
        "application/x-test",
        None,
    )
    .await;
    assert_eq!(status, 201, "{media}");
    let path = format!("/v1/media/{}", media["id"].as_str().expect("id"));
    let got = download(&node, "alice", &path, Some("bytes=10-19")).await;
    assert_eq!(got.status, 206);
    assert_eq!(&got.body[..], &bytes[10..20]);
    assert_eq!(got.headers["content-range"], "bytes 10-19/1000");
    assert_eq!(got.headers["content-length"], "10");
    assert_eq!(got.headers["accept-ranges"], "bytes");
    let got = download(&node, "alice", &path, Some("bytes=-5")).await;
    assert_eq!((got.status, &got.body[..]), (206, &bytes[995..]));
    let got = download(&node, "alice", &path, Some("bytes=990-")).await;
    assert_eq!((got.status, got.body.len()), (206, 10));
    let got = download(&node, "alice", &path, Some("bytes=2000-")).await;
    assert_eq!(got.status, 416);
    assert_eq!(got.headers["content-range"], "bytes */1000");
    let got = download(&node, "alice", &path, Some("bytes=0-1,5-6")).await;
    assert_eq!((got.status, got.body.len()), (200, 1000));
    assert_eq!(got.headers["content-disposition"], "attachment");
}

#[tokio::test]
async fn s3_signed_urls_expire() {
    let Some(backend) = Backend::s3("s3_signed_urls_expire").await else {
        return;
    };
    let node = backend.node(&[("CHATNODE_MEDIA_SIGNED_URL_SECS", "2")]);
    let alice = node.rest(&token("alice"));
    alice.create_room(G, "r", &[]).await;
    let (_, media) = upload(&alice, "r", pdf().into(), "application/pdf", Some("a.pdf")).await;
    let id = media["id"].as_str().expect("id");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = client
        .get(node.http(&format!("/v1/media/{id}")))
        .bearer_auth(token("alice"))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status().as_u16(), 307);
    let url = header(&resp, "location");
    assert!(url.contains("X-Amz-Expires=2"), "{url}");
    let fresh = client.get(&url).send().await.expect("signed url");
    assert_eq!(fresh.status().as_u16(), 200);
    assert_eq!(header(&fresh, "content-type"), "application/pdf");
    assert!(header(&fresh, "content-disposition").starts_with("attachment"));
    // Once its lifetime has passed, the same URL is refused.
    let refused = eventually(Duration::from_secs(15), || async {
        let status = client
            .get(&url)
            .send()
            .await
            .expect("signed url")
            .status()
            .as_u16();
        (status != 200).then_some(status)
    })
    .await;
    assert_eq!(refused, Some(403), "the signed URL still worked after 15 s");
}

#[tokio::test]
async fn media_routes_are_documented() {
    let node = TestNode::spawn(&[]);
    let doc: Value = reqwest::get(node.http("/v1/openapi.json"))
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let paths = &doc["paths"];
    assert!(paths["/v1/groups/{group}/rooms/{room}/media"]["post"].is_object());
    assert!(paths["/v1/media/{id}"]["get"].is_object());
    assert!(paths["/v1/media/{id}/thumbnail"]["get"].is_object());
}
