//! Fuzz target `frame`: a WebSocket binary message's bytes into a client request, as the
//! session does it (`chatnode::protocol::decode_request` for the request, `codec::request_r`
//! for the `r` a reply carries; PROTOCOL.md §3.1 and the limits of §3.4). Text messages are
//! refused whole by the session (`bad_frame`), so there is no text path to parse.
//!
//! Contract checked: decoding never panics; a refusal is one of the typed `err` codes a client
//! frame can earn, with a message, and names the same `r` the reply path reads; an accepted
//! request obeys the limits (`cmid` 1..=64 bytes, text within the limit and present for text
//! messages, media for the others, page sizes 1..=200) and, written back as a client frame,
//! decodes to the same request with the same `r`.
#![no_main]

use chatnode::protocol::codec::{MAX_CMID, MAX_PAGE, request_r};
use chatnode::protocol::{ErrorCode, MessageKind, Request, decode_request};
use chatnode_fuzz::{FRAME_MAX_TEXT, frame_of};
use libfuzzer_sys::fuzz_target;

/// The limits every accepted request obeys.
fn check_limits(request: &Request) {
    match request {
        Request::Enter { limit, .. } | Request::History { limit, .. } => {
            assert!((1..=MAX_PAGE).contains(limit), "page size {limit}");
        }
        Request::Send(send) => {
            assert!(
                (1..=MAX_CMID).contains(&send.cmid.len()),
                "cmid of {} bytes",
                send.cmid.len()
            );
            assert!(
                send.text.as_ref().is_none_or(|t| t.len() <= FRAME_MAX_TEXT),
                "text over the limit"
            );
            match send.kind {
                MessageKind::Text => assert!(send.text.as_ref().is_some_and(|t| !t.is_empty())),
                _ => assert!(send.media.as_ref().is_some_and(|m| !m.is_empty())),
            }
        }
        Request::Edit { text, .. } => {
            assert!(!text.is_empty() && text.len() <= FRAME_MAX_TEXT);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let is_map = matches!(data.first(), Some(0x80..=0x8f | 0xde | 0xdf));
    match decode_request(data, FRAME_MAX_TEXT) {
        Ok(request) => {
            assert!(is_map, "accepted a frame that is no map");
            check_limits(&request);
            let r = request_r(data);
            let again = frame_of(&request, r);
            assert_eq!(
                decode_request(&again, FRAME_MAX_TEXT).as_ref(),
                Ok(&request),
                "an accepted request does not round-trip"
            );
            assert_eq!(request_r(&again), r, "the `r` does not round-trip");
        }
        Err(err) => {
            assert!(
                matches!(
                    err.code,
                    ErrorCode::BadFrame
                        | ErrorCode::BadRequest
                        | ErrorCode::UnknownType
                        | ErrorCode::TooLarge
                ),
                "unexpected code {:?}",
                err.code
            );
            assert!(!err.message.is_empty());
            if is_map {
                assert_eq!(err.r, request_r(data), "the err names another `r`");
            } else {
                assert_eq!(err.r, None, "a frame that is no map has no `r`");
            }
        }
    }
});
