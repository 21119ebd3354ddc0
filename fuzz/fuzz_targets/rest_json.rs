//! Fuzz target `rest_json`: a REST request body into each JSON body type of `src/api/` (what
//! actix-web's `Json` extractor does: `serde_json::from_slice`), and a query string into each
//! query type (what `Query` does: `serde_urlencoded`).
//!
//! Contract checked: parsing never panics; a body that is accepted is a JSON object whose keys
//! are all fields of its type (every body type denies unknown fields), with no key twice.
#![no_main]

use chatnode::api::media::UploadQuery;
use chatnode::api::messages::{HistoryQuery, SendBody};
use chatnode::api::push::{DeviceBody, MuteBody};
use chatnode::api::rooms::{AddMemberBody, CreateRoom, JoinBody};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// Parses `data` as `T`; when it is accepted, checks its keys against `fields`.
fn body<T: DeserializeOwned>(data: &[u8], fields: &[&str]) {
    if serde_json::from_slice::<T>(data).is_err() {
        return;
    }
    let value: serde_json::Value =
        serde_json::from_slice(data).expect("an accepted body is valid JSON");
    match value {
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
