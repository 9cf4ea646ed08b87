//! Configuration: TOML, every key optional, embedded defaults.
//!
//! The file is parsed into [`Config`] with `deny_unknown_fields` everywhere, so a misspelt key
//! fails at start with a message naming the key and the file (exit code 2). `docs/config.md`
//! lists every key with its default and the reason for it; keep the two in step.

pub mod outbound;

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Protocol served on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Smtp,
    Submission,
    Pop3,
    Imap,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
        })
    }
}

/// How TLS is used on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext only.
    None,
    /// Plaintext, upgraded by STARTTLS/STLS.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS 465, POP3S 995, IMAPS 993).
    Implicit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub protocol: Protocol,
    pub bind: SocketAddr,
    #[serde(default)]
    pub tls: TlsMode,
    /// SMTP AUTH on this listener. Default: on for `submission`, off for `smtp` (port 25
    /// takes mail from other servers, which do not log in).
    #[serde(default)]
    pub auth: Option<bool>,
}

impl Listener {
    /// Whether this listener offers SMTP AUTH.
    pub fn offers_auth(&self) -> bool {
        self.auth.unwrap_or(self.protocol == Protocol::Submission)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Name used in the greeting, EHLO reply and Received headers.
    pub hostname: String,
    /// Where the store, the generated certificate and the admin socket live.
    pub data_dir: PathBuf,
    /// Domains we accept mail for; more can be added at run time with `mailgate domain add`.
    pub local_domains: Vec<String>,
    /// Seconds that running sessions get to finish after SIGTERM before they are cut.
    pub shutdown_grace_secs: u64,
    /// Sub-address delimiter: `alice+news@x` is delivered to `alice@x` when no exact match exists.
    /// Empty disables it.
    pub recipient_delimiter: String,
    /// How long a write to a client may make no progress (a client that stopped reading)
    /// before the session ends and its slot and locks are released.
    pub write_timeout_secs: u64,
    /// How long a client's TLS handshake may take (implicit TLS or STARTTLS).
    pub tls_handshake_timeout_secs: u64,
    /// Threads for blocking work (store writes, fsyncs, password checks) at most.
    pub blocking_threads: usize,
    /// Where mail for `postmaster@` a local domain goes when that domain has no account or
    /// alias of that name (RFC 5321 §4.5.1 requires every domain to take it). Unset: such
    /// mail is refused as for any unknown user, and `serve` warns at start.
    pub postmaster: Option<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            hostname: system_hostname(),
            data_dir: PathBuf::from("./mailgate-data"),
            local_domains: vec!["localhost".into()],
            shutdown_grace_secs: 30,
            recipient_delimiter: "+".into(),
            write_timeout_secs: 300,
            tls_handshake_timeout_secs: 30,
            blocking_threads: 32,
            postmaster: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain. Absent: a self-signed certificate is made in data_dir on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// More chain threads than this is a typo, not a machine (each is a runtime with a worker).
const MAX_CHAIN_THREADS: usize = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policies {
    /// Lua (and WASM) policies, run in file-name order.
    pub dir: PathBuf,
    /// Lua states per plugin: calls on different states run in parallel. Default: one per
    /// core, at least two (the I/O workers and the chain threads each want one).
    pub lua_states: usize,
    /// Add an `X-Mailgate-Trace` header (which policy said what, how long) on local delivery.
    pub trace_header: bool,
    /// Quiet time after the last change in `dir` before a reload.
    pub reload_debounce_ms: u64,
    /// Threads that run the data-stage chain, apart from the I/O workers (its plugins stay
    /// warm in their cores' caches; docs/performance.md). 0 runs it inline on the workers.
    /// Default: half the cores, at least one.
    pub threads: usize,
}

impl Default for Policies {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Policies {
            dir: PathBuf::from("./policies"),
            lua_states: cores.max(2),
            trace_header: true,
            reload_debounce_ms: 200,
            threads: (cores / 2).max(1),
        }
    }
}

/// Score thresholds: the total score of a message maps to one action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Add X-Spam-Flag/Score/Symbols headers.
    pub tag: f64,
    /// Deliver into Junk.
    pub quarantine: f64,
    /// Refuse at SMTP time with 550 5.7.1.
    pub reject: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            tag: 5.0,
            quarantine: 10.0,
            reject: 15.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spam {
    pub thresholds: Thresholds,
    /// Train the Bayes model when users move mail into or out of Junk (IMAP).
    pub learn_from_users: bool,
    /// Accounts whose moves never train the model.
    pub learn_opt_out: Vec<String>,
    /// Most distinct tokens the Bayes model keeps; past it the fewest-seen go.
    pub bayes_max_tokens: usize,
    /// Time limit for one message's SPF, DKIM and DMARC checks together; past it the
    /// three results are `temperror`.
    pub auth_timeout_ms: u64,
    /// Record the checks in an `Authentication-Results` header (RFC 8601) on local delivery.
    pub authentication_results: bool,
}

impl Default for Spam {
    fn default() -> Self {
        Spam {
            thresholds: Thresholds::default(),
            learn_from_users: true,
            learn_opt_out: Vec::new(),
            bayes_max_tokens: 1_000_000,
            auth_timeout_ms: 5000,
            authentication_results: true,
        }
    }
}

/// DNS used by policies (and the spam analyzers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers as `IP:port`; empty means the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Per lookup.
    pub timeout_ms: u64,
    /// Everything one message looks up at the end of DATA (SPF/DKIM/DMARC and every policy's
    /// lookups) together; past it lookups are temporary failures and the message goes on.
    pub message_budget_ms: u64,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            timeout_ms: 2000,
            message_budget_ms: 8000,
        }
    }
}

