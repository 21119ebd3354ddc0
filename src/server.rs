//! The node's HTTP listener: actix-server's accept loop and workers, actix-http's HTTP/1
//! service, the actix-web `App` of `api::routes` for requests, and the WebSocket upgrade.
//!
//! This is what actix-web's `HttpServer` builds, with one difference: an upgrade service. A
//! request asking for a WebSocket is handed to [`crate::session::ws::serve_upgrade`] together
//! with the socket, and actix-http's dispatcher (with its two 8 KiB buffers) is dropped. The
//! connection then runs on the bare socket with buffers of its own that exist only while
//! bytes pass, which is most of the memory an idle connection would otherwise hold.
//!
//! Settings that `HttpServer` applies by default are applied here too: keep-alive 5 s, 5 s to
//! read a request's head, 1 s to finish a disconnect, a listen backlog of 1024, SO_REUSEADDR,
//! and TCP_NODELAY (frames are batched by the connections; Nagle would only add delay).
//!
//! Deadlines beyond those: a request body must arrive within its deadline
//! ([`crate::api::body`], 408), and a peer that takes no byte of a response for
//! [`crate::session::ws::CLOSE_WAIT`] is dropped ([`conn`]).

pub mod conn;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Protocol};
use actix_server::Server;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::{AppConfig, Service as _, ServiceResponse};
use actix_web::{App, web};
use anyhow::Context as _;

use crate::state::AppState;

/// Pending connections the kernel holds for the accept loop (actix-web's default).
const BACKLOG: u32 = 1024;
/// Time a client has to send a request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to acknowledge the end of a connection.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The server, not yet running, and the address it listens on.
pub struct Listener {
    pub server: Server,
    pub addrs: Vec<SocketAddr>,
}

/// Binds `listen` and builds the server with `workers` workers.
pub fn build(listen: SocketAddr, workers: usize, state: &AppState) -> anyhow::Result<Listener> {
    let listener = bind(listen).with_context(|| format!("listening on {listen}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("listening on {listen}"))?;
    let app_state = web::Data::new(state.clone());
    let ws_state = Arc::new(state.clone());
    let route_state = state.clone();
    let server = Server::build()
        .workers(workers)
        .backlog(BACKLOG)
        .shutdown_timeout(state.settings.shutdown.grace_secs)
        // The node handles SIGINT and SIGTERM itself (ordered shutdown, src/node.rs).
        .disable_signals()
        .listen(format!("chatnode-{local}"), listener, move || {
            let route_state = route_state.clone();
            let body_settings = route_state.settings.clone();
            let app = App::new()
                .app_data(app_state.clone())
                .wrap_fn(move |mut req, srv| {
                    let expired = crate::api::body::deadline_for(&req, &body_settings)
                        .map(|deadline| crate::api::body::time_body(&mut req, deadline));
                    let answer = srv.call(req);
                    async move {
                        let answer = answer.await?.map_into_boxed_body();
                        // A body that ran out of time gets 408, whatever the handler made of
                        // the error its payload ended with.
                        if expired.is_some_and(|e| e.get()) {
                            let (req, _) = answer.into_parts();
                            return Ok(ServiceResponse::new(req, crate::api::body::timed_out()));
                        }
                        Ok(answer)
                    }
                })
                .configure(move |cfg| crate::api::routes(cfg, &route_state))
                .into_factory()
                .map_err(|err| err.error_response());
            let ws_state = ws_state.clone();
            let http = HttpService::build()
                .keep_alive(KeepAlive::default())
                .client_request_timeout(REQUEST_TIMEOUT)
                .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                .local_addr(local)
                .upgrade(fn_service(move |(req, framed)| {
                    crate::session::ws::serve_upgrade(ws_state.clone(), req, framed)
                }))
                .finish(map_config(app, |()| AppConfig::default()));
            fn_service(|io: tokio::net::TcpStream| async move {
                if let Err(e) = io.set_nodelay(true) {
                    tracing::debug!(error = %e, "setting TCP_NODELAY failed");
                }
                let peer = io.peer_addr().ok();
                let conn = conn::Conn::new(io, crate::session::ws::CLOSE_WAIT);
                Ok::<_, actix_http::error::DispatchError>((conn, Protocol::Http1, peer))
            })
            .and_then(http)
        })
        .with_context(|| format!("listening on {local}"))?
        .run();
    Ok(Listener {
        server,
        addrs: vec![local],
    })
}

/// A listening socket as actix-web makes one: SO_REUSEADDR (a restarted node binds at once)
/// and a backlog large enough for a burst of connections.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(BACKLOG).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}
