//! The [`Client`] handle and the loop behind it: connect, run a session, and when the
//! link is lost, wait (with backoff) and connect again, resending what was not stored.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use qchat_shared::frame::{MessageId, Status};
use qchat_shared::identity::Identity;
use tokio::sync::{mpsc, oneshot};

use crate::connect::{connect, endpoint_for, quic_config, resolve};
use crate::event::{ConnectionState, Event};
use crate::refusal::Ending;
use crate::session::{self, Outcome};
use crate::state::{SavedState, StateDir};

/// The first wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to run a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub identity: Identity,
    /// `HOST:PORT` to use instead of the identity's `server`.
    pub server: Option<String>,
    /// The directory below which per-identity state is kept (default: the platform's data
    /// directory).
    pub data_dir: Option<PathBuf>,
    /// Whether this client takes delivery of messages: reports them and acknowledges them
    /// to the relay, so they are not delivered again. A one-shot `send` or `status` does
    /// not, so messages keep waiting for the client that shows them.
    pub receive: bool,
}

impl ClientOptions {
    pub fn new(identity: Identity) -> Self {
        ClientOptions { identity, server: None, data_dir: None, receive: true }
    }

    /// The relay address in use.
    pub fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(&self.identity.server)
    }
}

/// A message stored by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub id: MessageId,
    pub seq: u64,
    pub time_ms: i64,
}

/// Why a message was not stored.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("the relay refused the message: {0}")]
    Refused(String),
    #[error("not sent: {0}")]
    Stopped(String),
}

pub(crate) type SendReplyTx = oneshot::Sender<Result<Sent, SendError>>;

pub(crate) enum Command {
    Send { id: MessageId, text: String, reply: Option<SendReplyTx> },
    Status,
    Shutdown,
}

/// A message waiting for the relay's `Stored`.
pub(crate) struct Outgoing {
    pub id: MessageId,
    pub text: String,
    pub reply: Option<SendReplyTx>,
}

/// A handle to a running client; cheap to clone. The client stops when `shutdown` is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
}

impl Client {
    /// Starts the client on the current tokio runtime. Everything it has to say comes on
    /// the returned receiver.
    pub fn start(options: ClientOptions) -> (Client, mpsc::UnboundedReceiver<Event>) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let state_dir = match &options.data_dir {
            Some(base) => StateDir::under(base, &options.identity),
            None => StateDir::for_identity(&options.identity),
        };
        let core = Core {
            saved: state_dir.load(),
            state_dir,
            options,
            events,
            commands: commands_rx,
            outbox: Vec::new(),
            seen: HashSet::new(),
        };
        tokio::spawn(core.run());
        (Client { commands }, events_rx)
    }

    /// Queues a message; `Stored` or `SendFailed` follows as an event. Returns its id.
    pub fn send(&self, text: impl Into<String>) -> MessageId {
        let id = MessageId::random();
        let _ = self.commands.send(Command::Send { id, text: text.into(), reply: None });
        id
    }

    /// Sends a message and waits until the relay has stored it. While the relay is out of
    /// reach it keeps trying, so callers that need a bound should use a timeout.
    pub async fn send_and_wait(&self, text: impl Into<String>) -> Result<Sent, SendError> {
        let (reply, answer) = oneshot::channel();
        let id = MessageId::random();
        self.commands
            .send(Command::Send { id, text: text.into(), reply: Some(reply) })
            .map_err(|_| SendError::Stopped("the client has stopped".into()))?;
        answer.await.map_err(|_| SendError::Stopped("the client has stopped".into()))?
    }

    /// Asks the relay for a fresh status; an `Event::Status` follows.
    pub fn request_status(&self) {
        let _ = self.commands.send(Command::Status);
    }

    /// Closes the connection and stops the client.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// The client's state across connections.
pub(crate) struct Core {
    pub options: ClientOptions,
    pub events: mpsc::UnboundedSender<Event>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Messages not yet stored, in the order they were sent.
    pub outbox: Vec<Outgoing>,
    /// Messages already reported in this run (a redelivery after a reconnect is not).
    pub seen: HashSet<MessageId>,
    pub saved: SavedState,
    pub state_dir: StateDir,
}