/// SMTP limits. Every limit has a reason; see docs/config.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Largest message accepted, in bytes; advertised in EHLO SIZE (552 5.3.4 above it).
    pub max_message_size: usize,
    /// Recipients per transaction (RFC 5321 §4.5.3.1.8 asks for at least 100); 452 4.5.3 above it.
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321 says 512; extensions need more).
    pub max_line_length: usize,
    /// Protocol errors before we answer 421 and close (a client that keeps failing is a prober).
    pub max_errors: u32,
    /// Commands that make no progress (NOOP, RSET, VRFY, HELP, HELO/EHLO) a session may send
    /// before each further one counts as an error; delivering a message starts the count again
    /// (Postfix's `smtpd_junk_command_limit`).
    pub junk_command_limit: u32,
    /// Idle time allowed between commands (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub command_timeout_secs: u64,
    /// Idle time allowed between two reads inside DATA/BDAT (RFC 5321 §4.5.3.2.5: 3 minutes).
    pub data_timeout_secs: u64,
    /// Bytes per second a DATA transfer must average (0: no minimum; BDAT chunks have their
    /// size announced and keep the per-read timeout).
    pub min_data_rate: u64,
    /// Bytes that must stay free on the data directory's file system (sled store): below it,
    /// or below it plus 1.5 × a declared `SIZE`, MAIL FROM gets `452 4.3.1` (Postfix's
    /// `queue_minfree` check), so intake stops before the disk is full.
    pub min_free_space: u64,
    /// Concurrent SMTP connections over all listeners (421 4.7.0 above it).
    pub max_connections: usize,
    /// Concurrent connections from one client IP (421 4.7.0 above it).
    pub max_connections_per_ip: usize,
    /// Text after the host name in the 220 greeting.
    pub banner: String,
    /// Clients that may relay to any domain without AUTH (Postfix's `mynetworks`).
    pub relay_networks: Vec<outbound::Cidr>,
}

impl Smtp {
    /// Whether a client at `ip` may relay anywhere.
    pub fn may_relay(&self, ip: std::net::IpAddr) -> bool {
        self.relay_networks.iter().any(|c| c.contains(ip))
    }
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 4096,
            max_errors: 10,
            junk_command_limit: 100,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            min_data_rate: 500,
            min_free_space: 64 * 1024 * 1024,
            max_connections: 1000,
            max_connections_per_ip: 50,
            banner: "ESMTP mailgate".into(),
            relay_networks: Vec::new(),
        }
    }
}

