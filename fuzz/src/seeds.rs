//! The seed corpus of each target (`fuzz/corpus/<target>/`), made with the encoders a real
//! client uses: MessagePack frames by [`crate::frame_of`] from validated requests, JSON bodies
//! by `serde_json`, images by the `image` crate's encoders, tokens by `chatnode::auth::mint`.
//! [`check`] says whether a committed seed is still what its target accepts.

use std::io::Cursor;
use std::path::Path;

use chatnode::auth::{Verifier, mint};
use chatnode::config::AuthSettings;
use chatnode::ids::{GroupId, RoomId, UserId};
use chatnode::protocol::{MessageKind, Request, SendRequest, decode_request};
use serde_json::json;

use crate::{FRAME_MAX_TEXT, TOKEN_SECRET, frame_of, lines};

/// One seed file: `fuzz/corpus/<target>/<name>`.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The names of the fuzz targets, in the order scripts/fuzz.sh runs them.
pub const TARGETS: [&str; 4] = ["frame", "rest_json", "media", "token"];

fn group(s: &str) -> GroupId {
    GroupId::parse(s).expect("a seed's group id is valid")
}

fn room(s: &str) -> RoomId {
    RoomId::parse(s).expect("a seed's room id is valid")
}

/// One request of each type of PROTOCOL.md §3.1, with the optional fields both left out and set.
fn requests() -> Vec<(&'static str, Request)> {
    let (g, r) = (group("acme"), room("general"));
    let send = |kind, text: Option<&str>, media: Option<&str>, from: Option<&str>| {
        Request::Send(SendRequest {
            group: g.clone(),
            room: r.clone(),
            kind,
            text: text.map(str::to_owned),
            media: media.map(str::to_owned),
            cmid: "c-0001".to_owned(),
            from: from.map(|f| UserId::parse(f).expect("a seed's user id is valid")),
        })
    };
    vec![
        ("ping", Request::Ping),
        ("sub", Request::Sub { group: g.clone() }),
        ("unsub", Request::Unsub { group: g.clone() }),
        (
            "enter",
            Request::Enter {
                group: g.clone(),
                room: r.clone(),
                since: None,
                limit: 50,
            },
        ),
        (
            "enter_since",
            Request::Enter {
                group: g.clone(),
                room: r.clone(),
                since: Some(382_714_054_050_840_576),
                limit: 200,
            },
        ),
        (
            "leave",
            Request::Leave {
                group: g.clone(),
                room: r.clone(),
            },
        ),
        (
            "send_text",
            send(MessageKind::Text, Some("hello, 세계"), None, None),
        ),
        (
            "send_image",
            send(
                MessageKind::Image,
                Some("caption"),
                Some("0123456789abcdef0123456789abcdef"),
                None,
            ),
        ),
        (
            "send_file_as",
            send(
                MessageKind::File,
                None,
                Some("fedcba9876543210fedcba9876543210"),
                Some("bob"),
            ),
        ),
        (
            "read",
            Request::Read {
                group: g.clone(),
                room: r.clone(),
                id: 382_714_054_050_840_577,
            },
        ),
        (
            "history",
            Request::History {
                group: g.clone(),
                room: r.clone(),
                before: Some(382_714_054_050_840_577),
                limit: 20,
            },
        ),
        (
            "typing",
            Request::Typing {
                group: g.clone(),
                room: r.clone(),
            },
        ),
        (
            "edit",
            Request::Edit {
                group: g.clone(),
                room: r.clone(),
                id: 7,
                text: "edited".to_owned(),
            },
        ),
        (
            "delete",
            Request::Delete {
                group: g,
                room: r,
                id: 7,
            },
        ),
    ]
}

