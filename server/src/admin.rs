//! The operator's subcommands of `qchat-server`: invites, the list of people and devices,
//! and revocation. They work on the relay's PKI and data directory whether it runs or
//! not (SQLite lets both write), and print their result on stdout only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qchat_certs::PkiDir;
use qchat_shared::display::Escaped;
use qchat_shared::units::rfc3339;

use crate::devices;
use crate::store::{self, DeviceRow, DeviceStore, Store};

/// Where the relay keeps its trust and its data.
pub struct Dirs {
    pub pki: PathBuf,
    pub data: PathBuf,
}

impl Dirs {
    /// Opens the relay's database for one command, runs `work` on it, and closes it after
    /// its last job.
    async fn with_store<T>(&self, work: impl AsyncFnOnce(&Store) -> T) -> Result<T> {
        std::fs::create_dir_all(&self.data).with_context(|| format!("creating {}", self.data.display()))?;
        let (store, _feed, thread) =
            store::open(&self.data.join("relay.db")).context("opening the relay's database")?;
        let done = work(&store).await;
        store.close();
        let _ = thread.join();
        Ok(done)
    }
}

/// A one-time invite made by the operator.
pub struct OperatorInvite {
    pub invite: qchat_shared::invite::Invite,
    pub expires_ms: i64,
    /// It brings a new person in (rather than another device of one).
    pub new_person: bool,
}

/// Makes a one-time invite for `user` (a new person, or another device of one), for the relay reached at `server` (default: its certificate's
/// first host and the default port).
pub async fn make_invite(
    dirs: &Dirs,
    user: &str,
    server: Option<String>,
    lifetime: Duration,
) -> Result<OperatorInvite> {
    qchat_shared::names::validate_user_name(user).map_err(anyhow::Error::msg)?;
    let new_person = !PkiDir::new(&dirs.pki).users()?.iter().any(|u| u == user);
    let server = match server {
        Some(server) => server,
        None => default_server(&dirs.pki, qchat_shared::DEFAULT_PORT)?,
    };
    qchat_shared::identity::split_host_port(&server).map_err(anyhow::Error::msg)?;
    let issued = dirs.with_store(async |store| devices::create_invite(store, user, lifetime, None).await).await??;
    Ok(OperatorInvite { invite: issued.line(&dirs.pki, &server)?, expires_ms: issued.expires_ms, new_person })
}

/// Where clients reach the relay of `pki` listening on `port`: its certificate's first host.
pub fn default_server(pki: &Path, port: u16) -> Result<String> {
    Ok(format!("{}:{port}", qchat_certs::relay_host(pki)?))
}

/// `qchat-server invite NAME`: a one-time invite, its line printed last.
pub async fn invite(dirs: &Dirs, user: &str, server: Option<String>, lifetime: Duration) -> Result<()> {
    let made = make_invite(dirs, user, server, lifetime).await?;
    let who = if made.new_person { format!("{user} (a new person)") } else { format!("another device of {user}") };
    println!(
        "a one-time invite for {who}, valid until {}; on their PC: qchat-cli join INVITE --out FILE",
        rfc3339(made.expires_ms)
    );
    println!("{}", made.invite);
    Ok(())
}

/// `qchat-server users`: the people of this relay, with their devices.
pub async fn users(dirs: &Dirs) -> Result<()> {
    let people = PkiDir::new(&dirs.pki).users()?;
    let rows = dirs.with_store(async |store| store.devices(None).await).await??;
    if people.is_empty() {
        println!("no people yet: invite one with `qchat-server invite NAME`");
    }
    for user in &people {
        let active = rows.iter().filter(|d| d.user == *user && d.revoked_ms.is_none()).count();
        println!("{}\t{active} device{}", Escaped(user), if active == 1 { "" } else { "s" });
    }
    Ok(())
}

fn device_line(row: &DeviceRow) -> String {
    let state = match row.revoked_ms {
        Some(at) => format!("revoked {}", rfc3339(at)),
        None => "active".into(),
    };
    let enrolled = if row.enrolled_ms == 0 { "(qchat-certs identity)".to_string() } else { rfc3339(row.enrolled_ms) };
    let seen = row.last_seen_ms.map(rfc3339).unwrap_or_else(|| "never".into());
    format!(
        "{}\t{}\t{}\tenrolled {enrolled}\tlast seen {seen}\t{state}",
        Escaped(&row.user),
        row.id,
        Escaped(&row.name)
    )
}

/// `qchat-server devices [USER]`: every device (of one person), revoked ones too.
pub async fn list_devices(dirs: &Dirs, user: Option<&str>) -> Result<()> {
    let rows = dirs.with_store(async |store| store.devices(user).await).await??;
    if rows.is_empty() {
        println!("no devices yet (a device appears when it joins, or first connects)");
    }
    for row in &rows {
        println!("{}", device_line(row));
    }
    Ok(())
}

/// `qchat-server revoke USER [DEVICE]`: one device, or every device of a person, their
/// open invites and their `qchat-certs` identity. The running relay closes their
/// connections within a second.
pub async fn revoke(dirs: &Dirs, user: &str, device: Option<&str>) -> Result<()> {
    let revoked = dirs.with_store(async |store| devices::revoke(store, &dirs.pki, user, device).await).await??;
    let pki = PkiDir::new(&dirs.pki);
    let mut certs_identity = false;
    if device.is_none() && pki.issued_cert(user).exists() && !pki.revoked()?.iter().any(|(n, _)| n == user) {
        qchat_certs::revoke(&dirs.pki, user)?;
        certs_identity = true;
    }
    match device {
        Some(device) => println!("revoked device {device} of {}", Escaped(user)),
        None if revoked.devices == 0 && revoked.invites == 0 && !certs_identity => {
            bail!("{user} has no device, invite or identity that is not revoked already")
        }
        None => println!(
            "revoked {} of {}: {} device(s), {} open invite(s){}",
            if certs_identity { "everything" } else { "every device" },
            Escaped(user),
            revoked.devices,
            revoked.invites,
            if certs_identity { ", the qchat-certs identity" } else { "" }
        ),
    }
    Ok(())
}

/// The PKI directory of a relay started with `pki` and `data`: the demo PKI in the data
/// directory when none is named.
pub fn pki_of(pki: Option<PathBuf>, data: &Path) -> Result<PathBuf> {
    let dir = pki.unwrap_or_else(|| data.join("pki"));
    if !PkiDir::new(&dir).exists() {
        bail!("no PKI in {}: pass the relay's --pki (or create one with `qchat-certs init`)", dir.display());
    }
    Ok(dir)
}
