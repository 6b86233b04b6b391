//! The signals the long-running commands catch: SIGINT and SIGTERM stop them, SIGHUP reloads
//! `signgate run`'s config (the demo, which has no file, logs it and goes on).

/// What a caught signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGHUP: re-read the config.
    Reload,
    /// SIGINT or SIGTERM: drain and exit.
    Stop,
}

/// SIGINT, SIGTERM and SIGHUP, caught from the moment this is built, so a signal that arrives
/// between "listening" and the first poll still means a clean stop (or a reload) rather than the
/// default disposition, which for SIGHUP is to die.
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; call it inside a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the next signal. Several SIGHUPs sent before this is polled count as one.
    pub async fn next(&mut self) -> SignalEvent {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {
                tracing::info!("SIGINT received");
                SignalEvent::Stop
            }
            _ = self.terminate.recv() => {
                tracing::info!("SIGTERM received");
                SignalEvent::Stop
            }
            _ = self.hangup.recv() => {
                tracing::info!("SIGHUP received");
                SignalEvent::Reload
            }
        }
        #[cfg(not(unix))]
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                tracing::info!("Ctrl-C received");
                SignalEvent::Stop
            }
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves on the first SIGINT or SIGTERM; a SIGHUP meanwhile is logged and ignored.
    pub async fn recv(mut self) {
        while self.next().await == SignalEvent::Reload {
            tracing::info!("SIGHUP ignored: nothing to reload here");
        }
    }
}