/// Every JSON body the REST API takes (src/api/), and a query of each query type.
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let json = |value: serde_json::Value| serde_json::to_vec(&value).unwrap_or_default();
    vec![
        (
            "create_group",
            json(json!({"title": "Team", "kind": "group", "members": ["bob", "carol"], "max": 10})),
        ),
        (
            "create_open",
            json(json!({"room": "lobby", "title": "Lobby", "kind": "open", "password": "pw"})),
        ),
        (
            "create_direct",
            json(json!({"title": "dm", "kind": "direct", "members": ["bob"]})),
        ),
        (
            "send_text",
            json(json!({"kind": "text", "text": "hi", "cmid": "c1"})),
        ),
        (
            "send_image",
            json(
                json!({"kind": "image", "media": "0123456789abcdef0123456789abcdef", "cmid": "c2", "from": "bob"}),
            ),
        ),
        ("join", json(json!({"password": "pw"}))),
        ("join_empty", json(json!({}))),
        ("add_member", json(json!({"user": "bob"}))),
        (
            "device",
            json(json!({"token": "fcm:APA91b-token_1", "platform": "android"})),
        ),
        ("mute", json(json!({"muted": true}))),
        (
            "query_history",
            b"before=382714054050840577&limit=20".to_vec(),
        ),
        ("query_upload", b"name=%EC%82%AC%EC%A7%84%201.png".to_vec()),
    ]
}

/// A 3x2 picture in `format`, by the `image` crate's encoder.
fn picture(format: image::ImageFormat) -> Vec<u8> {
    let picture =
        image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 80, y as u8 * 120, 7]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(picture)
        .write_to(&mut out, format)
        .expect("the image crate encodes a small picture");
    out.into_inner()
}

/// The `media` target's input: `Content-Type`, file name and `Range` lines, then the head.
fn upload(content_type: &str, name: &str, range: &str, head: &[u8]) -> Vec<u8> {
    let mut out = format!("{content_type}\n{name}\n{range}\n").into_bytes();
    out.extend_from_slice(head);
    out
}

fn uploads() -> Vec<(&'static str, Vec<u8>)> {
    use image::ImageFormat as F;
    let svg = br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>"#;
    let html = b"<!DOCTYPE html><html><body><script>x()</script></body></html>";
    vec![
        (
            "png",
            upload("image/png", "photo.png", "bytes=0-15", &picture(F::Png)),
        ),
        (
            "jpeg",
            upload("image/jpg", "사진 1.jpg", "bytes=-4", &picture(F::Jpeg)),
        ),
        (
            "gif",
            upload("image/gif", "a.gif", "bytes=3-", &picture(F::Gif)),
        ),
        (
            "bmp",
            upload("image/x-ms-bmp", "a.bmp", "", &picture(F::Bmp)),
        ),
        (
            "webp",
            upload("image/webp", "a.webp", "bytes=0-0", &picture(F::WebP)),
        ),
        ("svg", upload("image/svg+xml", "logo.svg", "", svg)),
        ("svg_as_png", upload("image/png", "logo.png", "", svg)),
        (
            "html",
            upload("text/html; charset=utf-8", "page.html", "", html),
        ),
        ("html_as_gif", upload("image/gif", "x.gif", "", html)),
        (
            "text",
            upload("text/plain", "notes \"1\".txt", "bytes=0-1,4-5", b"hello\n"),
        ),
        (
            "octets",
            upload(
                "application/octet-stream",
                "blob",
                "bytes=2-1",
                &picture(F::Png),
            ),
        ),
    ]
}

fn tokens() -> Vec<(&'static str, Vec<u8>)> {
    // Valid for a hundred years, so the committed seeds keep verifying.
    let ttl = 100 * 365 * 24 * 3600;
    let token = |user: &str, service: bool, groups: Option<Vec<String>>| {
        mint(TOKEN_SECRET, user, Some("A User"), ttl, service, groups).expect("HS256 tokens mint")
    };
    let alice = token("alice", false, None);
    let service = token(
        "svc",
        true,
        Some(vec!["acme".to_owned(), "beta".to_owned()]),
    );
    vec![
        ("bearer", format!("Bearer {alice}\n").into_bytes()),
        ("bearer_lower", format!("bearer  {service} \n").into_bytes()),
        ("query", format!("\ntoken={alice}").into_bytes()),
        (
            "basic_and_query",
            format!("Basic YWxpY2U6cHc=\nsince=5&token={service}").into_bytes(),
        ),
    ]
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target, name: &str, bytes| {
        out.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
        })
    };
    for (name, request) in requests() {
        add("frame", name, frame_of(&request, Some(1)));
    }
    for (name, body) in bodies() {
        add("rest_json", name, body);
    }
    for (name, input) in uploads() {
        add("media", name, input);
    }
    for (name, input) in tokens() {
        add("token", name, input);
    }
    out
}

