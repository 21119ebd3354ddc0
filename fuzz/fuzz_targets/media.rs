//! Fuzz target `media`: what an upload's headers and first bytes go through
//! (`chatnode::media::types`): the declared `Content-Type`, the sniffed head, the file name,
//! the `Content-Disposition` made from it, and a download's `Range` header.
//!
//! Input: a first line (the header value, also used as the name and the range) and then the
//! file's first bytes.
//!
//! Contract checked: nothing panics; an accepted type is a lower-case `type/subtype` of token
//! characters that parses to itself; bytes always pass as their own sniffed type and as
//! `application/octet-stream`; `Content-Disposition` is always a valid header value; a range
//! part lies inside the file.
#![no_main]

use actix_web::http::header::HeaderValue;
use chatnode::media::types::{
    RangeRequest, SNIFF_BYTES, check_name, check_sniffed, content_disposition, inline, kind_of,
    parse_content_type, parse_range,
};
use chatnode::protocol::MessageKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (line, head) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let head = &head[..head.len().min(SNIFF_BYTES)];
    let line = String::from_utf8_lossy(line);

    if let Ok(mime) = parse_content_type(&line) {
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
        let _ = check_sniffed(&mime, head);
    }
    if let Some(found) = infer::get(head) {
        assert_eq!(check_sniffed(found.mime_type(), head), Ok(()));
    }
    assert_eq!(check_sniffed("application/octet-stream", head), Ok(()));

    let name = check_name(&line).is_ok().then_some(&*line);
    for shown in [true, false] {
        let value = content_disposition(shown, name);
        assert!(value.is_ascii(), "{value:?}");
        assert!(
            HeaderValue::from_str(&value).is_ok(),
            "not a header value: {value:?}"
        );
    }

    let size = head.len() as u64;
    if let RangeRequest::Part { start, end } = parse_range(&line, size) {
        assert!(start <= end && end < size, "{start}..={end} of {size}");
    }
});
