//! Which serving runtime serves a new connection: the one with the fewest open connections.
//!
//! Every runtime accepts from the same listening sockets; the one that accepted a
//! connection keeps it when it has the fewest open (or is tied for it), and otherwise hands
//! it to the runtime that has, ties taken round-robin. Without this, whichever runtime's
//! thread woke first took every connection: with 16 keep-alive clients, all 16 landed on
//! one runtime and the other core idled (issue 17: 0.62× nginx at 32 connections).
//!
//! Chosen over one `SO_REUSEPORT` listener per runtime, which the kernel spreads by a hash
//! of each connection's addresses: a few long-lived connections still land unevenly, and
//! the queue of a runtime that dies is lost with its socket. Share of the requests per
//! runtime, wrk at 16/32/64/256 connections (bench/proxy.sh, 2026-12-03, 2 cores):
//! one shared listener 0/100, 71/29, 100/0, 56/44; `SO_REUSEPORT` 42/58 (61/39 in the
//! passthrough run), 45/55, 44/56, 54/46; fewest open 50/50, 55/45, 51/49, 51/49.
//! Counting open connections evens out any number of them, and a handoff costs moving the
//! socket between two epoll sets, once per connection, never per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

use super::conns::Permit;

/// A count never reached by open connections: a runtime that cannot take any more.
const GONE: usize = usize::MAX / 2;

/// The open connections of every serving runtime and the way to each one's inbox.
pub struct Spread {
    open: Box<[AtomicUsize]>,
    next: AtomicUsize,
    inboxes: Box<[UnboundedSender<Handoff>]>,
}

/// A connection accepted by one runtime for another to serve.
pub struct Handoff {
    /// Taken out of the accepting runtime's reactor, to join the serving one's.
    pub tcp: std::net::TcpStream,
    pub addr: SocketAddr,
    /// The listener it came in on, by index in `[server] listen` order.
    pub listener: usize,
    /// When it was accepted: its request-head deadline counts from then.
    pub accepted: Instant,
    pub permit: Permit,
    pub place: Place,
}

/// One connection's place in its runtime's open count; given back when dropped.
pub struct Place {
    spread: Arc<Spread>,
    runtime: usize,
}

impl Place {
    pub fn runtime(&self) -> usize {
        self.runtime
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.spread.open[self.runtime].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// The spread over `runtimes` runtimes, and each runtime's inbox for handed-off
    /// connections.
    pub fn new(runtimes: usize) -> (Arc<Self>, Vec<UnboundedReceiver<Handoff>>) {
        let (senders, receivers) = (0..runtimes).map(|_| unbounded_channel()).unzip();
        let senders: Vec<_> = senders;
        let spread = Self {
            open: (0..runtimes).map(|_| AtomicUsize::new(0)).collect(),
            next: AtomicUsize::new(0),
            inboxes: senders.into_boxed_slice(),
        };
        (Arc::new(spread), receivers)
    }

    /// Chooses the runtime for a connection `here` accepted and counts it there: `here`
    /// when it has the fewest open, else one that has, round-robin among those.
    pub fn place(self: &Arc<Self>, here: usize) -> Place {
        let counts: Vec<usize> = self
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let fewest = counts.iter().copied().min().unwrap_or(0);
        let runtime = if counts.get(here) == Some(&fewest) {
            here
        } else {
            let start = self.next.load(Ordering::Relaxed);
            let chosen = (0..counts.len())
                .map(|k| (start + k) % counts.len())
                .find(|i| counts[*i] == fewest)
                .unwrap_or(here);
            // Two acceptors racing here at worst pick the same runtime once.
            self.next.store(chosen + 1, Ordering::Relaxed);
            chosen
        };
        self.place_on(runtime)
    }

    /// Counts a connection on `runtime`.
    pub fn place_on(self: &Arc<Self>, runtime: usize) -> Place {
        self.open[runtime].fetch_add(1, Ordering::Relaxed);
        Place {
            spread: self.clone(),
            runtime,
        }
    }

    /// Sends a connection to the runtime its place is on. When that runtime is gone (it
    /// failed to start, or stopped), it gets no more and the connection comes back.
    pub fn hand_off(&self, handoff: Handoff) -> Option<Handoff> {
        let runtime = handoff.place.runtime;
        let back = self.inboxes[runtime].send(handoff).err()?;
        self.open[runtime].fetch_add(GONE, Ordering::Relaxed);
        Some(back.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_goes_to_the_runtime_with_the_fewest_open() {
        let (spread, _inboxes) = Spread::new(2);
        let a = spread.place(0);
        let b = spread.place(0);
        assert_eq!((a.runtime(), b.runtime()), (0, 1));
        let c = spread.place(1);
        assert_eq!(c.runtime(), 1, "a tie stays where it was accepted");
        let d = spread.place(1);
        assert_eq!(d.runtime(), 0);
        drop((a, d));
        assert_eq!(
            spread.place(1).runtime(),
            0,
            "closed connections count no more"
        );
    }

    #[test]
    fn ties_elsewhere_are_taken_round_robin() {
        let (spread, _inboxes) = Spread::new(3);
        let _held = spread.place_on(0);
        let picks: Vec<usize> = (0..2).map(|_| spread.place(0).runtime()).collect();
        assert_eq!(picks, vec![1, 2]);
    }

    #[test]
    fn a_runtime_whose_inbox_is_gone_gets_no_more_connections() {
        let (spread, mut inboxes) = Spread::new(2);
        inboxes.truncate(1);
        let _held = spread.place_on(0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let config = toml::from_str("public_url = \"https://pbx.example.com\"").unwrap();
        let limits = Arc::new(super::super::conns::Limits::new(
            &config,
            Arc::new(crate::metrics::Metrics::default()),
            Arc::new(crate::clock::ManualClock::new(0)),
        ));
        let handoff = Handoff {
            addr: tcp.peer_addr().unwrap(),
            tcp,
            listener: 0,
            accepted: Instant::now(),
            permit: limits.admit([127, 0, 0, 1].into()).unwrap(),
            place: spread.place(0),
        };
        assert_eq!(handoff.place.runtime(), 1);
        assert!(spread.hand_off(handoff).is_some());
        assert_eq!(spread.place(1).runtime(), 0);
    }
}
