//! Devices on the relay's side: invites (for `qchat-server invite` and `devices link`),
//! certificates signed from a device's own request (enrollment and renewal), and
//! revocation, which puts a device's certificates on the PKI's one CRL.

use std::path::Path;
use std::time::Duration;

use qchat_shared::frame::DeviceInfo;
use qchat_shared::invite::{secret_digest, Invite};

use crate::store::{Backend, DeviceRow, Revoked, StoreError};

/// Why a device operation failed, in words for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] qchat_certs::CertsError),
    #[error("{0}")]
    Refused(String),
}

/// A new invite, as the relay issued it; [`IssuedInvite::line`] makes the line to hand out.
pub struct IssuedInvite {
    pub id: String,
    pub secret: [u8; qchat_shared::invite::SECRET_BYTES],
    pub expires_ms: i64,
}

impl IssuedInvite {
    /// The invite line for the relay at `server` whose CA is in `pki`.
    pub fn line(&self, pki: &Path, server: &str) -> Result<Invite, DeviceError> {
        let ca_fingerprint = qchat_certs::ca_fingerprint(pki)?;
        Ok(Invite { server: server.to_string(), ca_fingerprint, id: self.id.clone(), secret: self.secret })
    }
}

/// Creates a one-time invite for `user`, valid for `lifetime`, made by their device
/// `created_by` (none for the operator's). The store keeps only the secret's digest.
pub async fn create_invite(
    store: &dyn Backend,
    user: &str,
    lifetime: Duration,
    created_by: Option<&str>,
) -> Result<IssuedInvite, DeviceError> {
    qchat_shared::names::validate_user_name(user).map_err(DeviceError::Refused)?;
    let id = qchat_shared::invite::random_id();
    let secret: [u8; qchat_shared::invite::SECRET_BYTES] = rand::random();
    let expires_ms = crate::store::now_ms().saturating_add(lifetime.as_millis() as i64);
    store.create_invite(user, &id, secret_digest(&secret), expires_ms, created_by).await?;
    Ok(IssuedInvite { id, secret, expires_ms })
}

/// Signs a certificate for a device from its request, on a blocking thread (it reads the
/// CA's key).
pub async fn sign(
    pki: &Path,
    user: &str,
    device: Option<&str>,
    csr_der: Vec<u8>,
    lifetime: Duration,
) -> Result<qchat_certs::DeviceCertificate, DeviceError> {
    let (pki, user, device) = (pki.to_path_buf(), user.to_string(), device.map(str::to_string));
    tokio::task::spawn_blocking(move || qchat_certs::sign_device(&pki, &user, device.as_deref(), &csr_der, lifetime))
        .await
        .map_err(|e| DeviceError::Refused(format!("signing failed: {e}")))?
        .map_err(|e| match e {
            qchat_certs::CertsError::BadRequest(detail) => {
                DeviceError::Refused(format!("the device's certificate request is not valid: {detail}"))
            }
            other => DeviceError::Pki(other),
        })
}

/// Revokes one device of `user` (every device and open invite of theirs with `None`):
/// marks it in the store and puts its certificates on the CRL. Returns what it revoked;
/// an unknown device is refused.
pub async fn revoke(store: &dyn Backend, pki: &Path, user: &str, device: Option<&str>) -> Result<Revoked, DeviceError> {
    let Some(revoked) = store.revoke_devices(user, device).await? else {
        return Err(DeviceError::Refused(format!(
            "{user} has no device {} that is not revoked already",
            device.unwrap_or_default()
        )));
    };
    // Not the bare name, which `qchat-certs revoke` uses for the identity it issued.
    let label = format!("{user}/{}", device.unwrap_or("devices"));
    let (pki, list) = (pki.to_path_buf(), revoked.serials.clone());
    tokio::task::spawn_blocking(move || qchat_certs::revoke_serials(&pki, &label, &list))
        .await
        .map_err(|e| DeviceError::Refused(format!("revocation failed: {e}")))??;
    Ok(revoked)
}

/// A device as a client sees it in `devices list`.
pub fn info(row: &DeviceRow, current_device: &str) -> DeviceInfo {
    DeviceInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        enrolled_ms: row.enrolled_ms,
        last_seen_ms: row.last_seen_ms,
        current: row.id == current_device,
    }
}

/// A device's name as its person typed it, made safe to show and store: control and
/// bidirectional characters go, and it is at most 64 characters ("device" if nothing is
/// left).
pub fn clean_name(name: &str) -> String {
    let cleaned: String = name.chars().filter(|c| !qchat_shared::display::is_unsafe(*c)).take(64).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "device".into()
    } else {
        cleaned.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_made_safe() {
        assert_eq!(clean_name("  Bob's laptop "), "Bob's laptop");
        assert_eq!(clean_name("\u{202e}evil\u{1b}[31m"), "evil[31m");
        assert_eq!(clean_name(""), "device");
        assert_eq!(clean_name(&"x".repeat(100)).len(), 64);
    }
}
