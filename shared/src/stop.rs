//! The signals that stop a long-running command (Ctrl-C, and SIGTERM on Unix), listened
//! for from the moment `StopSignal::listen` returns, so that none sent after is missed.

use std::io;

/// Listens for Ctrl-C and (on Unix) SIGTERM; `stopped` resolves at the first one.
pub struct StopSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl StopSignal {
    /// Installs the handlers now (not when first awaited). Needs a Tokio runtime.
    pub fn listen() -> io::Result<StopSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignal { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
        }
        #[cfg(windows)]
        {
            Ok(StopSignal { ctrl_c: tokio::signal::windows::ctrl_c()? })
        }
        #[cfg(not(any(unix, windows)))]
        {
            Err(io::Error::new(io::ErrorKind::Unsupported, "no stop signals on this platform"))
        }
    }

    /// Resolves when a stop signal arrives (at once if one came since `listen`).
    pub async fn stopped(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(windows)]
        self.ctrl_c.recv().await;
        #[cfg(not(any(unix, windows)))]
        std::future::pending::<()>().await;
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_sigterm_sent_right_after_listen_is_not_lost() {
        let mut stop = StopSignal::listen().unwrap();
        // SAFETY: raise sends a signal to this process; the handler above catches it.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_secs(5), stop.stopped()).await.expect("the SIGTERM is seen");
    }
}
