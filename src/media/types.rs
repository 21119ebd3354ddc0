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

/// The kind of message a media type belongs to (docs/protocol.md §6): `image/*` image, `video/*`
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

/// Whether a type names a document a browser may run script in or parse as markup (HTML,
/// XHTML, SVG and every other XML type): never served inline from the node's origin.
pub fn scriptable(content_type: &str) -> bool {
    matches!(
        content_type,
        "text/html" | "text/xml" | "application/xml" | "text/xsl" | "application/xslt"
    ) || content_type.ends_with("+xml")
}

/// Whether a download is shown in place. Images and videos are, except markup types (SVG
/// is an image that is a document and can run script); everything else is served as an
/// attachment.
pub fn inline(content_type: &str) -> bool {
    matches!(
        kind_of(content_type),
        MessageKind::Image | MessageKind::Video
    ) && !scriptable(content_type)
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

/// The patterns of WHATWG MIME Sniffing §7.1 ("identifying a resource with an unknown MIME
/// type") that make a browser treat bytes as HTML, each to be followed by a tag-terminating
/// byte (a space or `>`).
const HTML_PATTERNS: &[&[u8]] = &[
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
];

/// The bytes of a head as ASCII: a UTF-8 byte order mark dropped, UTF-16 (by its mark)
/// narrowed to one byte a character (anything beyond ASCII becomes 0xFF), so markup written
/// in UTF-16 is recognised too.
fn ascii_view(head: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let narrow = |units: &[u8], high_first: bool| -> Vec<u8> {
        units
            .chunks_exact(2)
            .map(|u| {
                let (high, low) = if high_first {
                    (u[0], u[1])
                } else {
                    (u[1], u[0])
                };
                if high == 0 && low.is_ascii() {
                    low
                } else {
                    0xFF
                }
            })
            .collect()
    };
    match head {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::borrow::Cow::Borrowed(rest),
        [0xFE, 0xFF, rest @ ..] => std::borrow::Cow::Owned(narrow(rest, true)),
        [0xFF, 0xFE, rest @ ..] => std::borrow::Cow::Owned(narrow(rest, false)),
        _ => std::borrow::Cow::Borrowed(head),
    }
}

/// Whether `buf` starts with `pattern`, ignoring ASCII case.
fn starts_with_nocase(buf: &[u8], pattern: &[u8]) -> bool {
    buf.len() >= pattern.len() && buf[..pattern.len()].eq_ignore_ascii_case(pattern)
}

/// Whether an `<svg` element starts anywhere in `buf` (the root of an SVG document may come
/// after an XML declaration, a doctype and comments).
fn has_svg_element(buf: &[u8]) -> bool {
    buf.windows(5).any(|w| {
        w[..4].eq_ignore_ascii_case(b"<svg")
            && (w[4].is_ascii_whitespace() || b">/".contains(&w[4]))
    })
}

/// Recognises markup a browser would sniff or run: HTML by the WHATWG patterns, XML by its
/// declaration (`<?xml`), and SVG (by its root element, which the WHATWG algorithm leaves to
/// the XML rule). Leading whitespace and a byte order mark are skipped, as browsers do.
pub fn sniff_markup(head: &[u8]) -> Option<&'static str> {
    let view = ascii_view(head);
    let start = view
        .iter()
        .position(|b| !matches!(b, 0x09 | 0x0A | 0x0C | 0x0D | 0x20))?;
    let text = &view[start..];
    if starts_with_nocase(text, b"<svg") && has_svg_element(text) {
        return Some("image/svg+xml");
    }
    if starts_with_nocase(text, b"<?xml") || starts_with_nocase(text, b"<!DOCTYPE svg") {
        return Some(if has_svg_element(text) {
            "image/svg+xml"
        } else {
            "text/xml"
        });
    }
    let html = HTML_PATTERNS.iter().any(|pattern| {
        starts_with_nocase(text, pattern) && matches!(text.get(pattern.len()), Some(b' ' | b'>'))
    });
    if html {
        // An SVG file may open with a comment.
        if text.starts_with(b"<!--") && has_svg_element(text) {
            return Some("image/svg+xml");
        }
        return Some("text/html");
    }
    None
}

