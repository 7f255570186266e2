//! systemd service notifications (`Type=notify`): READY=1 once the agent is connected to the runtime
//! and synchronised, WATCHDOG=1 at half the `WATCHDOG_USEC` interval, STOPPING=1 on shutdown.
//! Without `NOTIFY_SOCKET` (not started by systemd) every notification is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::telemetry::http::Health;

/// How often readiness is polled before READY=1 is sent.
const READY_POLL: Duration = Duration::from_millis(100);

/// The running notifier; `stopping` sends STOPPING=1 and ends the watchdog pings.
pub struct Notifier {
    task: JoinHandle<()>,
}

impl Notifier {
    /// Start notifying for an agent whose readiness is `health`.
    pub fn spawn(health: Health) -> Self {
        let watchdog = sd_notify::watchdog_enabled();
        let task = tokio::spawn(async move {
            while !health.node_ready() {
                tokio::time::sleep(READY_POLL).await;
            }
            send(&[
                NotifyState::Ready,
                NotifyState::Status("connected and synchronised"),
            ]);
            let Some(interval) = watchdog else { return };
            info!(
                interval_ms = interval.as_millis() as u64,
                "systemd watchdog enabled"
            );
            let mut tick = tokio::time::interval(watchdog_ping_period(interval));
            loop {
                tick.tick().await;
                // A stuck agent stops pinging: systemd restarts it.
                match health.stalled_reason() {
                    None => send(&[NotifyState::Watchdog]),
                    Some(reason) => warn!(reason = %reason, "not pinging the systemd watchdog"),
                }
            }
        });
        Self { task }
    }

    /// Tell systemd the agent is shutting down.
    pub fn stopping(self) {
        self.task.abort();
        send(&[NotifyState::Stopping]);
    }
}

/// Ping at half the watchdog interval (as sd_watchdog_enabled(3) recommends).
fn watchdog_ping_period(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(1))
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_interval() {
        assert_eq!(
            watchdog_ping_period(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
        assert_eq!(
            watchdog_ping_period(Duration::from_micros(1)),
            Duration::from_millis(1)
        );
    }
}
