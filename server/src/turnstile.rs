//! Keeps one connection's chat messages in the order its client sent them. Streams are
//! accepted in the order the client opened them, whatever order their bytes arrive in; each
//! gets a ticket then, and a stream queues its message in the store only after every earlier
//! stream of the connection has queued its own (or turned out to be something else). The
//! store commits in queue order, so sequence numbers follow the sender's order.

use std::sync::Arc;

use tokio::sync::watch;

/// Hands out tickets in stream order.
pub struct Turnstile {
    next: u64,
    turn: Arc<watch::Sender<u64>>,
}

impl Default for Turnstile {
    fn default() -> Self {
        Turnstile { next: 0, turn: Arc::new(watch::channel(0).0) }
    }
}

impl Turnstile {
    pub fn ticket(&mut self) -> Ticket {
        let number = self.next;
        self.next += 1;
        Ticket { number, turn: self.turn.clone(), passed: false }
    }
}

/// One stream's place in line. Dropping it without [`Ticket::pass`] lets the next through
/// once its turn comes.
pub struct Ticket {
    number: u64,
    turn: Arc<watch::Sender<u64>>,
    passed: bool,
}

async fn wait_turn(turn: &watch::Sender<u64>, number: u64) {
    let mut rx = turn.subscribe();
    let _ = rx.wait_for(|next| *next >= number).await;
}

fn advance(turn: &watch::Sender<u64>, number: u64) {
    turn.send_modify(|next| *next = (*next).max(number + 1));
}

impl Ticket {
    /// Waits until every earlier stream has passed.
    pub async fn wait(&self) {
        wait_turn(&self.turn, self.number).await;
    }

    /// Lets the next stream through; call after [`Ticket::wait`].
    pub fn pass(mut self) {
        advance(&self.turn, self.number);
        self.passed = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.passed {
            let (turn, number) = (self.turn.clone(), self.number);
            tokio::spawn(async move {
                wait_turn(&turn, number).await;
                advance(&turn, number);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn later_tickets_wait_for_earlier_ones_even_when_dropped() {
        let mut turnstile = Turnstile::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let tickets: Vec<Ticket> = (0..4).map(|_| turnstile.ticket()).collect();
        let mut tasks = Vec::new();
        for (i, ticket) in tickets.into_iter().enumerate().rev() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                if i == 1 {
                    drop(ticket); // a stream that was not a message
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5 * (4 - i as u64))).await;
                ticket.wait().await;
                order.lock().unwrap().push(i);
                ticket.pass();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 2, 3]);
    }
}
