//! What the node decides about an upload from its headers and first bytes: the declared type
//! (parsed and checked against the sniffed one), the kind it implies, how a download is served
//! (inline or as an attachment), the file name, the media id, and download ranges. Pure
//! functions, unit-tested below.

use crate::protocol::MessageKind;

/// How many leading bytes are sniffed: enough for every signature `infer` knows of the types
/// chats carry (the longest it reads near the start are office containers and tar headers).
pub const SNIFF_BYTES: usize = 8 * 1024;

/// The longest file name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The longest `Content-Type` accepted, in bytes.
const MAX_TYPE_BYTES: usize = 127;

/// The kind of message a media type belongs to (PROTOCOL.md §4.3): `image/*` image, `video/*`
/// video, anything else file.
pub fn kind_of(content_type: &str) -> MessageKind {
    if content_type.starts_with("image/") {
        MessageKind::Image
    } else if content_type.starts_with("video/") {
        MessageKind::Video
    } else {
        MessageKind::File
    }
}

/// Whether a download is shown in place. Images and videos are, except SVG, which is a
/// document that can run script; everything else is served as an attachment.
pub fn inline(content_type: &str) -> bool {
    matches!(
        kind_of(content_type),
        MessageKind::Image | MessageKind::Video
    ) && content_type != "image/svg+xml"
}

/// Whether the node makes a thumbnail of this type (the raster formats the `image` crate is
/// built with here).
pub fn thumbnailable(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" | "image/bmp"
    )
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                )
        })
}

/// The MIME type of a `Content-Type` header without its parameters, lower case, or why it
/// is refused.
pub fn parse_content_type(header: &str) -> Result<String, &'static str> {
    let essence = header.split(';').next().unwrap_or_default().trim();
    if essence.is_empty() {
        return Err("a Content-Type naming the file's type is required");
    }
    if essence.len() > MAX_TYPE_BYTES {
        return Err("the Content-Type is too long");
    }
    let essence = essence.to_ascii_lowercase();
    match essence.split_once('/') {
        Some((top, sub)) if is_token(top) && is_token(sub) && top != "*" && sub != "*" => {
            Ok(essence)
        }
        _ => Err("the Content-Type must be a single type such as image/png"),
    }
}

/// Other names for one type, mapped to the name `infer` gives it.
fn canonical(mime: &str) -> &str {
    match mime {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "image/x-png" => "image/png",
        "image/x-ms-bmp" | "image/x-bmp" => "image/bmp",
        "image/heif" => "image/heif",
        "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio/x-wav",
        "audio/mp3" | "audio/x-mp3" | "audio/mpeg3" => "audio/mpeg",
        "application/x-pdf" => "application/pdf",
        "application/x-zip-compressed" | "application/zip-compressed" => "application/zip",
        "application/gzip" | "application/x-gzip" => "application/gzip",
        "video/x-msvideo" | "video/avi" | "video/msvideo" => "video/x-msvideo",
        other => other,
    }
}

/// Types stored in one container format, which a sniffer cannot (or need not) tell apart.
const FAMILIES: &[&[&str]] = &[
    // ISO base media files.
    &[
        "video/mp4",
        "video/quicktime",
        "video/x-m4v",
        "video/3gpp",
        "video/3gpp2",
        "audio/mp4",
        "audio/m4a",
        "audio/x-m4a",
    ],
    // Matroska and WebM.
    &[
        "video/webm",
        "video/x-matroska",
        "audio/webm",
        "audio/x-matroska",
    ],
    // Ogg.
    &["audio/ogg", "video/ogg", "application/ogg", "audio/opus"],
    // HEIF images.
    &[
        "image/heif",
        "image/heic",
        "image/heif-sequence",
        "image/heic-sequence",
    ],
];

/// Types that are ZIP archives inside: a sniffer may see either the archive or the type.
fn zip_based(mime: &str) -> bool {
    mime == "application/zip"
        || mime.starts_with("application/vnd.openxmlformats-officedocument.")
        || mime.starts_with("application/vnd.oasis.opendocument.")
        || mime.ends_with("+zip")
        || matches!(
            mime,
            "application/java-archive" | "application/vnd.android.package-archive"
        )
}

/// Whether bytes sniffed as `sniffed` may be uploaded as `declared`.
pub fn compatible(declared: &str, sniffed: &str) -> bool {
    let (d, s) = (canonical(declared), canonical(sniffed));
    d == s
        // "Some bytes": the uploader claims nothing, and it is served as an attachment.
        || d == "application/octet-stream"
        || FAMILIES.iter().any(|f| f.contains(&d) && f.contains(&s))
        || (zip_based(d) && zip_based(s))
}

/// Checks the first bytes of a file against its declared type: `Err` carries the type the
/// bytes were recognised as when it is another one. Bytes that are recognised as nothing are
/// accepted (plain text, CSV and many documents have no signature).
pub fn check_sniffed(declared: &str, head: &[u8]) -> Result<(), &'static str> {
    match infer::get(head) {
        Some(found) if !compatible(declared, found.mime_type()) => Err(found.mime_type()),
        _ => Ok(()),
    }
}

/// Checks an uploader's file name: 1..=255 bytes, no control characters, no path.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err("`name` must be 1..=255 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("`name` may not contain control characters");
    }
    if name.contains('/') || name.contains('\\') {
        return Err("`name` is a file name, not a path");
    }
    Ok(())
}

