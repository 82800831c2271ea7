//! Joining with an invite: this device makes its own key, connects to the relay trusting
//! only the CA whose fingerprint the invite holds, proves the invite's secret and sends a
//! certificate request; the relay answers with the certificate. The private key never
//! leaves this device. Also the requests a device sends to renew its certificate.

use qchat_shared::frame::{EnrollReply, EnrollRequest};
use qchat_shared::identity::{split_host_port, Identity};
use qchat_shared::invite::Invite;
use qchat_shared::io::{read_frame, write_frame};
use qchat_shared::limits::FIRST_FRAME_DEADLINE;
use rcgen::{CertificateParams, DnType, KeyPair};

use crate::connect::{endpoint_for, resolve, CONNECT_TIMEOUT};

/// Why joining failed, in words for the person joining.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct JoinError(pub String);

fn failed(reason: impl Into<String>) -> JoinError {
    JoinError(reason.into())
}

/// A device that joined: its identity file's content, and its id.
#[derive(Debug, Clone)]
pub struct Joined {
    pub identity: Identity,
    pub device: String,
}

/// A certificate request (PKCS#10, DER) for `key`. The relay takes only the key from it.
pub fn certificate_request(key: &KeyPair) -> Result<Vec<u8>, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name.push(DnType::CommonName, "qchat device");
    let request = params.serialize_request(key).map_err(|e| e.to_string())?;
    Ok(request.der().to_vec())
}

/// A certificate request for the key of an identity (to renew its certificate).
pub fn renewal_request(identity: &Identity) -> Result<Vec<u8>, String> {
    let key = KeyPair::from_pem(&identity.key_pem).map_err(|e| format!("the identity's key is unusable: {e}"))?;
    certificate_request(&key)
}

/// Whether an identity's certificate is for its own key (a renewed one must be).
pub fn certificate_matches_key(identity: &Identity) -> bool {
    let Ok(key) = KeyPair::from_pem(&identity.key_pem) else { return false };
    let Ok(certs) = qchat_shared::tls::parse_certs(&identity.cert_pem, "the certificate") else { return false };
    qchat_shared::tls::public_key(&certs[0]).is_some_and(|spki| spki == key.public_key_der())
}

/// Whether an identity's certificate is in the last third of its life (or past it): time
/// to ask for a new one.
pub fn renewal_due(identity: &Identity, now_s: i64) -> bool {
    let Ok(certs) = qchat_shared::tls::parse_certs(&identity.cert_pem, "the certificate") else { return false };
    let Some((start, end)) = certs.first().and_then(|c| qchat_shared::tls::validity(c)) else { return false };
    end - now_s < (end - start) / 3
}

