//! Turning SIGTERM and SIGINT into a cancellation, shared by every long-running subcommand; a second signal
//! exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code of a process ended by a second signal: 128 + SIGINT, the shell's
/// convention for "interrupted".
pub const SECOND_SIGNAL_EXIT: i32 = 130;

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C), then exits the
/// process at once on a second one. Exiting acks nothing more: the broker
/// returns every unacked delivery when it sees the connection close.
pub async fn cancel_on_signal(token: CancellationToken) {
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
        token.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received; shutting down (a second signal exits at once)");
        token.cancel();
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::warn!("second signal: exiting at once; unacked deliveries return to the queue");
    std::process::exit(SECOND_SIGNAL_EXIT);
}
