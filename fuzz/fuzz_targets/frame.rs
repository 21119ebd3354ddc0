//! Fuzz target `frame`: a WebSocket frame's bytes into a client request
//! (`chatnode::protocol::decode_request`, PROTOCOL.md §3.1 and the limits of §3.4).
//!
//! Contract checked: decoding never panics; a refusal is one of the typed `err` codes a client
//! frame can earn; an accepted request obeys the limits (ids valid, `cmid` 1..=64 bytes, text
//! within the limit, page sizes 1..=200, required fields present) and, written back as a
//! frame, decodes to the same request.
#![no_main]

use chatnode::protocol::codec::{MAX_CMID, MAX_PAGE, request_r};
use chatnode::protocol::{ErrorCode, MessageKind, Request, decode_request};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;

/// A small text limit, so the fuzzer reaches `too_large` with short inputs.
const MAX_TEXT: usize = 256;

/// A request as a client writes it: only the fields it has.
#[derive(Serialize, Default)]
struct Frame<'a> {
    t: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

/// Writes a decoded request back as the frame a client would send for it.
fn reencode(request: &Request) -> Vec<u8> {
    let t = request.kind();
    let group = request.group().map(|g| g.as_str());
    let frame = match request {
        Request::Ping | Request::Sub { .. } | Request::Unsub { .. } => Frame {
            t,
            group,
            ..Frame::default()
        },
        Request::Enter {
            room, since, limit, ..
        } => Frame {
            t,
            group,
            room: Some(room.as_str()),
            since: *since,
            limit: Some(*limit as i64),
            ..Frame::default()
        },
        Request::Leave { room, .. } | Request::Typing { room, .. } => Frame {
            t,
            group,
            room: Some(room.as_str()),
            ..Frame::default()
        },
        Request::Send(send) => Frame {
            t,
            group,
            room: Some(send.room.as_str()),
            kind: Some(send.kind.as_str()),
            text: send.text.as_deref(),
            media: send.media.as_deref(),
            cmid: Some(&send.cmid),
            from: send.from.as_ref().map(|f| f.as_str()),
            ..Frame::default()
        },
        Request::Read { room, id, .. } | Request::Delete { room, id, .. } => Frame {
            t,
            group,
            room: Some(room.as_str()),
            id: Some(*id),
            ..Frame::default()
        },
        Request::History {
            room,
            before,
            limit,
            ..
        } => Frame {
            t,
            group,
            room: Some(room.as_str()),
            before: *before,
            limit: Some(*limit as i64),
            ..Frame::default()
        },
        Request::Edit { room, id, text, .. } => Frame {
            t,
            group,
            room: Some(room.as_str()),
            id: Some(*id),
            text: Some(text),
            ..Frame::default()
        },
    };
    rmp_serde::to_vec_named(&frame).expect("a request always encodes")
}

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
                send.text.as_ref().is_none_or(|t| t.len() <= MAX_TEXT),
                "text over the limit"
            );
            match send.kind {
                MessageKind::Text => assert!(send.text.as_ref().is_some_and(|t| !t.is_empty())),
                _ => assert!(send.media.as_ref().is_some_and(|m| !m.is_empty())),
            }
        }
        Request::Edit { text, .. } => assert!(!text.is_empty() && text.len() <= MAX_TEXT),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match decode_request(data, MAX_TEXT) {
        Ok(request) => {
            check_limits(&request);
            let again = reencode(&request);
            assert_eq!(
                decode_request(&again, MAX_TEXT).as_ref(),
                Ok(&request),
                "an accepted request does not round-trip"
            );
            // `r` of an accepted frame is what the reply carries.
            let _ = request_r(data);
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
            // A frame that is no map has no `r` to echo.
            if !matches!(data.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
                assert_eq!(err.r, None);
            }
        }
    }
});