/// Joins the relay of `line` as a new device called `device_name`.
pub async fn join(line: &str, device_name: &str) -> Result<Joined, JoinError> {
    let invite = Invite::parse(line).map_err(failed)?;
    let key = KeyPair::generate().map_err(|e| failed(format!("cannot make a key: {e}")))?;
    let csr_der = certificate_request(&key).map_err(failed)?;
    let (crypto, pinned) =
        qchat_shared::tls::enroll_crypto(invite.ca_fingerprint).map_err(|e| failed(e.to_string()))?;
    let config = qchat_shared::transport::client_config(crypto).map_err(|e| failed(e.to_string()))?;
    let server = invite.server.as_str();
    let remote = resolve(server).await.map_err(|e| failed(e.reason))?;
    let endpoint = endpoint_for(remote).map_err(|e| failed(e.reason))?;
    let host = split_host_port(server).map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or(server);
    let connecting =
        endpoint.connect_with(config, remote, host).map_err(|e| failed(format!("cannot connect to {server}: {e}")))?;
    let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(quinn::ConnectionError::TransportError(e))) if is_tls_alert(e.code.into()) => {
            return Err(failed(format!(
                "the invite is invalid for the relay at {server}: its certificate does not chain to the CA the \
                 invite names (mistyped, or another relay)"
            )))
        }
        Ok(Err(e)) => return Err(failed(format!("cannot reach the relay at {server}: {e}"))),
        Err(_) => {
            return Err(failed(format!("no answer from the relay at {server}: is it running, and its UDP port open?")))
        }
    };
    let request = EnrollRequest {
        invite: invite.id.clone(),
        secret: invite.secret.to_vec(),
        device_name: device_name.to_string(),
        csr_der,
    };
    let reply = exchange(&connection, &request).await;
    connection.close(0u32.into(), b"enrolled");
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), endpoint.wait_idle()).await;
    let (user, device, cert_pem) = match reply? {
        EnrollReply::Enrolled { user, device, cert_pem } => (user, device, cert_pem),
        EnrollReply::Refused { reason } => return Err(failed(reason)),
    };
    // The id names files on this PC: it must be what the relay makes, 8 base32 letters.
    if device.len() != 8 || !device.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)) {
        return Err(failed("the relay answered with a device id of another form"));
    }
    let ca_pem = pinned.ca_pem().ok_or_else(|| failed("the relay's CA was not kept from the handshake"))?;
    let identity =
        Identity { server: invite.server.clone(), user, cert_pem, ca_pem, key_pem: key.serialize_pem(), e2e: None };
    // What we write must be an identity the rest of qchat reads.
    let identity =
        Identity::parse(&identity.to_text()).map_err(|e| failed(format!("the relay's answer is unusable: {e}")))?;
    Ok(Joined { identity, device })
}

fn is_tls_alert(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

async fn exchange(connection: &quinn::Connection, request: &EnrollRequest) -> Result<EnrollReply, JoinError> {
    let lost = |e: String| failed(format!("the relay did not answer the enrollment: {e}"));
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(e.to_string()))?;
    write_frame(&mut send, request).await.map_err(|e| lost(e.to_string()))?;
    let _ = send.finish();
    match tokio::time::timeout(FIRST_FRAME_DEADLINE, read_frame::<EnrollReply, _>(&mut recv)).await {
        Ok(Ok(Some(reply))) => Ok(reply),
        Ok(Ok(None)) => Err(lost("it closed the stream".into())),
        Ok(Err(e)) => Err(lost(e.to_string())),
        Err(_) => Err(lost("no answer in time".into())),
    }
}

/// Connects once as a newly joined device and publishes its end-to-end key packages, so
/// that others can add it to their rooms' groups (and write to it) before it first runs.
pub async fn publish_keys(mut options: crate::ClientOptions) -> Result<u64, String> {
    options.receive = false;
    let (client, mut events) = crate::Client::start(options);
    let published = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            match event {
                crate::Event::KeysPublished { held } => return Ok(held),
                crate::Event::Connection(crate::ConnectionState::Connected(status))
                    if status.key_packages >= qchat_shared::limits::KEY_PACKAGES_TARGET as u64 =>
                {
                    return Ok(status.key_packages)
                }
                crate::Event::Connection(crate::ConnectionState::Refused { reason })
                | crate::Event::DeviceRefused { reason } => return Err(reason),
                _ => {}
            }
        }
        Err("the client stopped".to_string())
    })
    .await
    .unwrap_or_else(|_| Err("the relay did not take the device's keys within 20 s".into()));
    client.shutdown();
    published
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(10);
        params.not_after = now + time::Duration::days(80);
        let cert = params.self_signed(&key).unwrap();
        let identity = Identity {
            server: "h:1".into(),
            user: "alice".into(),
            cert_pem: cert.pem(),
            ca_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            e2e: None,
        };
        let now_s = now.unix_timestamp();
        assert!(!renewal_due(&identity, now_s));
        assert!(renewal_due(&identity, now_s + 51 * 86_400));
        assert!(renewal_due(&identity, now_s + 100 * 86_400), "an ended one too");
        assert!(!renewal_request(&identity).unwrap().is_empty());
    }
}
