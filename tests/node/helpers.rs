//! Test harness: [`TestNode`] runs the real `chatnode` binary on a free port with its own data
//! directory; [`TestClient`] speaks the WebSocket contract with MessagePack frames; [`Rest`] calls
//! the HTTP API. Frames are written and read as `serde_json::Value` for readable assertions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const WAIT: Duration = Duration::from_secs(5);

/// A running node.
pub struct TestNode {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    /// With `CHATNODE_TEST_NODE_STORE=scylla`: this node's own keyspace, dropped with it.
    scylla: Option<chatnode::config::ScyllaSettings>,
}

/// The store every [`TestNode`] uses: `CHATNODE_TEST_NODE_STORE=scylla` runs the same node
/// tests on the CQL server named by `CHATNODE_TEST_SCYLLA` (scripts/test.sh runs the node tests
/// a second time so); otherwise the embedded store.
pub fn node_store_is_scylla() -> bool {
    std::env::var("CHATNODE_TEST_NODE_STORE").is_ok_and(|s| s == "scylla")
}

/// Migrates a fresh keyspace with `chatnode migrate`, as an operator would, and returns its
/// settings and the environment that points a node at it.
fn scylla_keyspace() -> (chatnode::config::ScyllaSettings, Vec<(String, String)>) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nodes = std::env::var("CHATNODE_TEST_SCYLLA")
        .expect("CHATNODE_TEST_NODE_STORE=scylla needs CHATNODE_TEST_SCYLLA (host:port)");
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let keyspace = format!("chatnode_node_{}_{n}", std::process::id());
    let env = vec![
        ("CHATNODE_STORE".to_owned(), "scylla".to_owned()),
        ("CHATNODE_SCYLLA_NODES".to_owned(), nodes.clone()),
        ("CHATNODE_SCYLLA_KEYSPACE".to_owned(), keyspace.clone()),
        ("CHATNODE_SCYLLA_REPLICATION".to_owned(), "1".to_owned()),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_chatnode"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run chatnode migrate");
    assert!(
        out.status.success(),
        "chatnode migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = chatnode::config::ScyllaSettings {
        nodes: Some(nodes),
        keyspace,
        replication: "1".into(),
        ..chatnode::config::ScyllaSettings::default()
    };
    (settings, env)
}

impl TestNode {
    /// Starts a node with the test secret and generous rate limits, plus `env`.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().to_path_buf();
        let (scylla, mut env_all) = if node_store_is_scylla() {
            let (settings, env) = scylla_keyspace();
            (Some(settings), env)
        } else {
            (None, Vec::new())
        };
        // The test's own variables come last, so a test may still override the store.
        env_all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = env_all;
        let mut node = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            child: None,
            _temp: Some(temp),
            env,
            scylla,
        };
        node.start();
        node
    }

    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatnode"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CHATNODE_LISTEN", "127.0.0.1:0")
            .env("CHATNODE_DATA_DIR", &self.data_dir)
            .env("CHATNODE_AUTH_SECRET", SECRET)
            .env("CHATNODE_LIMIT_RATE", "1000")
            .env("CHATNODE_LIMIT_BURST", "2000")
            .env("CHATNODE_WORKERS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start chatnode");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the node printed its address")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("chatnode listening on http://") {
                break rest.parse().expect("an address");
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.addr = addr;
        self.child = Some(child);
    }

    /// The keyspace this node runs on with `CHATNODE_TEST_NODE_STORE=scylla`.
    pub fn scylla_settings(&self) -> Option<&chatnode::config::ScyllaSettings> {
        self.scylla.as_ref()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node with SIGKILL (no drain, no flush) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the node");
            child.wait().expect("wait for the killed node");
        }
    }

    /// Stops the node (SIGTERM) and starts it again on the same data directory.
    /// (If it is still running.)
    pub fn restart(&mut self) {
        if self.child.is_some() {
            assert_eq!(self.terminate(), Some(0), "clean exit");
        }
        self.start();
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn rest(&self, token: &str) -> Rest {
        Rest {
            base: format!("http://{}", self.addr),
            token: token.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn connect(&self, user: &str) -> TestClient {
        TestClient::connect(self, &token(user)).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Drop the node's keyspace, so a run does not pile up tables on the shared server.
        // On a thread with its own runtime: the test's runtime may be the one dropping us.
        if let Some(settings) = self.scylla.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime
                    .block_on(chatnode::store::scylla::drop_keyspace(&settings))
                    .ok()
            })
            .join();
        }
    }
}

