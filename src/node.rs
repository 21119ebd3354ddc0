//! `node`: builds a node from its settings, runs it, and owns the ordered shutdown.
//!
//! Start: metrics recorder, auth key, store, push (when an FCM key is configured), group
//! arbiters, `NodeSupervisor`, HTTP server.
//! Shutdown on SIGINT/SIGTERM: stop accepting, drain the rooms (pending messages become
//! durable and are answered, cursors are written), flush push, close every connection with
//! 1001 after its queued frames, stop the HTTP server, close the store, exit 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actors::ActorDeps;
use crate::actors::directory::Directory;
use crate::actors::supervisor::{DrainAll, NodeSupervisor};
use crate::auth::{Verifier, resolve_secret};
use crate::config::{JwtAlgorithm, Settings};
use crate::ids::Snowflake;
use crate::state::AppState;
use crate::store::SharedStore;
use crate::store::embedded::EmbeddedStore;

fn install_metrics() -> Option<PrometheusHandle> {
    const SECONDS: &[f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    const SIZES: &[f64] = &[
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full("chatnode_fanout_size".into()), SIZES))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("chatnode_store_batch_size".into()), SIZES)
        });
    match builder.map(|b| b.install_recorder()) {
        Ok(Ok(handle)) => Some(handle),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics buckets rejected");
            None
        }
    }
}

/// The number of worker threads: configured, or one per core.
fn worker_count(settings: &Settings) -> usize {
    if settings.workers > 0 {
        settings.workers
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs a node until SIGINT or SIGTERM, then drains it. Call inside an actix `System`.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let metrics = install_metrics();

    let secret = match settings.auth.algorithm {
        JwtAlgorithm::HS256 => Some(resolve_secret(&settings.auth, &settings.data_dir)?),
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => None,
    };
    let verifier = Arc::new(Verifier::new(&settings.auth, secret.as_deref())?);

    // The store: ScyllaDB when configured, else the embedded store.
    let store: SharedStore = if settings.store == crate::config::StoreBackend::Scylla {
        // Checks the schema version and refuses to start on a missing or older schema.
        let scylla = crate::store::scylla::ScyllaStore::open(&settings.scylla)
            .await
            .context("opening the ScyllaDB store")?;
        Arc::new(scylla)
    } else {
        let store_dir = settings.data_dir.join("store");
        let embedded = EmbeddedStore::open(&store_dir)
            .with_context(|| format!("opening the embedded store in {}", store_dir.display()))?;
        Arc::new(embedded)
    };

    // Uploaded files: the local file system under the data directory, or S3.
    let media = crate::media::MediaStore::open(&settings.media, &settings.data_dir)
        .with_context(|| format!("opening the {} media store", settings.media.backend))?;
    let media = Arc::new(media);

    // Push to members who are away: on with an FCM key file (checked here), off otherwise.
    let push = crate::push::start(&settings.push, store.clone())?;

    let workers = worker_count(&settings);
    let arbiters: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();
    let handles = arbiters.iter().map(Arbiter::handle).collect();
    let deps = ActorDeps {
        settings: settings.clone(),
        store: store.clone(),
        snowflake: Arc::new(Snowflake::new(settings.node_id)),
        media,
        push: push.handle.clone(),
    };
    let supervisor = NodeSupervisor::new(deps.clone(), handles).start();

    let state = AppState {
        settings: settings.clone(),
        verifier,
        deps,
        directory: Directory::new(supervisor.clone()),
        shutdown: CancellationToken::new(),
        connections: TaskTracker::new(),
        metrics: metrics.clone(),
        dev_login: crate::web::dev_login_of(secret.as_deref(), &settings.web),
    };
    if state.dev_login.is_some() {
        tracing::warn!(
            listen = %settings.listen,
            "web.dev_login is on: anyone who reaches this address can sign in as any user"
        );
    }
    let listener = crate::server::build(settings.listen_addr(), workers, &state)
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addrs: Vec<SocketAddr> = listener.addrs.clone();

    let metrics_server = match (&settings.metrics_listen, metrics) {
        (Some(listen), Some(handle)) => {
            let handle = web::Data::new(handle);
            let server = HttpServer::new(move || {
                App::new().app_data(handle.clone()).route(
                    "/metrics",
                    web::get().to(|h: web::Data<PrometheusHandle>| async move {
                        actix_web::HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4")
                            .body(h.render())
                    }),
                )
            })
            .workers(1)
            .disable_signals()
            .bind(listen.as_str())
            .with_context(|| format!("metrics listener on {listen}"))?
            .run();
            let handle = server.handle();
            actix_web::rt::spawn(server);
            Some(handle)
        }
        _ => None,
    };

    let server = listener.server;
    let server_handle = server.handle();
    let server_task = actix_web::rt::spawn(server);
    for addr in &addrs {
        // A machine-readable line for scripts and tests, then the human hints.
        println!("chatnode listening on http://{addr}");
    }
    tracing::info!(
        addrs = ?addrs,
        data_dir = %settings.data_dir.display(),
        workers,
        "chatnode is up; mint a token with: chatnode token --user alice"
    );

    wait_for_signal().await;
    tracing::info!("shutting down: draining rooms and connections");
    let grace = Duration::from_secs(settings.shutdown.grace_secs);

    // 1. No new connections.
    server_handle.pause().await;
    // 2. Rooms finish their pending writes (senders get their `sent`), then flush cursors.
    if tokio::time::timeout(grace, supervisor.send(DrainAll))
        .await
        .is_err()
    {
        tracing::warn!("rooms did not drain within the grace period");
    }
    // Pushes still coalescing for the drained rooms go out now.
    push.handle.flush(grace).await;
    // 3. Connections write what is queued and close with 1001.
    state.shutdown.cancel();
    state.connections.close();
    if tokio::time::timeout(grace, state.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not close within the grace period");
    }
    // 4. The HTTP server and the store.
    server_handle.stop(true).await;
    let _ = server_task.await;
    if let Some(handle) = metrics_server {
        handle.stop(true).await;
    }
    if let Err(e) = store.close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    for arbiter in arbiters {
        arbiter.stop();
    }
    push.stop();
    tracing::info!("chatnode stopped");
    Ok(())
}
