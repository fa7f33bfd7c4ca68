//! Turning SIGTERM and SIGINT into a cancellation, shared by every long-running subcommand; a second signal
//! exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Set once a stop began (first signal).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// A log filter that drops lapin's `lapin::channels` errors once a stop has
/// begun. Closing a connection while one of its channels is still closing
/// (a channel closes when its last handle drops, and the consuming channel
/// must not be closed on its own before the connection: RabbitMQ 3.10 can
/// drop acks still queued on a closing channel) makes lapin log
/// `invalid channel state: Closing` at ERROR, though nothing failed. Ordering
/// every close to avoid it would reintroduce that ack loss, so the one noisy
/// source is silenced during the stop instead; kickq's own lines still say
/// how the stop went, and before a stop lapin's channel errors show as ever.
pub(crate) fn quiet_closing_channels() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool>
{
    tracing_subscriber::filter::filter_fn(|meta| {
        !(STOPPING.load(Ordering::Relaxed)
            && meta.target() == "lapin::channels"
            && *meta.level() == tracing::Level::ERROR)
    })
}

/// Exit code of a process ended by a second signal: 128 + SIGINT, the shell's
/// convention for "interrupted".
pub(crate) const SECOND_SIGNAL_EXIT: i32 = 130;
/// Signals this soon after the first are the same signal delivered twice,
/// not a second one.
#[cfg(unix)]
const DUPLICATE_WINDOW: std::time::Duration = std::time::Duration::from_millis(200);

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C), then exits the
/// process at once on a second one. Exiting acks nothing more: the broker
/// returns every unacked delivery when it sees the connection close.
pub(crate) async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).expect("installing a SIGTERM handler only fails outside a tokio runtime");
        let mut int =
            signal(SignalKind::interrupt()).expect("installing a SIGINT handler only fails outside a tokio runtime");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received; shutting down (a second signal exits at once)");
        STOPPING.store(true, Ordering::Relaxed);
        token.cancel();
        let first = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            // One signal can arrive twice: a supervisor that signals both
            // the process and its group (GNU timeout, some init scripts).
            // Only a signal sent after that counts as the operator's second.
            if first.elapsed() >= DUPLICATE_WINDOW {
                break;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received; shutting down (a second signal exits at once)");
        STOPPING.store(true, Ordering::Relaxed);
        token.cancel();
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::warn!("second signal: exiting at once; unacked deliveries return to the queue");
    std::process::exit(SECOND_SIGNAL_EXIT);
}

/// A command stopped by Ctrl-C: the binary exits 130, the shell convention.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub(crate) struct Interrupted;

/// A test hook's value (`KICKQ_ENQUEUE_STOP_AFTER`, `KICKQ_DLQ_STOP_AFTER`,
/// `KICKQ_PRUNE_STOP_AFTER`: stop a pass part-way, as Ctrl-C or a crash
/// would), read only in a build with the `test-hooks` feature, which the
/// integration tests turn on and release builds do not: there the variable
/// does nothing.
pub(crate) fn test_hook<T: std::str::FromStr>(name: &str) -> Option<T> {
    if cfg!(feature = "test-hooks") {
        std::env::var(name).ok()?.parse().ok()
    } else {
        None
    }
}
