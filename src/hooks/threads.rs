//! Dedicated threads for the data-stage chain (`[policies] threads`).
//!
//! Run inline on the I/O workers, a chain finds its Lua states and WASM instances cold: in
//! between, that core ran other sessions' reads and writes, sled and the kernel's network
//! path. On threads that run nothing but chains the same seven bench policies cost 33–34 µs
//! per message instead of 42–51 µs (per-plugin times from `X-Mailgate-Trace`,
//! docs/performance.md), for one hand-off per message.
//!
//! Each thread is a one-worker multi-threaded tokio runtime, so a WASM plugin's DNS host
//! call can still `block_in_place`, and a Lua script's `mailgate.dns` still awaits. The
//! session awaits the chain's result; if it goes away meanwhile, the chain still ends on its
//! thread and its result is dropped.

use super::contract::{Action, Event, Hook};
use super::{Outcome, PolicySet};
use crate::mail::parse_message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where data-stage chains run: on the calling worker, or on the chain threads.
pub enum Chains {
    Inline,
    Threads(ChainThreads),
}

impl Chains {
    /// `n` chain threads; none (inline) for 0.
    pub fn start(n: usize) -> std::io::Result<Chains> {
        Ok(match n {
            0 => Chains::Inline,
            n => Chains::Threads(ChainThreads::start(n)?),
        })
    }

    /// Parses `raw` into `event.message` and runs `set`'s chain for `hook` over `event`, here
    /// or on the next chain thread (the parser's code and tables stay warm there too, and the
    /// I/O worker is spared it), within the message's DNS deadline. Gives `raw` back.
    pub async fn parse_and_run(
        &self,
        set: &Arc<PolicySet>,
        hook: Hook,
        event: &mut Event,
        raw: Vec<u8>,
        dns_deadline: Option<tokio::time::Instant>,
    ) -> (Outcome, Vec<u8>) {
        match self {
            Chains::Inline => {
                event.message = Some(Arc::new(parse_message(&raw)));
                (super::dns_budget::within(dns_deadline, set.run(hook, event)).await, raw)
            }
            Chains::Threads(t) => t.parse_and_run(set.clone(), hook, event, raw, dns_deadline).await,
        }
    }
}

pub struct ChainThreads {
    runtimes: Vec<tokio::runtime::Runtime>,
    next: AtomicUsize,
}

impl ChainThreads {
    /// `n` threads named `mailgate-policy-N`.
    fn start(n: usize) -> std::io::Result<ChainThreads> {
        let runtimes = (0..n)
            .map(|i| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("mailgate-policy-{i}"))
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ChainThreads {
            runtimes,
            next: AtomicUsize::new(0),
        })
    }

    /// [`Chains::parse_and_run`] on the next thread, round robin.
    async fn parse_and_run(
        &self,
        set: Arc<PolicySet>,
        hook: Hook,
        event: &mut Event,
        raw: Vec<u8>,
        dns_deadline: Option<tokio::time::Instant>,
    ) -> (Outcome, Vec<u8>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        let mut ev = std::mem::take(event);
        let task = self.runtimes[i].spawn(async move {
            ev.message = Some(Arc::new(parse_message(&raw)));
            let out = super::dns_budget::within(dns_deadline, set.run(hook, &mut ev)).await;
            (ev, out, raw)
        });
        match task.await {
            Ok((ev, out, raw)) => {
                *event = ev;
                (out, raw)
            }
            // Plugins cannot panic the chain (their failures are verdicts); this is a bug
            // in the engine or a runtime shutting down: the sender should retry.
            Err(e) => {
                tracing::error!(?hook, "policy chain task failed: {e}");
                let out = Outcome {
                    action: Action::Tempfail,
                    code: Some(451),
                    enhanced: Some("4.3.0".into()),
                    text: Some("Temporary policy failure, try again later".into()),
                    ..Outcome::default()
                };
                (out, Vec::new())
            }
        }
    }
}

impl Drop for ChainThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}
