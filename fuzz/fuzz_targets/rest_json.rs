//! Fuzz target `rest_json`: a REST request body into each JSON body type of `src/api/` (what
//! actix-web's `Json` extractor does: `serde_json::from_slice`), a refusal into the node's
//! error answer (`chatnode::api::json_error`), and the bytes as a query string into each query
//! type (what `Query` does: `serde_urlencoded`).
//!
//! Contract checked: nothing panics; an accepted body is a JSON object whose keys are all
//! fields of its type (every body type denies unknown fields) or an array no longer than the
//! fields; a refused body is answered 400 with `{"error":{"code":"bad_request","message"}}`.
#![no_main]

use actix_web::body::MessageBody as _;
use actix_web::error::JsonPayloadError;
use chatnode::api::media::UploadQuery;
use chatnode::api::messages::{HistoryQuery, SendBody};
use chatnode::api::push::{DeviceBody, MuteBody};
use chatnode::api::rooms::{AddMemberBody, CreateRoom, JoinBody};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// Checks the answer to a refused body: 400 and the JSON error body with its code.
fn check_refusal(err: serde_json::Error) {
    let answer = chatnode::api::json_error(JsonPayloadError::Deserialize(err)).error_response();
    assert_eq!(answer.status().as_u16(), 400);
    let Ok(body) = answer.into_body().try_into_bytes() else {
        panic!("the error body is not in memory");
    };
    let value: serde_json::Value = serde_json::from_slice(&body).expect("the error body is JSON");
    assert_eq!(value["error"]["code"], "bad_request", "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{value}"
    );
}

/// Parses `data` as `T`: an accepted body has only `fields`, a refused one gets its answer.
fn body<T: DeserializeOwned>(data: &[u8], fields: &[&str]) {
    match serde_json::from_slice::<T>(data) {
        Err(err) => check_refusal(err),
        Ok(_) => match serde_json::from_slice(data).expect("an accepted body is valid JSON") {
            serde_json::Value::Object(object) => {
                for key in object.keys() {
                    assert!(
                        fields.contains(&key.as_str()),
                        "unknown field {key:?} accepted"
                    );
                }
            }
            serde_json::Value::Array(items) => assert!(items.len() <= fields.len()),
            other => panic!("accepted a body that is neither object nor array: {other}"),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    body::<CreateRoom>(
        data,
        &["room", "title", "kind", "members", "max", "password"],
    );
    body::<SendBody>(data, &["kind", "text", "media", "cmid", "from"]);
    body::<JoinBody>(data, &["password"]);
    body::<AddMemberBody>(data, &["user"]);
    body::<DeviceBody>(data, &["token", "platform"]);
    body::<MuteBody>(data, &["muted"]);
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = serde_urlencoded::from_str::<HistoryQuery>(query);
        let _ = serde_urlencoded::from_str::<UploadQuery>(query);
    }
});