/// Whether markup sniffed as `sniffed` may be uploaded as `declared`: HTML as HTML or XHTML,
/// XML (SVG included) as any XML type.
fn markup_compatible(declared: &str, sniffed: &str) -> bool {
    let xml_type = |t: &str| matches!(t, "text/xml" | "application/xml") || t.ends_with("+xml");
    match sniffed {
        "text/html" => matches!(declared, "text/html" | "application/xhtml+xml"),
        "text/xml" | "image/svg+xml" => xml_type(declared),
        _ => false,
    }
}

/// Checks the first bytes of a file against its declared type: `Err` carries the type the
/// bytes were recognised as when it is another one. Markup (HTML, XML, SVG) is recognised
/// first, so it cannot pass as an image or anything else; bytes that are recognised as
/// nothing are accepted (plain text, CSV and many documents have no signature).
pub fn check_sniffed(declared: &str, head: &[u8]) -> Result<(), &'static str> {
    let sniffed = sniff_markup(head).or_else(|| infer::get(head).map(|found| found.mime_type()));
    match sniffed {
        Some(found) if !compatible(declared, found) && !markup_compatible(declared, found) => {
            Err(found)
        }
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
        assert!(compatible("application/octet-stream", "image/svg+xml"));
        assert!(!compatible("image/png", "application/zip"));
        assert!(!compatible("text/html", "image/png"));
    }

    #[test]
    fn markup_is_recognised_and_refused_under_other_names() {
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>"#;
        assert_eq!(sniff_markup(svg), Some("image/svg+xml"));
        assert_eq!(
            sniff_markup(b"\xEF\xBB\xBF\n <?xml version='1.0'?><!DOCTYPE svg><svg>"),
            Some("image/svg+xml")
        );
        assert_eq!(
            sniff_markup(b"<!-- made by hand --><svg\n>"),
            Some("image/svg+xml")
        );
        assert_eq!(sniff_markup(b"<?xml version='1.0'?><a/>"), Some("text/xml"));
        for html in [
            &b"<!DOCTYPE html><p>"[..],
            b"\t\r\n<HTML>",
            b"<script>alert(1)</script>",
            b"<a href=x>",
            b"<!-- x -->",
            b"<b>bold</b>",
        ] {
            assert_eq!(sniff_markup(html), Some("text/html"), "{html:?}");
        }
        // UTF-16, both byte orders.
        let utf16: Vec<u8> = "<html>".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(
            sniff_markup(&[&[0xFE, 0xFF][..], &utf16].concat()),
            Some("text/html")
        );
        let utf16: Vec<u8> = "<svg>".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(
            sniff_markup(&[&[0xFF, 0xFE][..], &utf16].concat()),
            Some("image/svg+xml")
        );
        // Not markup: a tag that needs a terminator, a tag inside text, other names.
        for text in [
            &b"<html"[..],
            b"<svgfoo>",
            b"use <svg> for icons",
            b"<abbr>",
            b"",
            b"   ",
            PNG,
        ] {
            assert_eq!(sniff_markup(text), None, "{text:?}");
        }
        // Refused under every other name, accepted as what they are.
        for declared in [
            "image/png",
            "image/jpeg",
            "image/svg",
            "video/mp4",
            "text/plain",
            "application/pdf",
        ] {
            assert_eq!(
                check_sniffed(declared, svg),
                Err("image/svg+xml"),
                "{declared}"
            );
            assert_eq!(
                check_sniffed(declared, b"<html>"),
                Err("text/html"),
                "{declared}"
            );
        }
        assert_eq!(check_sniffed("image/svg+xml", svg), Ok(()));
        assert_eq!(check_sniffed("application/xml", svg), Ok(()));
        assert_eq!(check_sniffed("text/html", b"<html>"), Ok(()));
        assert_eq!(check_sniffed("application/xhtml+xml", b"<html>"), Ok(()));
        assert_eq!(
            check_sniffed("application/rss+xml", b"<?xml version='1.0'?>"),
            Ok(())
        );
        assert_eq!(check_sniffed("application/octet-stream", svg), Ok(()));
        assert_eq!(check_sniffed("text/html", svg), Err("image/svg+xml"));
        // Never inline.
        for t in [
            "image/svg+xml",
            "text/html",
            "application/xhtml+xml",
            "text/xml",
            "image/x-foo+xml",
        ] {
            assert!(scriptable(t) && !inline(t), "{t}");
        }
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
