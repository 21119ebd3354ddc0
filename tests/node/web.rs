//! The chat page as HTTP sees it: the built-in files with their headers and ETags, the
//! page's config, and the dev login (off by default; on, it mints tokens the node accepts). The
//! page's behaviour in a browser is tested by `web/e2e/` in headless Chromium.

use serde_json::json;

use crate::helpers::{TestClient, TestNode};

/// `GET /v1/web/config`, which needs no token.
async fn page_config(node: &TestNode) -> serde_json::Value {
    reqwest::get(node.http("/v1/web/config"))
        .await
        .expect("config")
        .json()
        .await
        .expect("json")
}

/// `POST /v1/dev/login` with `body`.
async fn dev_login(node: &TestNode, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(node.http("/v1/dev/login"))
        .json(&body)
        .send()
        .await
        .expect("login")
}

#[tokio::test]
async fn serves_the_page_with_security_headers_and_etags() {
    let node = TestNode::spawn(&[]);
    let client = reqwest::Client::new();
    let resp = client.get(node.http("/")).send().await.expect("get /");
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let html = resp.text().await.expect("body");
    assert!(
        html.contains("<script src=\"/app.js\""),
        "the page loads its script"
    );

    // A cached copy is revalidated with 304 and no body.
    let again = client
        .get(node.http("/"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.expect("body").is_empty());

    for (path, content_type) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/vendor/msgpack.min.js", "text/javascript; charset=utf-8"),
        ("/icon.svg", "image/svg+xml"),
    ] {
        let resp = client.get(node.http(path)).send().await.expect("asset");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], content_type, "{path}");
        assert!(!resp.bytes().await.expect("body").is_empty(), "{path}");
    }
    let missing = client.get(node.http("/app.jsx")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_page_can_be_turned_off() {
    let node = TestNode::spawn(&[("CHATNODE_WEB_ENABLED", "false")]);
    let resp = reqwest::get(node.http("/")).await.expect("get /");
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn dev_login_is_off_by_default() {
    let node = TestNode::spawn(&[]);
    assert_eq!(page_config(&node).await, json!({"dev_login": false}));
    let resp = dev_login(&node, json!({"user": "mallory"})).await;
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn dev_login_mints_tokens_the_node_accepts() {
    let node = TestNode::spawn(&[("CHATNODE_WEB_DEV_LOGIN", "true")]);
    assert_eq!(page_config(&node).await, json!({"dev_login": true}));
    let resp = dev_login(&node, json!({"user": "dana"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["user"], "dana");
    let token = body["token"].as_str().expect("token").to_owned();

    // The token works on REST and on the WebSocket.
    let (status, _) = node.rest(&token).get("/v1/groups/demo/rooms").await;
    assert_eq!(status, 200);
    let ws = TestClient::connect(&node, &token).await;
    assert_eq!(ws.hello["user"], "dana");

    // Bad input is refused with a code.
    for bad in [
        json!({"user": ""}),
        json!({"user": "x".repeat(65)}),
        json!({"name": "no user"}),
        json!({"user": "a", "role": "service"}),
    ] {
        let resp = dev_login(&node, bad.clone()).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
    }
}
