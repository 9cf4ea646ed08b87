//! IDLE (RFC 2177).

use super::*;

impl Session {
    pub(super) async fn idle(&mut self, tag: &str) -> Flow {
        self.conn.write(b"+ idling\r\n");
        let mut shutdown = self.shared.shutdown.clone();
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            self.sync(true);
            self.refresh_contexts();
            if self.conn.flush().await.is_err() {
                return Flow::Close;
            }
            let signal = self.notify_signal();
            let notified = async {
                match signal {
                    Some(s) => s.await,
                    None => std::future::pending::<()>().await,
                }
            };
            let mut watch = self.selected.as_ref().map(|s| s.watch.clone());
            let changed = async {
                match watch.as_mut() {
                    Some(w) => {
                        let _ = w.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                line = self.conn.read_line(self.cfg.max_line_length, deadline.saturating_duration_since(tokio::time::Instant::now())) => {
                    match line {
                        Ok(Line::Ok(l)) if l.eq_ignore_ascii_case(b"DONE") => {
                            self.sync(true);
                            self.refresh_contexts();
                            self.conn.write(format!("{tag} OK IDLE terminated\r\n").as_bytes());
                            return Flow::Continue;
                        }
                        Ok(_) => {
                            self.conn.write(format!("{tag} BAD Expected DONE\r\n").as_bytes());
                            return Flow::Continue;
                        }
                        Err(ReadError::Timeout) => {
                            self.untagged("BYE Autologout; idle for too long");
                            return Flow::Close;
                        }
                        Err(_) => return Flow::Close,
                    }
                }
                _ = changed => {}
                _ = notified => self.notify_deliver().await,
                _ = shutdown.changed() => {
                    self.untagged("BYE Server shutting down");
                    return Flow::Close;
                }
            }
        }
    }
}
