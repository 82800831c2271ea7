//! Fan-out through rooms: many users (each a real client with its own connection), rooms
//! of several members each, every member writing; messages per second stored and delivered
//! to every member, and how long a message takes to reach all of its room.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use qchat_client::{ConnectionState, Event, RoomRequest};
use qchat_shared::identity::Identity;
use tokio::sync::mpsc;

use crate::e2e::Peer;
use crate::report::Latency;

/// The shape of the rooms case.
#[derive(Debug, Clone, Copy)]
pub struct RoomsPlan {
    pub users: usize,
    pub rooms: usize,
    pub members_per_room: usize,
    /// Messages in all, spread over the rooms and their members.
    pub messages: usize,
}

/// What the rooms case measured.
#[derive(Debug, Clone, Copy)]
pub struct RoomsFigures {
    pub plan: RoomsPlan,
    /// Messages stored and delivered to every member of their room, per second.
    pub msgs_per_s: f64,
    /// Deliveries (one per member but the sender) per second.
    pub deliveries_per_s: f64,
    /// From send to the last member's client having it.
    pub to_all: Latency,
}

/// The user names of the case.
pub fn user_names(users: usize) -> Vec<String> {
    (0..users).map(|i| format!("user{i:02}")).collect()
}

/// Room `r`'s members: `members_per_room` users in a row, rooms overlapping.
fn members(plan: &RoomsPlan, r: usize) -> Vec<usize> {
    let step = plan.users / plan.rooms.max(1);
    (0..plan.members_per_room).map(|k| (r * step + k) % plan.users).collect()
}

/// Runs the case against the relay at `addr`, whose PKI (`pki`) issued [`user_names`].
pub async fn run(pki: &Path, addr: SocketAddr, dir: &Path, plan: RoomsPlan) -> Result<RoomsFigures> {
    let names = user_names(plan.users);
    let mut peers = Vec::with_capacity(plan.users);
    for name in &names {
        peers.push(Peer::start(Identity::load(&pki.join(format!("{name}.qchat")))?, addr, dir).await?);
    }
    let rooms: Vec<(String, Vec<usize>)> =
        (0..plan.rooms).map(|r| (format!("room{r:02}"), members(&plan, r))).collect();
    for (name, who) in &rooms {
        let creator = &mut peers[who[0]];
        let others = who[1..].iter().map(|&i| names[i].clone()).collect();
        creator.client.rooms(RoomRequest::Create { name: name.clone(), members: others });
        creator
            .until(|e| match e {
                Event::Room(room) => Some(Ok(room)),
                Event::RoomRefused { reason } => Some(Err(reason)),
                _ => None,
            })
            .await?
            .map_err(anyhow::Error::msg)?;
    }

    // Every client reports each message it gets: which one, and when.
    let start = Instant::now();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(String, Duration)>();
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for peer in peers {
        let (client, mut events) = peer.into_parts();
        clients.push(client);
        let seen_tx = seen_tx.clone();
        readers.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Message(m) => {
                        let _ = seen_tx.send((m.text, start.elapsed()));
                    }
                    Event::Connection(ConnectionState::Closed) => break,
                    _ => {}
                }
            }
        }));
    }
    drop(seen_tx);

    // Each member writes its share, one message after another (each durable first).
    let per_room = plan.messages / plan.rooms.max(1);
    let mut sent_at: HashMap<String, Duration> = HashMap::new();
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<(String, Duration)>();
    let mut writers = Vec::new();
    for (room, who) in &rooms {
        for (k, &member) in who.iter().enumerate() {
            let share = (k..per_room).step_by(who.len()).collect::<Vec<_>>();
            let (client, room, sent_tx) = (clients[member].clone(), room.clone(), sent_tx.clone());
            writers.push(tokio::spawn(async move {
                for i in share {
                    let text = format!("{room}/{i}");
                    let at = start.elapsed();
                    client.send_and_wait_to(Some(room.clone()), text.clone()).await?;
                    let _ = sent_tx.send((text, at));
                }
                Ok::<(), qchat_client::SendError>(())
            }));
        }
    }
    drop(sent_tx);
    let expected_per_message = plan.members_per_room - 1;
    let total = per_room * plan.rooms;
    let mut arrivals: HashMap<String, (usize, Duration)> = HashMap::new();
    let mut complete = 0;
    let mut to_all = Vec::with_capacity(total);
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(deadline);
    while complete < total {
        tokio::select! {
            Some((text, at)) = sent.recv() => { sent_at.insert(text, at); }
            Some((text, at)) = seen.recv() => {
                let entry = arrivals.entry(text.clone()).or_insert((0, Duration::ZERO));
                entry.0 += 1;
                entry.1 = entry.1.max(at);
                if entry.0 == expected_per_message {
                    complete += 1;
                }
            }
            _ = &mut deadline => bail!("the rooms case did not finish in 10 minutes ({complete} of {total})"),
        }
    }
    let elapsed = start.elapsed();
    for writer in writers {
        writer.await.context("a writer")?.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    while let Ok((text, at)) = sent.try_recv() {
        sent_at.insert(text, at);
    }
    for (text, (_, last)) in &arrivals {
        if let Some(at) = sent_at.get(text) {
            to_all.push(last.saturating_sub(*at));
        }
    }
    // Each client saves its state and closes before the bench removes their directory.
    for client in &clients {
        client.shutdown();
    }
    for reader in readers {
        reader.await.context("a client's event reader")?;
    }
    let secs = elapsed.as_secs_f64();
    Ok(RoomsFigures {
        plan,
        msgs_per_s: total as f64 / secs,
        deliveries_per_s: (total * expected_per_message) as f64 / secs,
        to_all: Latency::from(to_all),
    })
}
