//! A plugin's manifest: the optional `NAME.toml` beside `NAME.lua` / `NAME.wasm`.
//!
//! ```toml
//! timeout_ms = 50          # wall time per call
//! memory_mb = 16           # Lua heap / WASM linear memory
//! instructions = 10000000  # Lua VM instructions per call
//! fuel = 50000000          # WASM fuel per call
//! dns_lookups = 10         # mailgate.dns calls per call
//! on_error = "continue"    # continue | tempfail | reject
//! fresh_instance = false   # WASM: new instance per call (isolation between messages)
//! auth = false             # needs SPF/DKIM/DMARC on event.auth (computed at data)
//! [config]                 # handed to the plugin as mailgate.config
//! words = ["viagra"]
//! ```

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log it in the trace and go on with the next policy (the message is not held up).
    #[default]
    Continue,
    /// Answer 451 4.3.0: the sender retries later, when the plugin may be fixed.
    Tempfail,
    /// Answer 550 5.7.1.
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Manifest {
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub instructions: u64,
    pub fuel: u64,
    pub dns_lookups: u32,
    pub on_error: OnError,
    /// WASM: a new instance for every call instead of reusing a clean one.
    pub fresh_instance: bool,
    /// The plugin reads `event.auth`: the server checks SPF, DKIM and DMARC at `data` (DNS
    /// round trips a server only makes when some policy asks for them).
    pub auth: bool,
    pub config: toml::Table,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            timeout_ms: 50,
            memory_mb: 16,
            instructions: 10_000_000,
            fuel: 500_000_000,
            dns_lookups: 10,
            on_error: OnError::Continue,
            fresh_instance: false,
            auth: false,
            config: toml::Table::new(),
        }
    }
}

impl Manifest {
    /// Reads the manifest beside `plugin` (same stem, `.toml`), or the defaults.
    pub fn for_plugin(plugin: &Path) -> Result<(Manifest, Option<String>), String> {
        let path = plugin.with_extension("toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Manifest::default(), None)),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let m: Manifest =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        if m.timeout_ms == 0 || m.memory_mb == 0 || m.instructions == 0 || m.fuel == 0 {
            return Err(format!("{}: budgets must be greater than 0", path.display()));
        }
        Ok((m, Some(text)))
    }
}