/// A `Content-Disposition` value: `inline`, or `attachment` with the file name both as an
/// ASCII fallback and UTF-8 (RFC 6266), never anything the client could use to add a header.
pub fn content_disposition(inline: bool, name: Option<&str>) -> String {
    let mut value = String::from(if inline { "inline" } else { "attachment" });
    if let Some(name) = name {
        let fallback: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        value.push_str("; filename=\"");
        value.push_str(&fallback);
        value.push_str("\"; filename*=UTF-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                value.push(char::from(b));
            } else {
                value.push_str(&format!("%{b:02X}"));
            }
        }
    }
    value
}

/// A new media id: 128 random bits as 32 lowercase hex digits.
pub fn new_media_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Whether `s` has the form of a media id (anything else cannot exist, so it is not looked up).
pub fn is_media_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole file (no header, or one this node ignores, such as several ranges).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Nothing of the file matches: 416.
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14.2) for one range of bytes. Several ranges and
/// malformed headers are ignored (the whole file is sent), as the RFC allows.
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.is_empty(), parse(first), parse(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        (false, Some(start), end) => {
            if !last.is_empty() && end.is_none() {
                return RangeRequest::Full;
            }
            if end.is_some_and(|e| e < start) {
                return RangeRequest::Full;
            }
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Part {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            }
        }
        _ => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
    ];
    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];

    #[test]
    fn content_types_are_parsed_and_checked() {
        assert_eq!(
            parse_content_type("Image/PNG; charset=x").as_deref(),
            Ok("image/png")
        );
        assert_eq!(
            parse_content_type(
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            )
            .as_deref(),
            Ok("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
        );
        for bad in [
            "",
            "image",
            "image/",
            "/png",
            "*/*",
            "image/*",
            "text/ht ml",
            "a/b\r\nX: y",
        ] {
            assert!(parse_content_type(bad).is_err(), "{bad:?}");
        }
        assert!(parse_content_type(&format!("a/{}", "b".repeat(200))).is_err());
    }

    #[test]
    fn kinds_follow_the_type() {
        assert_eq!(kind_of("image/png"), MessageKind::Image);
        assert_eq!(kind_of("video/mp4"), MessageKind::Video);
        assert_eq!(kind_of("application/pdf"), MessageKind::File);
        assert_eq!(kind_of("audio/mpeg"), MessageKind::File);
        assert!(inline("image/png") && inline("video/webm"));
        assert!(!inline("image/svg+xml") && !inline("text/html") && !inline("application/pdf"));
    }

    #[test]
    fn sniffing_refuses_another_type_only() {
        assert_eq!(check_sniffed("image/png", PNG), Ok(()));
        assert_eq!(check_sniffed("image/jpeg", PNG), Err("image/png"));
        assert_eq!(check_sniffed("video/mp4", PNG), Err("image/png"));
        assert_eq!(check_sniffed("image/jpg", JPEG), Ok(()));
        assert_eq!(check_sniffed("application/octet-stream", PNG), Ok(()));
        // Unrecognised bytes (plain text) pass whatever is declared.
        assert_eq!(check_sniffed("text/plain", b"hello, world"), Ok(()));
        assert_eq!(check_sniffed("text/csv", b"a,b\n1,2\n"), Ok(()));
        // Containers.
        assert!(compatible("video/quicktime", "video/mp4"));
        assert!(compatible("video/webm", "video/x-matroska"));
        assert!(compatible(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "application/zip"
        ));
        assert!(compatible("application/zip", "application/epub+zip"));
        assert!(!compatible("image/png", "application/zip"));
        assert!(!compatible("text/html", "image/png"));
    }

    #[test]
    fn names_are_checked_and_escaped() {
        assert!(check_name("report 2024.pdf").is_ok());
        assert!(check_name("사진.jpg").is_ok());
        for bad in ["", "a\nb", "../etc/passwd", "a\\b", "x\u{7f}"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(256)).is_err());
        assert_eq!(content_disposition(true, None), "inline");
        assert_eq!(
            content_disposition(false, Some("a \"b\".txt")),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"
        );
        let korean = content_disposition(false, Some("사진.jpg"));
        assert!(korean.is_ascii(), "{korean}");
        assert!(
            korean.contains("filename*=UTF-8''%EC%82%AC%EC%A7%84.jpg"),
            "{korean}"
        );
    }

    #[test]
    fn media_ids() {
        let id = new_media_id();
        assert!(is_media_id(&id), "{id}");
        assert_ne!(id, new_media_id());
        assert!(!is_media_id("nope"));
        assert!(!is_media_id(&id.to_ascii_uppercase()));
        assert!(!is_media_id(&format!("{}/", &id[..31])));
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Part { start: 90, end: 99 });
        assert_eq!(
            parse_range("bytes=90-500", 100),
            Part { start: 90, end: 99 }
        );
        assert_eq!(parse_range("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-500", 100), Part { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=a-b", 100), Full);
        assert_eq!(parse_range("bytes=1-x", 100), Full);
        assert_eq!(parse_range("bytes=+1-2", 100), Full);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=18446744073709551615-", 10),
            Unsatisfiable
        );
    }
}
