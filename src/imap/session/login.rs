//! LOGIN, AUTHENTICATE, STARTTLS, ENABLE.

use super::*;

impl Session {
    pub(super) async fn starttls(&mut self, tag: &str) -> Flow {
        let Some(acceptor) = self.shared.tls.clone().filter(|_| self.starttls_available()) else {
            self.conn
                .write(format!("{tag} BAD STARTTLS is not available here\r\n").as_bytes());
            return Flow::Continue;
        };
        self.conn
            .write(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes());
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.peer, "IMAP TLS handshake failed: {e}");
            return Flow::Close;
        }
        Flow::Continue
    }

    pub(super) async fn login(&mut self, user: &str, password: &str) -> Reply {
        if !self.plaintext_ok() {
            return no("[PRIVACYREQUIRED] Plaintext login is disallowed on an unencrypted connection; use STARTTLS");
        }
        self.finish_login(user, password).await
    }

    pub(super) async fn finish_login(&mut self, user: &str, password: &str) -> Reply {
        match self.shared.auth.login(self.peer.ip(), user, password).await {
            Outcome::Ok(account) => {
                tracing::info!(peer = %self.peer, account, "IMAP login");
                self.user = Some(account);
                Ok(format!("[CAPABILITY {}] Logged in", self.capabilities()))
            }
            Outcome::Failed => no("[AUTHENTICATIONFAILED] Authentication failed"),
            Outcome::Throttled => no("[UNAVAILABLE] Too many failed logins from your address; try later"),
            Outcome::TempFail => no("[UNAVAILABLE] Temporary failure; try again later"),
        }
    }

    pub(super) async fn authenticate(&mut self, mechanism: &str, initial: Option<String>) -> Reply {
        if mechanism != "PLAIN" {
            return no("[CANNOT] Unsupported mechanism; use PLAIN");
        }
        if !self.plaintext_ok() {
            return no("[PRIVACYREQUIRED] Plaintext authentication is disallowed without TLS; use STARTTLS");
        }
        let response = match initial {
            Some(i) if i == "=" => String::new(),
            Some(i) => i,
            None => {
                self.conn.write(b"+ \r\n");
                match self.conn.read_line(self.cfg.max_line_length, self.timeout()).await {
                    Ok(Line::Ok(l)) if l == b"*" => return bad("Authentication cancelled"),
                    Ok(Line::Ok(l)) => String::from_utf8_lossy(&l).into_owned(),
                    _ => return bad("Authentication failed"),
                }
            }
        };
        let Some((user, pass)) = auth::sasl_plain(&response) else {
            return bad("Invalid SASL PLAIN response");
        };
        self.finish_login(&user, &pass).await
    }

    pub(super) fn enable(&mut self, caps: &[String]) -> String {
        let mut enabled = Vec::new();
        for c in caps {
            match c.as_str() {
                "CONDSTORE" => {
                    self.condstore = true;
                    enabled.push("CONDSTORE");
                }
                // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3).
                "QRESYNC" => {
                    self.condstore = true;
                    self.qresync = true;
                    enabled.push("QRESYNC");
                }
                "IMAP4REV2" => {
                    self.rev2 = true;
                    enabled.push("IMAP4rev2");
                }
                _ => {}
            }
        }
        self.untagged(format!("ENABLED {}", enabled.join(" ")).trim_end());
        "ENABLE completed".into()
    }
}
