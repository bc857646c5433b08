//! Readiness shared between the app (which knows) and the health endpoints (which tell).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the worker is ready to take work: connected to the control plane and past the
/// backend's preflight. Cheap to clone; all clones share one state.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    connected: Arc<AtomicBool>,
    backend_ready: Arc<AtomicBool>,
}

impl Readiness {
    /// Records whether a control-plane connection is up.
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Records that the backend's preflight passed.
    pub fn set_backend_ready(&self, ready: bool) {
        self.backend_ready.store(ready, Ordering::Relaxed);
    }

    /// True when connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// True when the backend preflight passed.
    pub fn backend_ready(&self) -> bool {
        self.backend_ready.load(Ordering::Relaxed)
    }

    /// True when both hold.
    pub fn is_ready(&self) -> bool {
        self.connected() && self.backend_ready()
    }
}
