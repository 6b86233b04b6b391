//! One single-threaded runtime per core, each with its own `SO_REUSEPORT` listener and its own
//! state, so a request never crosses threads and the kernel spreads connections across cores.
//!
//! Measured on a pinned core (README "Performance"), this beat tokio's multi-thread runtime:
//! fewer context switches and no cross-thread wakeups per request. Signing is deterministic per
//! bucket, so per-worker credential caches hand out the same URLs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::StartupError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::server::{AppState, serve};

/// Listeners bound for every worker on one address.
pub struct Workers {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    listeners: Vec<std::net::TcpListener>,
}

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

impl Workers {
    /// Binds `count` listeners on `addr` with `SO_REUSEPORT` (the first resolves port 0).
    pub fn bind(addr: SocketAddr, count: usize) -> Result<Self, StartupError> {
        let mut listeners = Vec::with_capacity(count.max(1));
        let mut bound = addr;
        for _ in 0..count.max(1) {
            let listener =
                reuseport_listener(bound).map_err(|source| StartupError::Bind { addr, source })?;
            bound = listener
                .local_addr()
                .map_err(|source| StartupError::Bind { addr, source })?;
            listeners.push(listener);
        }
        Ok(Self {
            addr: bound,
            listeners,
        })
    }

    /// Serves `config` on every listener, one thread and runtime each, until `shutdown`
    /// resolves; then every worker drains as [`serve`] does. Blocks until all have stopped.
    pub fn run(
        self,
        config: &Config,
        clock: Arc<dyn Clock>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartupError::Runtime)?;
        let running = self.start(config, clock, Arc::new(Metrics::new(config)))?;
        signals.block_on(shutdown);
        running.stop();
        Ok(())
    }

    /// Starts serving `config` on every listener, one thread and runtime each, all counting
    /// into `metrics`, and returns at once; [`RunningWorkers::stop`] drains and joins them.
    pub fn start(
        self,
        config: &Config,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<RunningWorkers, StartupError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let health = Arc::new(Health::new(self.listeners.len()));
        let mut threads = Vec::with_capacity(self.listeners.len());
        let mut states = Vec::with_capacity(self.listeners.len());
        for (index, listener) in self.listeners.into_iter().enumerate() {
            // Each worker has its own routes, upstream pools and caches; only the metrics
            // (atomics) and the health report are shared.
            let state = Arc::new(AppState::sharing(
                config,
                Arc::clone(&clock),
                Arc::clone(&metrics),
                Arc::clone(&health),
            )?);
            states.push(Arc::clone(&state));
            let mut stop = stop_rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("signgate-worker-{index}"))
                .spawn(move || -> std::io::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        serve(listener, state, async move {
                            let _ = stop.wait_for(|stopped| *stopped).await;
                        })
                        .await
                    })
                })
                .map_err(StartupError::Runtime)?;
            threads.push(thread);
        }
        Ok(RunningWorkers {
            stop_tx,
            threads,
            health,
            states,
        })
    }
}

/// Workers serving in their threads.
pub struct RunningWorkers {
    stop_tx: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    health: Arc<Health>,
    states: Vec<Arc<AppState>>,
}

impl RunningWorkers {
    /// What the workers report: every one accepting, or draining.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Each worker's state: what a reload swaps the routes of.
    pub fn states(&self) -> &[Arc<AppState>] {
        &self.states
    }

    /// Stops accepting, lets every worker drain (up to `shutdown_grace`), and waits for them.
    pub fn stop(self) {
        let _ = self.stop_tx.send(true);
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "worker stopped with an error"),
                Err(_) => tracing::error!("worker panicked"),
            }
        }
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_listens_on_the_same_resolved_port() {
        let workers = Workers::bind("127.0.0.1:0".parse().expect("addr"), 3).expect("binds");
        assert_ne!(workers.addr.port(), 0);
        for listener in &workers.listeners {
            assert_eq!(listener.local_addr().expect("addr"), workers.addr);
        }
    }
}
