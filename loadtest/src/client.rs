//! One simulated mobile client: a WebSocket from a chosen loopback source address, `hello`,
//! `enter` for its rooms, then a loop that reads every frame (recording latency, loss and
//! duplicates), sends when its plan or the orchestrator says so, and, in the mixed scenario,
//! disconnects on request and reconnects with `enter ... since <last id seen>` to recover what
//! it missed. Its counters are shared; its per-room tallies come back when it ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::accounting::{Seen, Tally};
use crate::payload;
use crate::scenario::Rate;
use crate::stats::{Phase, Stats, inc};
use crate::wire;

type Ws = WebSocketStream<TcpStream>;

/// How long a client about to disconnect waits for its unacknowledged sends.
const CHURN_ACK_WAIT: Duration = Duration::from_secs(5);
/// How long a close handshake may take at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Reconnect attempts in a row before a reconnecting client gives up.
const RECONNECT_ATTEMPTS: u32 = 10;
/// Messages per recovery `enter` (the contract's maximum page).
const RECOVERY_LIMIT: u32 = 200;

/// A node to connect to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port` for the request line.
    pub authority: String,
}

/// What the orchestrator counts on, per room.
#[derive(Default)]
pub struct RoomLedger {
    pub name: Arc<str>,
    /// Messages the room acknowledged (`sent`).
    pub acked: AtomicU64,
    /// Clients that entered the room at least once.
    pub receivers: AtomicU64,
}

impl RoomLedger {
    pub fn new(name: String) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// What every client shares.
pub struct Shared {
    pub stats: Arc<Stats>,
    pub group: String,
    pub endpoints: Vec<Endpoint>,
    /// Spread over 127.0.0.1..127.0.0.N (loopback targets only).
    pub source_addrs: Option<u8>,
    pub payload: usize,
    pub rooms: Vec<RoomLedger>,
    pub connect_slots: Semaphore,
    pub phase: watch::Receiver<Phase>,
    pub reconnect_delay: Duration,
    pub ws_config: WebSocketConfig,
    /// How long a TCP connect, a handshake, a `hello` or an `entered` may take.
    pub step_timeout: Duration,
}

/// A client's own sending plan (fanout senders).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoSend {
    /// Index into the client's rooms.
    pub slot: usize,
    pub rate: Rate,
    pub window: usize,
    /// Delay of the first tick, so senders do not all send at once.
    pub offset: Duration,
}

/// What the orchestrator may ask of a client.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    /// Send one message to the client's room `slot`, stamped with `seq`.
    Send { slot: usize, seq: Option<u64> },
    /// Disconnect, wait, reconnect and recover.
    Churn,
}

pub struct ClientSpec {
    pub index: usize,
    pub token: String,
    /// Ledger indexes of the client's rooms.
    pub rooms: Vec<usize>,
    /// Whether the client enters its rooms (a publisher only sends).
    pub enter: bool,
    pub auto_send: Option<AutoSend>,
    /// Reconnect and recover when dropped or churned (mixed).
    pub reconnect: bool,
    pub commands: Option<mpsc::Receiver<Command>>,
}

/// What a client saw, returned when it ends.
pub struct ClientOutcome {
    /// (ledger index, tally) for each room the client entered at least once.
    pub tallies: Vec<(usize, Tally)>,
    pub connected: bool,
}

/// The loopback source address of connection `index`.
pub fn source_ip(index: usize, addrs: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + (index % usize::from(addrs.max(1))) as u8)
}

