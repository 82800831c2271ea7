//! A lossy link of our own (this kernel has no `tc netem`): a UDP proxy between clients
//! and the relay that drops, delays, reorders and duplicates datagrams, or blacks them all
//! out, at rates set while it runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What the link does to each datagram, in each direction.
#[derive(Debug, Clone, Default)]
pub struct Impairment {
    /// Chance that a datagram is lost.
    pub drop: f64,
    /// Chance that a datagram arrives twice.
    pub duplicate: f64,
    /// Chance that a datagram is held back by `reorder_by` (so later ones overtake it).
    pub reorder: f64,
    pub reorder_by: Duration,
    /// Delay of every datagram, one way.
    pub delay: Duration,
    /// Everything is lost while this is set.
    pub blackout: bool,
}

/// A running proxy; clients connect to [`LossyLink::addr`].
pub struct LossyLink {
    pub addr: SocketAddr,
    impairment: Arc<Mutex<Impairment>>,
    task: JoinHandle<()>,
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LossyLink {
    /// Starts a proxy in front of `relay`.
    pub async fn start(relay: SocketAddr, impairment: Impairment) -> LossyLink {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy"));
        let addr = front.local_addr().unwrap();
        let impairment = Arc::new(Mutex::new(impairment));
        let task = tokio::spawn(run(front, relay, impairment.clone()));
        LossyLink { addr, impairment, task }
    }

    /// Changes the impairment while the link runs.
    pub fn set(&self, change: impl FnOnce(&mut Impairment)) {
        change(&mut self.impairment.lock().unwrap());
    }
}

/// What the impairment does to one datagram: `None` drops it, else (delay, copies).
fn fate(impairment: &Mutex<Impairment>) -> Option<(Duration, usize)> {
    let link = impairment.lock().unwrap().clone();
    let mut rng = rand::thread_rng();
    if link.blackout || rng.gen_bool(link.drop.clamp(0.0, 1.0)) {
        return None;
    }
    let mut delay = link.delay;
    if rng.gen_bool(link.reorder.clamp(0.0, 1.0)) {
        delay += link.reorder_by;
    }
    let copies = if rng.gen_bool(link.duplicate.clamp(0.0, 1.0)) { 2 } else { 1 };
    Some((delay, copies))
}

/// Sends `datagram` through the impairment: maybe not at all, maybe late, maybe twice.
fn forward(socket: &Arc<UdpSocket>, to: SocketAddr, datagram: Vec<u8>, impairment: &Mutex<Impairment>) {
    let Some((delay, copies)) = fate(impairment) else { return };
    let socket = socket.clone();
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for _ in 0..copies {
            let _ = socket.send_to(&datagram, to).await;
        }
    });
}

async fn run(front: Arc<UdpSocket>, relay: SocketAddr, impairment: Arc<Mutex<Impairment>>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // The way back for each client; aborted with this task.
    let mut backs = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else { return };
        let upstream = match upstreams.get(&client) {
            Some(socket) => socket.clone(),
            None => {
                let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream"));
                upstreams.insert(client, socket.clone());
                backs.spawn(back(socket.clone(), front.clone(), client, impairment.clone()));
                socket
            }
        };
        forward(&upstream, relay, buf[..n].to_vec(), &impairment);
    }
}

/// Relay to client, for one client.
async fn back(upstream: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, impairment: Arc<Mutex<Impairment>>) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, _)) = upstream.recv_from(&mut buf).await {
        forward(&front, client, buf[..n].to_vec(), &impairment);
    }
}
