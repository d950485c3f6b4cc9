//! Finding the first moment a VIP answers, from the client namespace. A
//! connection whose SYN is dropped (no ARP answer yet, or a node that has
//! no local endpoint) only retries after a second, so one probe at a time
//! would blur the result by up to a second: instead a new attempt starts
//! every [`ATTEMPT_EVERY`], each running on its own, and the earliest
//! accepted answer wins. The error is at most one interval.

use crate::commands;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Gap between two attempts: the resolution of every latency measured.
pub const ATTEMPT_EVERY: Duration = Duration::from_millis(10);
/// How long one attempt waits for its connection and answer line.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Attempts in flight at most (one second's worth).
const MAX_IN_FLIGHT: usize = 100;

/// An accepted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// When it arrived.
    pub at: Instant,
    /// The responder's line, `NODE/POD`.
    pub text: String,
}

/// The VIP did not give an accepted answer in time.
#[derive(Debug, thiserror::Error)]
#[error("{target} gave no accepted answer within {waited:?} (last: {last})")]
pub struct NoAnswer {
    /// What was probed.
    pub target: SocketAddr,
    /// How long it was tried.
    pub waited: Duration,
    /// The last answer or error seen, to tell "wrong node" from "silent".
    pub last: String,
}

/// Probes `target` until an answer satisfies `accept` or `timeout` passes.
pub fn first_answer(
    target: SocketAddr,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> Result<Answer, NoAnswer> {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(Instant, Result<String, String>)>();
    let mut in_flight = 0usize;
    let mut next_launch = started;
    let mut last = String::from("nothing yet");
    loop {
        let now = Instant::now();
        if now >= next_launch && in_flight < MAX_IN_FLIGHT && now < started + timeout {
            let tx = tx.clone();
            let text = target.to_string();
            std::thread::spawn(move || {
                let result = commands::probe(&text, ATTEMPT_TIMEOUT).map_err(|e| format!("{e:#}"));
                let _ = tx.send((Instant::now(), result));
            });
            in_flight += 1;
            next_launch = now + ATTEMPT_EVERY;
        }
        let wait = next_launch.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok((at, Ok(text))) => {
                in_flight -= 1;
                if accept(&text) {
                    return Ok(Answer { at, text });
                }
                last = format!("answered by {text}");
            }
            Ok((_, Err(e))) => {
                in_flight -= 1;
                last = e;
            }
            Err(_) => {}
        }
        if Instant::now() > started + timeout && in_flight == 0 {
            return Err(NoAnswer {
                target,
                waited: started.elapsed(),
                last,
            });
        }
    }
}

/// One quick probe: Some(answer) when `target` answers within `timeout`.
pub fn once(target: SocketAddr, timeout: Duration) -> Option<String> {
    commands::probe(&target.to_string(), timeout).ok()
}