impl Core {
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub fn emit_status(&self, status: Status) {
        self.emit(Event::Status(status));
    }

    pub fn save_state(&self) {
        if let Err(e) = self.state_dir.save(&self.saved) {
            tracing::warn!(error = %e, dir = %self.state_dir.dir.display(), "cannot save client state");
        }
    }

    /// Answers a queued message and drops it from the outbox.
    pub fn settle(&mut self, id: MessageId, result: Result<Sent, SendError>) {
        if let Some(pos) = self.outbox.iter().position(|o| o.id == id) {
            let outgoing = self.outbox.remove(pos);
            match &result {
                Ok(sent) => self.emit(Event::Stored { id, seq: sent.seq, time_ms: sent.time_ms }),
                Err(e) => self.emit(Event::SendFailed { id, reason: e.to_string() }),
            }
            if let Some(reply) = outgoing.reply {
                let _ = reply.send(result);
            }
        }
    }

    /// Takes a command while no connection is up. Returns false on shutdown.
    fn queue_offline(&mut self, command: Option<Command>) -> bool {
        match command {
            Some(Command::Send { id, text, reply }) => {
                self.outbox.push(Outgoing { id, text, reply });
                true
            }
            Some(Command::Status) => true,
            Some(Command::Shutdown) | None => false,
        }
    }

    async fn run(mut self) {
        let server = self.options.server().to_string();
        let identity = self.options.identity.clone();
        let config = match quic_config(&identity) {
            Ok(config) => config,
            Err(ending) => return self.stop_refused(ending.reason),
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.emit(Event::Connection(ConnectionState::Connecting { server: server.clone() }));
            let attempt = async {
                let remote = resolve(&server).await?;
                let endpoint = endpoint_for(remote)?;
                let connection = connect(&endpoint, config.clone(), remote, &identity, &server).await?;
                Ok::<_, Ending>((endpoint, connection))
            };
            let ending = match attempt.await {
                Ok((endpoint, connection)) => match session::run(&mut self, connection).await {
                    Outcome::Shutdown => {
                        // Let the goodbye reach the relay, so the peer sees us go at once.
                        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
                        break;
                    }
                    Outcome::Ended { ending, welcomed } => {
                        if welcomed {
                            backoff = FIRST_BACKOFF;
                        }
                        ending
                    }
                },
                Err(ending) => ending,
            };
            if ending.fatal {
                return self.stop_refused(ending.reason);
            }
            let wait = jittered(backoff);
            self.emit(Event::Connection(ConnectionState::Reconnecting {
                reason: ending.reason,
                retry_in_ms: wait.as_millis() as u64,
            }));
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = self.commands.recv() => {
                        if !self.queue_offline(command) {
                            self.finish();
                            return;
                        }
                    }
                }
            }
        }
        self.finish();
    }

    fn stop_refused(mut self, reason: String) {
        for outgoing in self.outbox.drain(..) {
            if let Some(reply) = outgoing.reply {
                let _ = reply.send(Err(SendError::Stopped(reason.clone())));
            }
        }
        self.save_state();
        self.emit(Event::Connection(ConnectionState::Refused { reason }));
    }

    fn finish(mut self) {
        for outgoing in self.outbox.drain(..) {
            if let Some(reply) = outgoing.reply {
                let _ = reply.send(Err(SendError::Stopped("the client was shut down".into())));
            }
        }
        self.save_state();
        self.emit(Event::Connection(ConnectionState::Closed));
    }
}

/// `base` give or take a quarter, so that many clients do not retry in step.
fn jittered(base: Duration) -> Duration {
    let quarter = base.as_millis() as u64 / 4;
    let offset = if quarter == 0 { 0 } else { rand::random::<u64>() % (2 * quarter) };
    Duration::from_millis(base.as_millis() as u64 - quarter + offset)
}