async fn connect(shared: &Shared, index: usize, token: &str) -> anyhow::Result<Ws> {
    let endpoint = &shared.endpoints[index % shared.endpoints.len()];
    let _permit = shared
        .connect_slots
        .acquire()
        .await
        .map_err(|_| anyhow!("the run is over"))?;
    let socket = match endpoint.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("creating a socket")?;
    if let (Some(addrs), SocketAddr::V4(_)) = (shared.source_addrs, endpoint.addr) {
        let source = SocketAddr::new(IpAddr::V4(source_ip(index, addrs)), 0);
        socket
            .bind(source)
            .with_context(|| format!("binding to {source}"))?;
    }
    let stream = tokio::time::timeout(shared.step_timeout, socket.connect(endpoint.addr))
        .await
        .map_err(|_| anyhow!("TCP connect to {} timed out", endpoint.addr))?
        .with_context(|| format!("TCP connect to {}", endpoint.addr))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut request = format!("ws://{}/v1/ws", endpoint.authority)
        .into_client_request()
        .context("building the upgrade request")?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).context("token header")?,
    );
    let (ws, _) = tokio::time::timeout(
        shared.step_timeout,
        tokio_tungstenite::client_async_with_config(request, stream, Some(shared.ws_config)),
    )
    .await
    .map_err(|_| anyhow!("WebSocket handshake timed out"))?
    .context("WebSocket handshake")?;
    Ok(ws)
}

/// How one connection ended.
enum Ending {
    /// The run is over.
    Stopped,
    /// Asked to disconnect (mixed churn).
    Churned,
    /// Closed by the server or broken, unasked.
    Dropped(String),
}

struct Client {
    shared: Arc<Shared>,
    spec: ClientSpec,
    tallies: Vec<Tally>,
    ever_entered: Vec<bool>,
    /// Unacknowledged sends: r → (send time, slot).
    outstanding: HashMap<u32, (u64, usize)>,
    next_r: u32,
    cmid_counter: u64,
    seq: u64,
    phase: watch::Receiver<Phase>,
}

/// Runs a client until the run stops (or it cannot connect); never panics on what it reads.
pub async fn run(shared: Arc<Shared>, spec: ClientSpec) -> ClientOutcome {
    let rooms = spec.rooms.len();
    let phase = shared.phase.clone();
    let mut client = Client {
        shared,
        spec,
        tallies: vec![Tally::default(); rooms],
        ever_entered: vec![false; rooms],
        outstanding: HashMap::new(),
        next_r: 0,
        cmid_counter: 0,
        seq: 0,
        phase,
    };
    let connected = client.run().await;
    client
        .stats()
        .counters
        .unanswered
        .fetch_add(client.outstanding.len() as u64, Ordering::Relaxed);
    let tallies = client
        .spec
        .rooms
        .iter()
        .zip(client.tallies)
        .zip(client.ever_entered)
        .filter(|(_, entered)| *entered)
        .map(|((room, tally), _)| (*room, tally))
        .collect();
    ClientOutcome { tallies, connected }
}

impl Client {
    fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    fn r(&mut self) -> u32 {
        self.next_r = self.next_r.wrapping_add(1).max(1);
        self.next_r
    }

    /// The reconnect loop. Returns whether the client ever got into its rooms.
    async fn run(&mut self) -> bool {
        let mut ever = false;
        let mut failures = 0;
        loop {
            if *self.phase.borrow() == Phase::Stop {
                return ever;
            }
            let ws = match connect(&self.shared, self.spec.index, &self.spec.token).await {
                Ok(ws) => ws,
                Err(e) => {
                    failures += 1;
                    if !ever || !self.spec.reconnect || failures >= RECONNECT_ATTEMPTS {
                        if !ever {
                            inc(&self.stats().counters.connect_failed);
                        }
                        self.stats().count_close(format!("connect failed: {e:#}"));
                        return ever;
                    }
                    tokio::time::sleep(self.shared.reconnect_delay * failures).await;
                    continue;
                }
            };
            failures = 0;
            let (ending, entered) = self.session(ws, ever).await;
            if entered && !ever {
                ever = true;
            }
            match ending {
                Ending::Stopped => return ever,
                Ending::Churned => {
                    tokio::time::sleep(self.shared.reconnect_delay).await;
                    inc(&self.stats().counters.reconnects);
                }
                Ending::Dropped(reason) => {
                    self.stats().count_close(reason);
                    if !ever {
                        inc(&self.stats().counters.connect_failed);
                        return false;
                    }
                    if !self.spec.reconnect {
                        return ever;
                    }
                    tokio::time::sleep(self.shared.reconnect_delay).await;
                    inc(&self.stats().counters.reconnects);
                }
            }
            // Sends in flight on a connection that is gone will never be answered.
            self.stats()
                .counters
                .unanswered
                .fetch_add(self.outstanding.len() as u64, Ordering::Relaxed);
            self.outstanding.clear();
        }
    }

