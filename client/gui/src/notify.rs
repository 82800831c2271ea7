//! Desktop notifications for messages that arrive while the window is not focused: shown
//! off the window's thread, and a failure (no notification service, as on a bare X
//! server) is only logged.

/// Shows a notification with `summary` and `body`; resolves to why it could not be shown.
pub async fn show(summary: String, body: String) -> Result<(), String> {
    let body: String = body.chars().take(200).collect();
    let shown = tokio::task::spawn_blocking(move || {
        notify_rust::Notification::new().appname("qchat").summary(&summary).body(&body).show().map(|_| ())
    });
    shown.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}
