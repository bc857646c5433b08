//! Signals and the root shutdown token: the first SIGINT/SIGTERM starts the graceful shutdown,
//! a second one asks `main` to exit at once. Also how long the runtime may linger on exit.

use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long [`stop_runtime`] waits for blocking calls still running once the worker stopped
/// or a second signal arrived (for example a metrics export or a workspace removal that
/// overran its own deadline). They are abandoned after that, so they never delay the exit.
pub const RUNTIME_SHUTDOWN_BOUND: Duration = Duration::from_secs(1);

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGINT.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Received {
    /// The exit code a process killed by this signal would have (128 + signal).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Interrupt => 130,
            Self::Terminate => 143,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "interrupt",
            Self::Terminate => "terminated",
        }
    }
}

/// Cancels `root` on the first SIGINT or SIGTERM, then resolves on the second one, so the
/// caller can exit immediately.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn watch_signals(root: CancellationToken) -> std::io::Result<Received> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut next = async || {
        tokio::select! {
            _ = interrupt.recv() => Received::Interrupt,
            _ = terminate.recv() => Received::Terminate,
        }
    };
    let first = next().await;
    info!(
        "Received signal {}, shutting down gracefully...",
        first.name()
    );
    root.cancel();
    let second = next().await;
    warn!(
        "Received signal {} again, exiting immediately",
        second.name()
    );
    Ok(second)
}

/// Shuts `runtime` down for exit: drops every task still on it, so their drop guards run (the
/// Direct backend's guards SIGKILL agent process groups), and waits at most
/// [`RUNTIME_SHUTDOWN_BOUND`] for blocking calls still running. Plain `drop` would wait for
/// those without limit.
pub fn stop_runtime(runtime: Runtime) {
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_BOUND);
}
