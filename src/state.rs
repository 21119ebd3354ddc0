//! `AppState`: what every HTTP route and connection of the node shares, built once by
//! `node.rs` and passed explicitly (no globals).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actors::ActorDeps;
use crate::actors::directory::Directory;
use crate::auth::Verifier;
use crate::config::Settings;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub verifier: Arc<Verifier>,
    pub deps: ActorDeps,
    pub directory: Directory,
    /// Cancelled when the node starts draining: connections close with 1001.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them to finish.
    pub connections: TaskTracker,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Mints tokens for `POST /v1/dev/login`, when `web.dev_login` is on.
    pub dev_login: Option<Arc<crate::web::DevLogin>>,
}