    /// One connection, from `hello` to its end. Returns how it ended and whether it entered
    /// all its rooms.
    async fn session(&mut self, mut ws: Ws, reconnected: bool) -> (Ending, bool) {
        match self.hello(&mut ws).await {
            Ok(()) => {}
            Err(e) => return (Ending::Dropped(format!("{e:#}")), false),
        }
        // Enter every room at once; the replies come back by `r`.
        let mut entering: HashMap<u32, usize> = HashMap::new();
        if self.spec.enter {
            for slot in 0..self.spec.rooms.len() {
                let since = reconnected.then_some(self.tallies[slot].last);
                if let Err(e) = self.send_enter(&mut ws, slot, since, &mut entering).await {
                    return (Ending::Dropped(e), false);
                }
            }
        }
        let mut entered_all = entering.is_empty();
        if entered_all {
            self.on_entered_all(reconnected);
        }
        let enter_deadline = Instant::now() + self.shared.step_timeout;

        let auto = self.spec.auto_send;
        let mut ticker = auto.and_then(|a| match a.rate {
            Rate::PerSecond(r) => {
                let period = Duration::from_secs_f64(1.0 / r);
                let mut t = tokio::time::interval_at(Instant::now() + a.offset, period);
                t.set_missed_tick_behavior(MissedTickBehavior::Burst);
                Some(t)
            }
            Rate::Max => None,
        });
        let max_window = auto.and_then(|a| matches!(a.rate, Rate::Max).then_some(a.window));
        let mut churning: Option<Instant> = None;
        let mut commands = self.spec.commands.take();
        let mut was_sending = false;
        let ending = loop {
            let phase = *self.phase.borrow_and_update();
            if phase == Phase::Stop {
                break Ending::Stopped;
            }
            let sending = phase.sending() && entered_all && churning.is_none();
            if sending
                && !was_sending
                && let (Some(t), Some(a)) = (ticker.as_mut(), auto)
            {
                // Ticks missed before sending began must not come out as one burst.
                t.reset_at(Instant::now() + a.offset);
            }
            was_sending = sending;
            if let (Some(window), true) = (max_window, sending) {
                let slot = auto.map_or(0, |a| a.slot);
                let mut failed = None;
                while self.outstanding.len() < window {
                    if let Err(e) = self.send_message(&mut ws, slot, None).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    break Ending::Dropped(e);
                }
            }
            if let Some(since) = churning
                && (self.outstanding.is_empty() || since.elapsed() >= CHURN_ACK_WAIT)
            {
                break Ending::Churned;
            }
            tokio::select! {
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        break Ending::Stopped;
                    }
                }
                frame = ws.next() => {
                    match frame {
                        Some(Ok(Message::Binary(bytes))) => {
                            match self.on_frame(&mut ws, &bytes, &mut entering, reconnected).await {
                                Ok(true) if !entered_all => {
                                    entered_all = true;
                                    self.on_entered_all(reconnected);
                                }
                                Ok(_) => {}
                                Err(e) => break Ending::Dropped(e),
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let reason = frame.map_or_else(
                                || "closed by the server without a code".to_owned(),
                                |f| format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                            );
                            break Ending::Dropped(reason);
                        }
                        Some(Ok(Message::Text(_))) => inc(&self.stats().counters.undecodable),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Ending::Dropped(format!("socket error: {e}")),
                        None => break Ending::Dropped("socket closed by the server".to_owned()),
                    }
                }
                command = async {
                    match commands.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match command {
                        Some(Command::Send { slot, seq }) => {
                            if (entered_all || !self.spec.enter) && churning.is_none() {
                                if let Err(e) = self.send_message(&mut ws, slot, seq).await {
                                    break Ending::Dropped(e);
                                }
                            } else {
                                inc(&self.stats().counters.skipped);
                            }
                        }
                        Some(Command::Churn) => {
                            if churning.is_none() {
                                churning = Some(Instant::now());
                            }
                        }
                        None => commands = None,
                    }
                }
                _ = async {
                    match ticker.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                }, if sending => {
                    let window = auto.map_or(usize::MAX, |a| a.window);
                    if self.outstanding.len() >= window {
                        inc(&self.stats().counters.skipped);
                    } else {
                        let slot = auto.map_or(0, |a| a.slot);
                        if let Err(e) = self.send_message(&mut ws, slot, None).await {
                            break Ending::Dropped(e);
                        }
                    }
                }
                _ = tokio::time::sleep_until(enter_deadline), if !entered_all => {
                    break Ending::Dropped("no `entered` in time (--step-timeout)".to_owned());
                }
                _ = tokio::time::sleep(Duration::from_millis(100)), if churning.is_some() => {}
            }
        };
        self.spec.commands = commands;
        if entered_all {
            self.stats().counters.open.fetch_sub(1, Ordering::Relaxed);
        }
        if matches!(ending, Ending::Stopped | Ending::Churned) {
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
        (ending, entered_all)
    }