/// When plaintext passwords (POP3 USER/PASS, AUTH PLAIN/LOGIN, IMAP LOGIN) are accepted
/// without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plaintext {
    /// Only over TLS.
    Never,
    /// Over TLS, or from a loopback address (as Dovecot's `disable_plaintext_auth = yes`).
    Loopback,
    /// Always (only behind a trusted network).
    Always,
}

/// Login policy shared by POP3 and IMAP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub plaintext: Plaintext,
    /// Pause before answering a failed login (slows guessing; the session waits, not the server).
    pub failure_delay_ms: u64,
    /// Failed logins from one IP within `failure_window_secs` before further attempts from it
    /// are refused outright.
    pub max_failures_per_ip: u32,
    pub failure_window_secs: u64,
    /// A successful login is remembered this long: the same password again skips the
    /// argon2 check (0: every login is checked in full).
    pub cache_ttl_secs: u64,
    /// Password checks (argon2, about 19 MiB of memory and tens of milliseconds of CPU each)
    /// running at once; more wait their turn. 0: one per CPU core.
    pub max_parallel_checks: usize,
}

impl Auth {
    /// [`Auth::max_parallel_checks`] with 0 resolved to the number of cores.
    pub fn parallel_checks(&self) -> usize {
        match self.max_parallel_checks {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            plaintext: Plaintext::Loopback,
            failure_delay_ms: 1000,
            max_failures_per_ip: 20,
            failure_window_secs: 600,
            cache_ttl_secs: 300,
            max_parallel_checks: 0,
        }
    }
}

/// POP3 limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3 {
    /// Idle time before the session is closed (RFC 1939 §3: at least 10 minutes).
    pub idle_timeout_secs: u64,
    /// Longest command line including CRLF (RFC 2449 says 255; SASL responses need more).
    pub max_line_length: usize,
    /// `-ERR` answers in one session before it is closed (a client looping on errors).
    pub max_bad_commands: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for Pop3 {
    fn default() -> Self {
        Pop3 {
            idle_timeout_secs: 600,
            max_line_length: 4096,
            max_bad_commands: 20,
            max_connections: 1000,
            max_connections_per_ip: 20,
        }
    }
}

