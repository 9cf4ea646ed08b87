//! Logins for POP3 and IMAP: password checks off the async threads, failure delays and a
//! per-IP failure budget, the plaintext-over-cleartext policy, and SASL PLAIN/LOGIN decoding.

use crate::config::{Auth as AuthConfig, Plaintext};
use crate::mail::address::Address;
use crate::store::MailStore;
use base64::Engine as _;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a login attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The canonical account address.
    Ok(String),
    Failed,
    /// Too many failures from this IP lately: refused without checking.
    Throttled,
    /// The store could not be read.
    TempFail,
}

pub struct Authenticator {
    store: Arc<dyn MailStore>,
    config: AuthConfig,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    cache: LoginCache,
    /// Turns for password checks ([`AuthConfig::max_parallel_checks`]): each argon2 check
    /// holds ~19 MiB while it runs, so a flood of logins (real or not) must queue rather than
    /// run by the hundred on the blocking pool. Unbounded, the memory allocator kept the
    /// high-water mark of concurrent checks, and the server's RSS crept up under load.
    checks: Arc<tokio::sync::Semaphore>,
    /// Checks running now, and the most seen running at once.
    running_checks: Arc<(AtomicUsize, AtomicUsize)>,
}

/// Logins that succeeded lately (Dovecot's auth cache): a client that reconnects with the
/// same password skips the argon2 check (tens of milliseconds of CPU) for `cache_ttl_secs`.
/// Entries hold a keyed SHA-256 of the stored hash and the password, under a secret made at
/// start, so a changed password (or hash) misses; failures are never cached.
struct LoginCache {
    secret: [u8; 32],
    ttl: Duration,
    entries: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

/// Accounts a login cache holds at most.
const LOGIN_CACHE_MAX: usize = 10_000;

impl LoginCache {
    fn new(ttl: Duration) -> LoginCache {
        let mut secret = [0u8; 32];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut secret);
        }
        // No urandom: the cache stays off rather than keyed by a guessable secret.
        let ttl = if secret == [0u8; 32] { Duration::ZERO } else { ttl };
        LoginCache {
            secret,
            ttl,
            entries: Mutex::default(),
        }
    }

    fn digest(&self, stored_hash: &str, password: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update((stored_hash.len() as u64).to_be_bytes());
        h.update(stored_hash.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn hit(&self, address: &str, digest: &[u8; 32]) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(address)
            .is_some_and(|(d, at)| d == digest && at.elapsed() < self.ttl)
    }

    fn insert(&self, address: &str, digest: [u8; 32]) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= LOGIN_CACHE_MAX {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= LOGIN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(address.to_string(), (digest, Instant::now()));
    }
}

impl Authenticator {
    pub fn new(store: Arc<dyn MailStore>, config: AuthConfig) -> Authenticator {
        Authenticator {
            store,
            cache: LoginCache::new(Duration::from_secs(config.cache_ttl_secs)),
            checks: Arc::new(tokio::sync::Semaphore::new(config.parallel_checks())),
            running_checks: Arc::default(),
            config,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `password` against `phc` off the async threads, when a turn is free.
    async fn verify(&self, password: &str, phc: &str) -> Option<bool> {
        let turn = self.checks.clone().acquire_owned().await.ok()?;
        let (pw, phc, count) = (password.to_string(), phc.to_string(), self.running_checks.clone());
        tokio::task::spawn_blocking(move || {
            let now = count.0.fetch_add(1, Ordering::SeqCst) + 1;
            count.1.fetch_max(now, Ordering::SeqCst);
            let ok = verify_password(&pw, &phc);
            count.0.fetch_sub(1, Ordering::SeqCst);
            drop(turn);
            ok
        })
        .await
        .ok()
    }

    /// The most password checks that have run at once.
    pub fn peak_parallel_checks(&self) -> usize {
        self.running_checks.1.load(Ordering::SeqCst)
    }

    /// May a plaintext password be sent on this connection?
    pub fn plaintext_allowed(&self, tls: bool, peer: IpAddr) -> bool {
        tls || match self.config.plaintext {
            Plaintext::Always => true,
            Plaintext::Loopback => peer.is_loopback(),
            Plaintext::Never => false,
        }
    }

    fn recent_failures(&self, ip: IpAddr) -> u32 {
        let window = Duration::from_secs(self.config.failure_window_secs);
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = map.get_mut(&ip) else { return 0 };
        while q.front().is_some_and(|t| t.elapsed() > window) {
            q.pop_front();
        }
        let n = q.len() as u32;
        if n == 0 {
            map.remove(&ip);
        }
        n
    }

    fn note_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let q = map.entry(ip).or_default();
        q.push_back(Instant::now());
        while q.len() > self.config.max_failures_per_ip as usize {
            q.pop_front();
        }
    }

    /// Checks a user name and password. Failures wait `failure_delay_ms` before returning.
    pub async fn login(&self, ip: IpAddr, user: &str, password: &str) -> Outcome {
        let failures = |why| crate::metrics::inc(&crate::metrics::get().login_failures, "outcome", why);
        if self.recent_failures(ip) >= self.config.max_failures_per_ip {
            failures("throttled");
            return Outcome::Throttled;
        }
        let outcome = self.check(user, password).await;
        if outcome == Outcome::Failed {
            failures("failed");
            self.note_failure(ip);
            tracing::info!(%ip, user, "login failed");
            tokio::time::sleep(Duration::from_millis(self.config.failure_delay_ms)).await;
        }
        outcome
    }

    async fn check(&self, user: &str, password: &str) -> Outcome {
        let Ok(address) = Address::parse(user) else {
            return Outcome::Failed;
        };
        let address = address.to_string();
        let account = match self.store.account(&address) {
            Ok(Some(a)) => a,
            Ok(None) => {
                // Spend the same time as a real check so timing does not reveal accounts.
                let _ = self.verify(password, dummy_hash()).await;
                return Outcome::Failed;
            }
            Err(e) => {
                tracing::error!("account lookup: {e}");
                return Outcome::TempFail;
            }
        };
        let digest = self.cache.digest(&account.password_hash, password);
        if self.cache.hit(&address, &digest) {
            return Outcome::Ok(address);
        }
        match self.verify(password, &account.password_hash).await {
            Some(true) => {
                self.cache.insert(&address, digest);
                Outcome::Ok(address)
            }
            Some(false) => Outcome::Failed,
            None => Outcome::TempFail,
        }
    }
}

/// An argon2id hash (same parameters as real ones) checked for unknown users, so a miss costs
/// what a wrong password costs.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("no such user").unwrap_or_default())
}

pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()
}

pub fn b64_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Decodes a SASL PLAIN response (RFC 4616): `authzid NUL authcid NUL password`. An authzid
/// other than empty or the authcid (acting as someone else) is refused.
pub fn sasl_plain(response_b64: &str) -> Option<(String, String)> {
    let raw = b64_decode(response_b64)?;
    let mut parts = raw.split(|&b| b == 0);
    let authz = std::str::from_utf8(parts.next()?).ok()?;
    let authc = std::str::from_utf8(parts.next()?).ok()?;
    let pass = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || authc.is_empty() || (!authz.is_empty() && authz != authc) {
        return None;
    }
    Some((authc.to_string(), pass.to_string()))
}

/// Decodes the two SASL LOGIN responses (user name, then password), each base64.
pub fn sasl_login(user_b64: &str, password_b64: &str) -> Option<(String, String)> {
    let dec = |s: &str| b64_decode(s).and_then(|b| String::from_utf8(b).ok());
    let user = dec(user_b64)?;
    (!user.is_empty()).then_some(())?;
    Some((user, dec(password_b64)?))
}

/// Hashes a password with argon2id (about 25 ms: call it off async threads).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing password: {e}"))
}

/// Checks a password against a stored PHC hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier;
    match argon2::password_hash::phc::PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of logins (right, wrong, unknown users; no cache) runs at most
    /// `max_parallel_checks` argon2 checks at once, and each gets its right answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn password_checks_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MailStore> = Arc::new(crate::store::SledStore::open(dir.path(), 16).unwrap());
        store
            .create_account("a@localhost", &hash_password("right").unwrap())
            .unwrap();
        let config = AuthConfig {
            max_parallel_checks: 2,
            cache_ttl_secs: 0,
            failure_delay_ms: 0,
            max_failures_per_ip: 1000,
            ..AuthConfig::default()
        };
        let auth = Arc::new(Authenticator::new(store, config));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let logins = (0..12).map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let (user, pw, ok) = match i % 3 {
                    0 => ("a@localhost", "right", true),
                    1 => ("a@localhost", "wrong", false),
                    _ => ("nobody@localhost", "right", false),
                };
                let outcome = auth.login(ip, user, pw).await;
                assert_eq!(matches!(outcome, Outcome::Ok(_)), ok, "{user} {pw}: {outcome:?}");
            })
        });
        for l in logins.collect::<Vec<_>>() {
            l.await.unwrap();
        }
        assert_eq!(
            auth.peak_parallel_checks(),
            2,
            "two at a time, and two did run together"
        );
    }

    #[test]
    fn plain_decoding() {
        let ok = b64_encode(b"\0alice@localhost\0pw with space");
        assert_eq!(
            sasl_plain(&ok),
            Some(("alice@localhost".into(), "pw with space".into()))
        );
        let same = b64_encode(b"alice@localhost\0alice@localhost\0pw");
        assert!(sasl_plain(&same).is_some());
        let other = b64_encode(b"bob@localhost\0alice@localhost\0pw");
        assert_eq!(sasl_plain(&other), None);
        assert_eq!(sasl_plain("not base64!"), None);
        assert_eq!(sasl_plain(&b64_encode(b"no nuls")), None);
    }

    #[test]
    fn dummy_hash_is_well_formed() {
        assert!(argon2::password_hash::phc::PasswordHash::new(dummy_hash()).is_ok());
        assert!(!verify_password("guess", dummy_hash()));
    }

    #[test]
    fn login_cache_remembers_only_the_same_password_and_hash() {
        let c = LoginCache::new(Duration::from_secs(60));
        let d = c.digest("$argon2id$one", "secret");
        assert!(!c.hit("a@x", &d));
        c.insert("a@x", d);
        assert!(c.hit("a@x", &d));
        assert!(!c.hit("b@x", &d));
        assert!(!c.hit("a@x", &c.digest("$argon2id$one", "other")));
        assert!(!c.hit("a@x", &c.digest("$argon2id$two", "secret")));
        let off = LoginCache::new(Duration::ZERO);
        off.insert("a@x", d);
        assert!(!off.hit("a@x", &d));
    }
}
