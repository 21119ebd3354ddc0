//! Fuzz target `media`: what an upload's headers and first bytes go through
//! (`chatnode::media::types`): the declared `Content-Type`, the sniffed head, the file name,
//! the `Content-Disposition` made from it, and a download's `Range` header.
//!
//! Input: three lines (the `Content-Type`, the file name, the `Range` header), then the file's
//! first bytes (at most `SNIFF_BYTES` of them are sniffed, as in an upload).
//!
//! Contract checked: nothing panics; an accepted type is a lower-case `type/subtype` of token
//! characters that parses to itself; markup is never accepted as a type served inline (the
//! raster images above all) and nothing served inline is markup; bytes pass as their own
//! sniffed type and as `application/octet-stream`; `Content-Disposition` is always a valid
//! header value; a range part lies inside the file.
#![no_main]

use actix_web::http::header::HeaderValue;
use chatnode::media::types::{
    RangeRequest, SNIFF_BYTES, check_name, check_sniffed, content_disposition, inline, kind_of,
    parse_content_type, parse_range, sniff_markup, thumbnailable,
};
use chatnode::protocol::MessageKind;
use chatnode_fuzz::lines;
use libfuzzer_sys::fuzz_target;

/// Types a browser shows in place as pictures: markup must never pass as one of them.
const RASTER: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/jpg",
];

fuzz_target!(|data: &[u8]| {
    let ([content_type, name, range], head) = lines::<3>(data);
    let head = &head[..head.len().min(SNIFF_BYTES)];
    let (content_type, name, range) = (
        String::from_utf8_lossy(content_type),
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(range),
    );
    let markup = sniff_markup(head);

    if let Ok(mime) = parse_content_type(&content_type) {
        assert!(mime.len() <= 127);
        assert_eq!(mime, mime.to_ascii_lowercase());
        assert_eq!(mime.matches('/').count(), 1, "{mime:?}");
        assert!(
            !mime.contains(|c: char| c.is_whitespace() || c == ';'),
            "{mime:?}"
        );
        assert_eq!(parse_content_type(&mime).as_deref(), Ok(mime.as_str()));
        if inline(&mime) {
            assert!(matches!(
                kind_of(&mime),
                MessageKind::Image | MessageKind::Video
            ));
        }
        if thumbnailable(&mime) {
            assert!(inline(&mime), "{mime} is thumbnailed but not shown inline");
        }
        if check_sniffed(&mime, head).is_ok() && inline(&mime) {
            assert_eq!(
                markup, None,
                "markup accepted as {mime}, which is served inline"
            );
        }
    }
    if let Some(found) = markup {
        for raster in RASTER {
            assert!(
                check_sniffed(raster, head).is_err(),
                "{found} accepted as {raster}"
            );
        }
        assert!(!inline(found), "markup {found} is served inline");
    } else if let Some(found) = infer::get(head) {
        assert_eq!(check_sniffed(found.mime_type(), head), Ok(()));
    }
    assert_eq!(check_sniffed("application/octet-stream", head), Ok(()));

    let name = check_name(&name).is_ok().then_some(&*name);
    for shown in [true, false] {
        let value = content_disposition(shown, name);
        assert!(value.is_ascii(), "{value:?}");
        assert!(
            HeaderValue::from_str(&value).is_ok(),
            "not a header value: {value:?}"
        );
    }

    let size = head.len() as u64;
    if let RangeRequest::Part { start, end } = parse_range(&range, size) {
        assert!(start <= end && end < size, "{start}..={end} of {size}");
    }
});