/// IMAP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Imap {
    /// Idle time before autologout (RFC 9051 §5.4: at least 30 minutes), also in IDLE.
    pub idle_timeout_secs: u64,
    /// Longest command line, each line of a command counted apart from its literals.
    pub max_line_length: usize,
    /// Largest literal in any command but APPEND (mailbox names, search strings...).
    pub max_literal_bytes: usize,
    /// Largest message APPEND accepts (refused with NO [TOOBIG] before the client sends it).
    pub max_append_bytes: usize,
    /// Largest literal before login (LOGIN and AUTHENTICATE need a few hundred bytes; an
    /// unauthenticated client must not make us read megabytes).
    pub max_literal_bytes_before_login: usize,
    /// `BAD` answers in one session before `* BYE` (Dovecot closes after 20 as well).
    pub max_bad_commands: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for Imap {
    fn default() -> Self {
        Imap {
            idle_timeout_secs: 1800,
            max_line_length: 64 * 1024,
            max_literal_bytes: 64 * 1024,
            max_append_bytes: 50 << 20,
            max_literal_bytes_before_login: 8 * 1024,
            max_bad_commands: 20,
            max_connections: 1000,
            max_connections_per_ip: 50,
        }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Where `/metrics` is served (plain HTTP); absent: no endpoint. Bind it to loopback or a
    /// management network: it tells anyone who can reach it how busy the server is.
    pub bind: Option<SocketAddr>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the session's fields (id, protocol, peer).
    Json,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
}

/// Where the store lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded: sled and our journal in `server.data_dir` (one node).
    #[default]
    Sled,
    /// A PostgreSQL database several nodes share (`[store.postgres]`).
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    pub backend: StoreBackend,
    /// sled page cache, in MiB.
    pub cache_mb: u64,
    pub postgres: StorePostgres,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            backend: StoreBackend::Sled,
            cache_mb: 128,
            postgres: StorePostgres::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorePostgres {
    /// `postgres://user:password@host:port/database` (or libpq's key=value form).
    pub url: Option<String>,
    /// Connections each node keeps at most.
    pub pool_size: usize,
    /// Transactions of joined deliveries a node writes at the same time, each on a
    /// connection of its own beside the pool (docs/performance.md).
    pub delivery_writers: usize,
}

impl Default for StorePostgres {
    fn default() -> Self {
        StorePostgres {
            url: None,
            pool_size: 16,
            delivery_writers: 1,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    #[serde(rename = "listener")]
    pub listeners: Vec<Listener>,
    pub tls: Tls,
    pub policies: Policies,
    pub smtp: Smtp,
    pub pop3: Pop3,
    pub imap: Imap,
    pub auth: Auth,
    pub spam: Spam,
    pub dns: Dns,
    pub store: Store,
    pub outbound: outbound::Outbound,
    pub metrics: Metrics,
    pub log: Log,
    /// Domains we filter for and pass on (`[[relay]]`).
    #[serde(rename = "relay")]
    pub relays: Vec<outbound::Relay>,
    /// Where the config came from, for messages; not a key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A configuration error that names the file and the key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The listeners used when the config names none: loopback high ports, so `mailgate serve`
/// runs unprivileged next to a system MTA. `examples/mailhost.toml` shows production ports.
pub fn default_listeners() -> Vec<Listener> {
    let l = |protocol, port: u16, tls| Listener {
        protocol,
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        tls,
        auth: None,
    };
    vec![
        l(Protocol::Smtp, 2525, TlsMode::Starttls),
        l(Protocol::Submission, 2587, TlsMode::Starttls),
        l(Protocol::Submission, 2465, TlsMode::Implicit),
        l(Protocol::Pop3, 2110, TlsMode::Starttls),
        l(Protocol::Pop3, 2995, TlsMode::Implicit),
        l(Protocol::Imap, 2143, TlsMode::Starttls),
        l(Protocol::Imap, 2993, TlsMode::Implicit),
    ]
}

impl Config {
    /// The `[[relay]]` entry for `domain`, if we relay for it.
    pub fn relay_for(&self, domain: &str) -> Option<&outbound::Relay> {
        self.relays.iter().find(|r| r.domain == domain)
    }

    /// The name we give in EHLO to other servers.
    pub fn helo_name(&self) -> &str {
        if self.outbound.helo_name.is_empty() {
            &self.server.hostname
        } else {
            &self.outbound.helo_name
        }
    }

    /// Embedded defaults, no file.
    pub fn defaults() -> Config {
        Config {
            listeners: default_listeners(),
            ..Config::default()
        }
    }

    /// Loads `path`, or the embedded defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::defaults());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read config: {e}", path.display())))?;
        let mut c = Config::parse(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Parses and validates TOML text. Errors name the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        if c.listeners.is_empty() {
            c.listeners = default_listeners();
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&mut self) -> Result<(), String> {
        let s = &mut self.server;
        if s.hostname.trim().is_empty() || s.hostname.contains(char::is_whitespace) {
            return Err(format!("server.hostname: invalid host name {:?}", s.hostname));
        }
        for d in &mut s.local_domains {
            *d = d.trim().to_ascii_lowercase();
            if !crate::mail::address::is_valid_domain(d) {
                return Err(format!("server.local_domains: invalid domain {d:?}"));
            }
        }
        if s.recipient_delimiter.chars().count() > 1 {
            return Err("server.recipient_delimiter: must be one character or empty".into());
        }
        if let Some(p) = &mut s.postmaster {
            match crate::mail::address::Address::parse(p.trim()) {
                Ok(a) if !a.has_routing_syntax() && !a.local.eq_ignore_ascii_case("postmaster") => *p = a.to_string(),
                Ok(_) => {
                    return Err(format!(
                        "server.postmaster: {p:?} must be a mailbox other than postmaster@ itself"
                    ));
                }
                Err(e) => return Err(format!("server.postmaster: {p:?}: {e}")),
            }
        }
        for (i, r) in self.relays.iter_mut().enumerate() {
            r.domain = r.domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !crate::mail::address::is_valid_domain(&r.domain) {
                return Err(format!("relay[{i}].domain: invalid domain {:?}", r.domain));
            }
            if self.server.local_domains.contains(&r.domain) {
                return Err(format!(
                    "relay[{i}].domain: {} is also in server.local_domains",
                    r.domain
                ));
            }
        }
        let o = &self.outbound;
        if o.retry_schedule.is_empty() || o.retry_schedule.iter().any(|s| s.0.is_zero()) {
            return Err("outbound.retry_schedule: needs at least one wait, none of them 0".into());
        }
        if o.max_connections == 0 || o.max_connections_per_destination == 0 {
            return Err("outbound.max_connections / max_connections_per_destination: must be greater than 0".into());
        }
        if o.max_lifetime.0.is_zero() {
            return Err("outbound.max_lifetime: must be greater than 0".into());
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return Err("tls.key: required when tls.cert is set".into()),
            (None, Some(_)) => return Err("tls.cert: required when tls.key is set".into()),
            _ => {}
        }
        let m = &self.smtp;
        let positive = [
            ("smtp.max_message_size", m.max_message_size as u64),
            ("smtp.max_recipients", m.max_recipients as u64),
            ("smtp.max_errors", m.max_errors as u64),
            ("smtp.junk_command_limit", m.junk_command_limit as u64),
            ("smtp.command_timeout_secs", m.command_timeout_secs),
            ("smtp.data_timeout_secs", m.data_timeout_secs),
            ("smtp.max_connections", m.max_connections as u64),
            ("smtp.max_connections_per_ip", m.max_connections_per_ip as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("{key}: must be greater than 0"));
            }
        }
        let p = &self.pop3;
        for (key, v) in [
            ("server.write_timeout_secs", self.server.write_timeout_secs),
            (
                "server.tls_handshake_timeout_secs",
                self.server.tls_handshake_timeout_secs,
            ),
            ("server.blocking_threads", self.server.blocking_threads as u64),
            ("pop3.idle_timeout_secs", p.idle_timeout_secs),
            ("pop3.max_bad_commands", p.max_bad_commands as u64),
            ("imap.max_bad_commands", self.imap.max_bad_commands as u64),
            ("pop3.max_connections", p.max_connections as u64),
            ("pop3.max_connections_per_ip", p.max_connections_per_ip as u64),
            ("imap.max_connections", self.imap.max_connections as u64),
            ("imap.max_connections_per_ip", self.imap.max_connections_per_ip as u64),
            ("imap.max_append_bytes", self.imap.max_append_bytes as u64),
            (
                "imap.max_literal_bytes_before_login",
                self.imap.max_literal_bytes_before_login as u64,
            ),
            ("auth.max_failures_per_ip", self.auth.max_failures_per_ip as u64),
            ("auth.failure_window_secs", self.auth.failure_window_secs),
            ("policies.lua_states", self.policies.lua_states as u64),
            ("dns.timeout_ms", self.dns.timeout_ms),
        ] {
            if v == 0 {
                return Err(format!("{key}: must be greater than 0"));
            }
        }
        if self.policies.threads > MAX_CHAIN_THREADS {
            return Err(format!("policies.threads: at most {MAX_CHAIN_THREADS}"));
        }
        if self.store.backend == StoreBackend::Postgres && self.store.postgres.url.is_none() {
            return Err("store.backend = \"postgres\" needs store.postgres.url".into());
        }
        if self.store.postgres.pool_size == 0 {
            return Err("store.postgres.pool_size must be at least 1".into());
        }
        let pg = &self.store.postgres;
        if !(1..=64).contains(&pg.delivery_writers) {
            return Err("store.postgres.delivery_writers must be from 1 to 64".into());
        }
        let t = &self.spam.thresholds;
        if !(t.tag <= t.quarantine && t.quarantine <= t.reject) {
            return Err("spam.thresholds: need tag <= quarantine <= reject".into());
        }
        if self.imap.idle_timeout_secs < 60 {
            return Err("imap.idle_timeout_secs: must be at least 60".into());
        }
        if self.imap.max_line_length < 1024 {
            return Err("imap.max_line_length: must be at least 1024".into());
        }
        if p.max_line_length < 256 {
            return Err("pop3.max_line_length: must be at least 256 (RFC 2449 §4)".into());
        }
        if m.max_line_length < 512 {
            return Err("smtp.max_line_length: must be at least 512 (RFC 5321 §4.5.3.1.4)".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.protocol == Protocol::Smtp && l.tls == TlsMode::Implicit {
                // Allowed (some run SMTPS on an MX), but unusual enough to mention in logs.
                tracing::debug!("listener[{i}]: implicit TLS on an smtp listener");
            }
            if l.auth.is_some() && !matches!(l.protocol, Protocol::Smtp | Protocol::Submission) {
                return Err(format!(
                    "listener[{i}].auth: only for smtp and submission listeners ({} has its own login)",
                    l.protocol
                ));
            }
            let dup = self.listeners[..i]
                .iter()
                .any(|o| o.bind == l.bind && l.bind.port() != 0);
            if dup {
                return Err(format!("listener[{i}].bind: address {} is used twice", l.bind));
            }
        }
        Ok(())
    }

    pub fn store_path(&self) -> PathBuf {
        self.server.data_dir.join("store")
    }

    pub fn admin_socket_path(&self) -> PathBuf {
        self.server.data_dir.join("admin.sock")
    }

    /// Where `mailgate send` hands messages to the server (mode 0666).
    pub fn submit_socket_path(&self) -> PathBuf {
        self.server.data_dir.join("submit.sock")
    }
}

/// The system host name, or `localhost` when it cannot be read.
fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end])
            && !s.is_empty()
        {
            return s.to_string();
        }
    }
    "localhost".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.local_domains, vec!["localhost"]);
        assert_eq!(c.listeners.len(), default_listeners().len());
        assert_eq!(c.smtp.max_recipients, 100);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[smtp]\nmax_message_sise = 10\n").unwrap_err();
        assert!(e.contains("max_message_sise"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("[[listener]]\nprotocol = \"smtp\"\nbind = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("bind"), "{e}");
        let e = Config::parse("[[listener]]\nprotocol = \"gopher\"\nbind = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("protocol") || e.contains("gopher"), "{e}");
        let e = Config::parse("[smtp]\nmax_recipients = 0\n").unwrap_err();
        assert!(e.contains("smtp.max_recipients"), "{e}");
        let e = Config::parse("[server]\nlocal_domains = [\"bad domain\"]\n").unwrap_err();
        assert!(e.contains("server.local_domains"), "{e}");
        let e = Config::parse("[policies]\nthreads = 100000\n").unwrap_err();
        assert!(e.contains("policies.threads"), "{e}");
        let c = Config::parse("[policies]\nthreads = 0\n").unwrap();
        assert_eq!(c.policies.threads, 0, "0 runs chains inline");
    }

    #[test]
    fn shipped_examples_parse() {
        for text in [
            include_str!("../../examples/mailhost.toml"),
            include_str!("../../examples/edge-gateway.toml"),
            include_str!("../../examples/plugin-dev.toml"),
        ] {
            Config::parse(text).unwrap();
        }
    }

    #[test]
    fn the_documented_keys_parse() {
        let text = r#"
[server]
hostname = "mx.example.test"
data_dir = "./mailgate-data"
local_domains = ["localhost"]
[[listener]]
protocol = "smtp"
bind = "127.0.0.1:2525"
tls = "starttls"
[tls]
cert = "path.pem"
key = "path.pem"
[policies]
dir = "./policies"
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.server.hostname, "mx.example.test");
        assert_eq!(c.listeners[0].tls, TlsMode::Starttls);
    }
}