/// A token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    chatnode::auth::mint(SECRET.as_bytes(), user, Some(user), 3600, false, None).expect("mint")
}

pub fn service_token(user: &str) -> String {
    chatnode::auth::mint(SECRET.as_bytes(), user, None, 3600, true, None).expect("mint")
}

pub fn token_with(user: &str, ttl: u64, groups: Option<Vec<String>>) -> String {
    chatnode::auth::mint(SECRET.as_bytes(), user, None, ttl, false, groups).expect("mint")
}

/// The REST API with one caller's token.
pub struct Rest {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Rest {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a `group` room owned by this caller with `members`.
    pub async fn create_room(&self, group: &str, room: &str, members: &[&str]) {
        let (status, body) = self
            .post(
                &format!("/v1/groups/{group}/rooms"),
                json!({"room": room, "title": room, "kind": "group", "members": members}),
            )
            .await;
        assert_eq!(status, 201, "create room: {body}");
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking MessagePack frames.
pub struct TestClient {
    pub ws: Ws,
    pub hello: Value,
    next_r: u32,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    NoCode,
}

impl TestClient {
    pub async fn connect(node: &TestNode, token: &str) -> Self {
        let mut request = node.ws_url().into_client_request().expect("request");
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connect");
        let mut client = Self {
            ws,
            hello: Value::Null,
            next_r: 1,
        };
        client.hello = client.recv().await;
        assert_eq!(client.hello["t"], "hello");
        client
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a frame as given.
    pub async fn send(&mut self, frame: Value) {
        let bytes = rmp_serde::to_vec_named(&frame).expect("encode");
        self.send_raw(Message::Binary(bytes.into())).await;
    }

    /// Sends a frame with a fresh `r` and returns the `r`.
    pub async fn request(&mut self, mut frame: Value) -> u32 {
        let r = self.next_r;
        self.next_r += 1;
        frame["r"] = json!(r);
        self.send(frame).await;
        r
    }

    /// Sends a request and waits for the frame that answers it (skipping events).
    pub async fn call(&mut self, frame: Value) -> Value {
        let r = self.request(frame).await;
        loop {
            let reply = self.recv().await;
            if reply["r"] == json!(r) {
                return reply;
            }
        }
    }

    /// The next frame (panics after [`WAIT`]).
    pub async fn recv(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.next_frame()).await {
            Ok(Ok(value)) => value,
            Ok(Err(closed)) => panic!("connection closed: {closed:?}"),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next frame of type `t`, skipping others.
    pub async fn recv_type(&mut self, t: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["t"] == t {
                return frame;
            }
        }
    }

    /// Asserts that no frame other than those in `ignore` arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration, ignore: &[&str]) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => return,
                Ok(Ok(frame)) => {
                    let t = frame["t"].as_str().unwrap_or_default();
                    assert!(ignore.contains(&t), "unexpected frame {frame}");
                }
                Ok(Err(closed)) => panic!("connection closed: {closed:?}"),
            }
        }
    }

    /// The next frame, or how the connection ended (a killed node ends it without a code).
    pub async fn next_frame(&mut self) -> Result<Value, Closed> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    return Ok(rmp_serde::from_slice(&bytes).expect("a MessagePack frame"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame
                        .map(|f: CloseFrame| Closed::Code(u16::from(f.code)))
                        .unwrap_or(Closed::NoCode));
                }
                Some(Ok(Message::Text(text))) => panic!("text frame from the server: {text}"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Closed::NoCode),
            }
        }
    }

    /// Reads until the connection closes; returns how (frames before it are skipped).
    pub async fn closed(&mut self, within: Duration) -> Closed {
        tokio::time::timeout(within, async {
            loop {
                if let Err(closed) = self.next_frame().await {
                    return closed;
                }
            }
        })
        .await
        .expect("the connection closed in time")
    }

    pub async fn enter(&mut self, group: &str, room: &str) -> Value {
        let reply = self
            .call(json!({"t": "enter", "group": group, "room": room}))
            .await;
        assert_eq!(reply["t"], "entered", "enter: {reply}");
        reply
    }

    pub async fn say(&mut self, group: &str, room: &str, text: &str, cmid: &str) -> Value {
        let reply = self
            .call(json!({"t": "send", "group": group, "room": room, "kind": "text", "text": text, "cmid": cmid}))
            .await;
        assert_eq!(reply["t"], "sent", "send: {reply}");
        reply
    }
}
