//! Enrollment: a device without a certificate (ALPN [`qchat_shared::ENROLL_ALPN`]) proves
//! an invite's secret and sends a certificate request for the key it made; the relay
//! signs a certificate naming the invite's user and a new device id, and marks the invite
//! used, in one transaction. Nothing here reaches the chat protocol.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use qchat_shared::frame::{DeviceInfo, EnrollReply, EnrollRequest, RelayControl};
use qchat_shared::invite::{random_id, secret_digest};
use qchat_shared::io::{read_frame, write_frame};
use qchat_shared::limits::FIRST_FRAME_DEADLINE;
use tokio::time::timeout;
use tracing::{info, warn};

use crate::devices::{self, DeviceError};
use crate::relay::RelayState;
use crate::store::{InviteCheck, NewDevice};

/// Enrollments served at once; more are refused (their devices try again).
pub const AT_ONCE: usize = 16;
/// How long the relay waits for a device to read its answer before it closes.
const LINGER: Duration = Duration::from_secs(3);

/// Serves one enrollment connection: one request, one answer. The request must come
/// within the first-frame deadline from the handshake; one that does not counts as a
/// failed attempt, and the slot is free again before the relay waits for the device to go.
pub async fn run(state: Arc<RelayState>, connection: quinn::Connection) {
    let address = connection.remote_address().ip();
    let Some(from_address) = state.enrolling_from.start(address) else {
        connection.close(0u32.into(), b"too many enrollments from your address at once; try again in a moment");
        return;
    };
    let Ok(slot) = state.enrollments.clone().try_acquire_owned() else {
        connection.close(0u32.into(), b"the relay is busy enrolling other devices; try again in a moment");
        return;
    };
    let request = async {
        let (send, mut recv) = connection.accept_bi().await.ok()?;
        Some((send, read_frame::<EnrollRequest, _>(&mut recv).await.ok()??))
    };
    let Ok(Some((mut send, request))) = timeout(FIRST_FRAME_DEADLINE, request).await else {
        state.enroll_attempts.failed(address);
        connection.close(0u32.into(), b"no valid enrollment request in time");
        return;
    };
    let reply = answer(&state, address, request).await;
    if let EnrollReply::Refused { reason } = &reply {
        info!(%address, %reason, "enrollment refused");
        state.metrics.refused("join");
    }
    if write_frame(&mut send, &reply).await.is_ok() {
        let _ = send.finish();
    }
    drop((slot, from_address));
    // The device closes once it has the answer.
    let _ = timeout(LINGER, connection.closed()).await;
}

fn refused(reason: impl Into<String>) -> EnrollReply {
    EnrollReply::Refused { reason: reason.into() }
}

/// The sentence a person sees for an invite that may not be used.
fn invite_refusal(why: &str) -> String {
    let hint = match why {
        "invalid" => " (check that you pasted the whole line, or ask for a new invite)",
        "already used" => " (an invite works once; ask for a new one)",
        "expired" | "revoked" => " (ask for a new one)",
        _ => "",
    };
    format!("the relay refused the invite: {why}{hint}")
}

async fn answer(state: &RelayState, address: IpAddr, request: EnrollRequest) -> EnrollReply {
    if !state.enroll_attempts.allowed(address) {
        return refused("too many failed attempts from your address; wait a minute and try again");
    }
    let digest = secret_digest(&request.secret);
    let user = match state.store.check_invite(&request.invite, digest).await {
        Ok(InviteCheck::Valid { user }) => user,
        Ok(InviteCheck::Refused(why)) => {
            state.enroll_attempts.failed(address);
            return refused(invite_refusal(&why));
        }
        Err(e) => return refused(format!("the relay could not check the invite: {e}")),
    };
    match enroll(state, &request, digest, &user).await {
        Ok(reply) => reply,
        Err(e) => {
            warn!(error = %e, "enrollment failed");
            refused(e.to_string())
        }
    }
}

/// Makes the device of a valid invite: admits a new person, signs the certificate, redeems
/// the invite and tells every device of the person and of those who share a room with them.
async fn enroll(
    state: &RelayState,
    request: &EnrollRequest,
    digest: [u8; 32],
    user: &str,
) -> Result<EnrollReply, DeviceError> {
    // One enrollment at a time adds new people, so the PKI's list of users is written by one.
    let _admitting = state.admitting.lock().await;
    let device = random_id();
    let name = devices::clean_name(&request.device_name);
    let lifetime = state.limits.device_lifetime;
    let cert = devices::sign(&state.pki_dir, user, Some(&device), request.csr_der.clone(), lifetime).await?;
    let new = NewDevice {
        user: user.to_string(),
        device: device.clone(),
        name: name.clone(),
        serial: cert.serial.clone(),
        not_after_ms: cert.not_after_ms,
    };
    if let InviteCheck::Refused(why) = state.store.redeem_invite(&request.invite, digest, new).await? {
        return Ok(refused(invite_refusal(&why)));
    }
    if !state.is_user(user) {
        let (pki, name) = (state.pki_dir.clone(), user.to_string());
        tokio::task::spawn_blocking(move || qchat_certs::add_user(&pki, &name))
            .await
            .map_err(|e| DeviceError::Refused(e.to_string()))??;
        state.admit_user(user);
    }
    info!(user = %qchat_shared::display::Escaped(user), %device, "a device enrolled");
    let added = DeviceInfo {
        id: device.clone(),
        name,
        enrolled_ms: crate::store::now_ms(),
        last_seen_ms: None,
        current: false,
    };
    let notice = RelayControl::DeviceAdded { user: user.to_string(), device: added };
    state.router.notify(user, notice.clone());
    for other in state.others_of(user).await {
        state.router.notify(&other, notice.clone());
    }
    Ok(EnrollReply::Enrolled { user: user.to_string(), device, cert_pem: cert.pem })
}