    fn on_entered_all(&mut self, reconnected: bool) {
        let counters = &self.shared.stats.counters;
        counters.open.fetch_add(1, Ordering::Relaxed);
        if !reconnected {
            inc(&counters.connected);
        }
    }

    async fn hello(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let first = tokio::time::timeout(self.shared.step_timeout, ws.next())
            .await
            .map_err(|_| anyhow!("no `hello` in time (--step-timeout)"))?;
        let bytes = match first {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(other)) => bail!("the first frame was not a binary `hello`: {other:?}"),
            Some(Err(e)) => bail!("socket error before `hello`: {e}"),
            None => bail!("closed before `hello`"),
        };
        let frame = wire::decode(&bytes).context("undecodable first frame")?;
        if frame.t != "hello" {
            bail!("the first frame was `{}`, not `hello`", frame.t);
        }
        if let Some(limits) = frame.limits {
            self.stats().note_hello_rate(limits.rate);
        }
        Ok(())
    }

    async fn send_enter(
        &mut self,
        ws: &mut Ws,
        slot: usize,
        since: Option<u64>,
        entering: &mut HashMap<u32, usize>,
    ) -> Result<(), String> {
        let r = self.r();
        let room = &self.shared.rooms[self.spec.rooms[slot]].name;
        let limit = if since.is_some() { RECOVERY_LIMIT } else { 1 };
        let bytes = wire::enter(r, &self.shared.group, room, since, limit);
        ws.send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| format!("socket error on enter: {e}"))?;
        entering.insert(r, slot);
        Ok(())
    }

    /// Sends one stamped message; `seq` numbers it (burst), or the client's own count does.
    async fn send_message(
        &mut self,
        ws: &mut Ws,
        slot: usize,
        seq: Option<u64>,
    ) -> Result<(), String> {
        let r = self.r();
        self.cmid_counter += 1;
        let cmid = format!("c{}", self.cmid_counter);
        let now = payload::now_ns();
        let seq = seq.unwrap_or_else(|| {
            self.seq += 1;
            self.seq
        });
        let text = payload::encode(now, seq, self.shared.payload);
        let room = &self.shared.rooms[self.spec.rooms[slot]].name;
        let bytes = wire::send_text(r, &self.shared.group, room, &text, &cmid);
        ws.send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| format!("socket error on send: {e}"))?;
        self.outstanding.insert(r, (now, slot));
        let stats = &self.shared.stats;
        inc(&stats.counters.sent);
        if stats.in_window(now) {
            inc(&stats.counters.measured_sent);
        }
        if let Some(b) = usize::try_from(seq).ok().and_then(|s| stats.bursts.get(s)) {
            b.send_ns.store(now, Ordering::Relaxed);
        }
        Ok(())
    }

    fn slot_of(&self, room: &str) -> Option<usize> {
        self.spec
            .rooms
            .iter()
            .position(|&i| &*self.shared.rooms[i].name == room)
    }

    /// Handles one frame. `Ok(true)` when it was the last `entered` this session waited for.
    async fn on_frame(
        &mut self,
        ws: &mut Ws,
        bytes: &[u8],
        entering: &mut HashMap<u32, usize>,
        reconnected: bool,
    ) -> Result<bool, String> {
        let now = payload::now_ns();
        inc(&self.stats().counters.frames_in);
        let Ok(frame) = wire::decode(bytes) else {
            inc(&self.stats().counters.undecodable);
            return Ok(false);
        };
        match frame.t {
            "msg" => {
                let (Some(id), Some(slot)) = (frame.id, frame.room.and_then(|r| self.slot_of(r)))
                else {
                    inc(&self.stats().counters.undecodable);
                    return Ok(false);
                };
                self.on_msg(slot, id, frame.text, now, false);
            }
            "sent" => {
                let Some((send_ns, slot)) = frame.r.and_then(|r| self.outstanding.remove(&r))
                else {
                    return Ok(false);
                };
                let stats = &self.shared.stats;
                inc(&stats.counters.acked);
                self.shared.rooms[self.spec.rooms[slot]]
                    .acked
                    .fetch_add(1, Ordering::Relaxed);
                if stats.in_window(send_ns) {
                    stats.record_ack(self.spec.index, now.saturating_sub(send_ns));
                }
            }
            "entered" => {
                let Some(slot) = frame.r.and_then(|r| entering.remove(&r)) else {
                    return Ok(false);
                };
                if reconnected {
                    for m in frame.msgs.iter().flatten() {
                        self.on_msg(slot, m.id, m.text, now, true);
                    }
                    if frame.more == Some(true) {
                        // More were missed than one page holds: page on from the last one.
                        let since = Some(self.tallies[slot].last);
                        self.send_enter(ws, slot, since, entering).await?;
                        return Ok(false);
                    }
                }
                if !self.ever_entered[slot] {
                    self.ever_entered[slot] = true;
                    self.shared.rooms[self.spec.rooms[slot]]
                        .receivers
                        .fetch_add(1, Ordering::Relaxed);
                }
                return Ok(entering.is_empty());
            }
            "err" => {
                let code = frame.code.unwrap_or("?");
                self.stats().count_error(code);
                if let Some(r) = frame.r {
                    if self.outstanding.remove(&r).is_some() {
                        inc(&self.stats().counters.send_failed);
                    } else if let Some(slot) = entering.remove(&r) {
                        let room = &self.shared.rooms[self.spec.rooms[slot]].name;
                        return Err(format!(
                            "enter {room} refused: {code} {}",
                            frame.message.unwrap_or("")
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(false)
    }

    fn on_msg(&mut self, slot: usize, id: u64, text: Option<&str>, now: u64, recovered: bool) {
        let seen = self.tallies[slot].observe(id);
        let stats = &self.shared.stats;
        if !recovered {
            inc(&stats.counters.deliveries);
        }
        if seen == Seen::Duplicate {
            return;
        }
        inc(&stats.counters.unique);
        if recovered {
            inc(&stats.counters.recovered);
            return;
        }
        let Some(stamp) = text.and_then(payload::decode) else {
            return;
        };
        if stats.in_window(stamp.send_ns) {
            inc(&stats.counters.measured_deliveries);
            stats.record_delivery(self.spec.index, now.saturating_sub(stamp.send_ns));
        }
        if let Some(b) = usize::try_from(stamp.seq)
            .ok()
            .and_then(|s| stats.bursts.get(s))
        {
            b.count.fetch_add(1, Ordering::Relaxed);
            b.first_ns.fetch_min(now, Ordering::Relaxed);
            b.last_ns.fetch_max(now, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_cycle_over_the_loopback_range() {
        assert_eq!(source_ip(0, 1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(7, 1), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(3, 4), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_ip(4, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_ip(249, 250), Ipv4Addr::new(127, 0, 0, 250));
    }
}