/// Whether `bytes` of a seed of `target` are accepted by the node the way the seed means:
/// a frame decodes, a body or query parses, an upload's type parses, a token verifies.
pub fn check(target: &str, bytes: &[u8]) -> Result<(), String> {
    match target {
        "frame" => decode_request(bytes, FRAME_MAX_TEXT)
            .map(drop)
            .map_err(|e| format!("the frame does not decode: {e}")),
        "rest_json" => {
            use chatnode::api::{media, messages, push, rooms};
            let body = |ok: bool| if ok { Ok(()) } else { Err(()) };
            let query = std::str::from_utf8(bytes).unwrap_or_default();
            [
                body(serde_json::from_slice::<rooms::CreateRoom>(bytes).is_ok()),
                body(serde_json::from_slice::<messages::SendBody>(bytes).is_ok()),
                body(serde_json::from_slice::<rooms::JoinBody>(bytes).is_ok()),
                body(serde_json::from_slice::<rooms::AddMemberBody>(bytes).is_ok()),
                body(serde_json::from_slice::<push::DeviceBody>(bytes).is_ok()),
                body(serde_json::from_slice::<push::MuteBody>(bytes).is_ok()),
                body(
                    !query.is_empty()
                        && serde_urlencoded::from_str::<messages::HistoryQuery>(query).is_ok(),
                ),
                body(
                    !query.is_empty()
                        && serde_urlencoded::from_str::<media::UploadQuery>(query).is_ok(),
                ),
            ]
            .iter()
            .any(Result::is_ok)
            .then_some(())
            .ok_or_else(|| "no body or query type accepts it".to_owned())
        }
        "media" => {
            let ([content_type, ..], _) = lines::<3>(bytes);
            let content_type = std::str::from_utf8(content_type).map_err(|e| e.to_string())?;
            chatnode::media::types::parse_content_type(content_type)
                .map(drop)
                .map_err(str::to_owned)
        }
        "token" => {
            let verifier = Verifier::new(&AuthSettings::default(), Some(TOKEN_SECRET))
                .map_err(|e| e.to_string())?;
            let ([header], query) = lines::<1>(bytes);
            let header = actix_web::http::header::HeaderValue::from_bytes(header).ok();
            let query = String::from_utf8_lossy(query);
            let token = chatnode::api::token_of(header.as_ref(), Some(&query));
            verifier.verify(&token).map(drop).map_err(|e| e.to_string())
        }
        other => Err(format!("no target {other}")),
    }
}

/// Writes every seed of `seeds` under `dir`, replacing what the targets' directories held.
pub fn write(dir: &Path, seeds: &[Seed]) -> std::io::Result<()> {
    for target in TARGETS {
        let at = dir.join(target);
        if at.exists() {
            std::fs::remove_dir_all(&at)?;
        }
        std::fs::create_dir_all(&at)?;
    }
    for seed in seeds {
        std::fs::write(dir.join(seed.target).join(&seed.name), &seed.bytes)?;
    }
    Ok(())
}

/// What is wrong with the committed corpus under `dir`: a seed missing, left over, different
/// from what the encoders make now, or no longer accepted. Token seeds carry their minting
/// time, so they are only checked to verify.
pub fn check_dir(dir: &Path, seeds: &[Seed]) -> Vec<String> {
    let mut problems = Vec::new();
    for seed in seeds {
        let path = dir.join(seed.target).join(&seed.name);
        match std::fs::read(&path) {
            Err(e) => problems.push(format!("{}: {e}", path.display())),
            Ok(bytes) => {
                if seed.target != "token" && bytes != seed.bytes {
                    problems.push(format!(
                        "{}: not what the encoders make now",
                        path.display()
                    ));
                }
                if let Err(e) = check(seed.target, &bytes) {
                    problems.push(format!("{}: {e}", path.display()));
                }
            }
        }
    }
    for target in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !seeds.iter().any(|s| s.target == target && s.name == name) {
                problems.push(format!("{}: not a seed", entry.path().display()));
            }
        }
    }
    problems
}
