//! Ctrl-C and SIGTERM: a flag the run checks, so it can stop cleanly.
//!
//! The first signal asks the run to stop: the worker call in flight is abandoned (its process
//! killed and reaped), the case it belonged to is dropped with its artifacts, and the results so
//! far are written, marked incomplete. The worker runs in its own process group, so a terminal's
//! Ctrl-C reaches only the harness, which then ends the worker itself.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install the handler (once per process; later calls are no-ops).
pub fn install() {
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// Has a stop been asked for?
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
