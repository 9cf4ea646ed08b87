//! Prometheus metrics (`prometheus-client`): one process-wide set, recorded where things
//! happen and served as text at `/metrics` when `[metrics] bind` is set (`server`).
//!
//! A leaf like `mail`: it imports nothing of ours, so every layer may record into it.
//! Label values come from small fixed sets (protocols, reply classes, verdicts, policy file
//! names), never from client input, so the number of series stays bounded.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

/// One label pair from a fixed set of values (protocols, classes, verdicts...): no
/// allocation when a counter is bumped on a hot path.
pub type Label = [(&'static str, &'static str); 1];

/// One label pair whose value is a policy's file name.
pub type PolicyLabel = [(&'static str, String); 1];

/// `name=value`.
pub fn label(name: &'static str, value: &'static str) -> Label {
    [(name, value)]
}

/// Adds one to the series `name=value` of `family`.
pub fn inc(family: &Family<Label, Counter>, name: &'static str, value: &'static str) {
    family.get_or_create(&label(name, value)).inc();
}

/// The label of a policy's series.
pub fn policy(name: &str) -> PolicyLabel {
    [("policy", name.to_string())]
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    /// Connections accepted, by protocol.
    pub connections: Family<Label, Counter>,
    /// Connections open now, by protocol.
    pub connections_open: Family<Label, Gauge>,
    /// SMTP replies sent, by class (`2xx`, `3xx`, `4xx`, `5xx`).
    pub smtp_replies: Family<Label, Counter>,
    /// Messages at the end of DATA, by verdict (`accept`, `tag`, `quarantine`, `deliver`,
    /// `reject`, `tempfail`, `discard`).
    pub messages: Family<Label, Counter>,
    /// Bytes of message bodies delivered into mailboxes (one body per delivery, however many
    /// mailboxes share it).
    pub stored_bytes: Counter,
    /// Journal flushes (`fdatasync`) and how many change sets each carried.
    pub journal_fsyncs: Counter,
    pub journal_group_size: Histogram,
    /// Time of each policy call, by policy file.
    pub hook_seconds: Family<PolicyLabel, Histogram, fn() -> Histogram>,
    /// Policy calls that failed or ran out of budget, by policy file.
    pub policy_errors: Family<PolicyLabel, Counter>,
    /// Failed logins (all protocols), by outcome (`failed`, `throttled`).
    pub login_failures: Family<Label, Counter>,
    /// Recipients in the outbound queue, by state, as of the runner's last pass.
    pub queue_recipients: Family<Label, Gauge>,
    /// Outbound delivery attempts, by result (`delivered`, `deferred`, `failed`).
    pub delivery_attempts: Family<Label, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mailgate");
        let m = Metrics {
            registry: Registry::default(),
            connections: Family::default(),
            connections_open: Family::default(),
            smtp_replies: Family::default(),
            messages: Family::default(),
            stored_bytes: Counter::default(),
            journal_fsyncs: Counter::default(),
            journal_group_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            hook_seconds: Family::new_with_constructor(latency_histogram),
            policy_errors: Family::default(),
            login_failures: Family::default(),
            queue_recipients: Family::default(),
            delivery_attempts: Family::default(),
        };
        registry.register("connections", "Connections accepted", m.connections.clone());
        registry.register("connections_open", "Connections open now", m.connections_open.clone());
        registry.register("smtp_replies", "SMTP replies sent, by class", m.smtp_replies.clone());
        registry.register(
            "messages",
            "Messages at the end of DATA, by verdict",
            m.messages.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes of message bodies delivered",
            m.stored_bytes.clone(),
        );
        registry.register("journal_fsyncs", "Journal flushes", m.journal_fsyncs.clone());
        registry.register(
            "journal_group_size",
            "Change sets made durable by one journal flush",
            m.journal_group_size.clone(),
        );
        registry.register(
            "hook_seconds",
            "Time of one policy call, by policy",
            m.hook_seconds.clone(),
        );
        registry.register(
            "policy_errors",
            "Policy calls that failed or ran out of budget",
            m.policy_errors.clone(),
        );
        registry.register("login_failures", "Failed logins", m.login_failures.clone());
        registry.register(
            "queue_recipients",
            "Recipients in the outbound queue, by state",
            m.queue_recipients.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Outbound delivery attempts, by result",
            m.delivery_attempts.clone(),
        );
        Metrics { registry, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Everything, in the Prometheus/OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    if encode(&mut out, &get().registry).is_err() {
        out.clear();
    }
    out
}

/// Counts a connection as open until dropped.
pub struct OpenConnection(&'static str);

impl OpenConnection {
    pub fn new(protocol: &'static str) -> OpenConnection {
        let m = get();
        inc(&m.connections, "protocol", protocol);
        m.connections_open.get_or_create(&label("protocol", protocol)).inc();
        OpenConnection(protocol)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        get().connections_open.get_or_create(&label("protocol", self.0)).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text() {
        {
            let _c = OpenConnection::new("smtp");
            inc(&get().smtp_replies, "class", "2xx");
            get().hook_seconds.get_or_create(&policy("10-x.lua")).observe(0.001);
            let text = render();
            assert!(
                text.contains("mailgate_connections_open{protocol=\"smtp\"} 1"),
                "{text}"
            );
        }
        let text = render();
        assert!(text.contains("mailgate_connections_total{protocol=\"smtp\"}"), "{text}");
        assert!(
            text.contains("mailgate_connections_open{protocol=\"smtp\"} 0"),
            "{text}"
        );
        assert!(text.contains("mailgate_smtp_replies_total{class=\"2xx\"}"), "{text}");
        assert!(text.contains("mailgate_hook_seconds_bucket{le="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
