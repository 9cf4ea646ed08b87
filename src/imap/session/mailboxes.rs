//! Mailbox management: CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS.

use super::*;

impl Session {
    pub(super) fn create(&mut self, name: &str) -> Reply {
        let name = self.mailbox_arg(name)?;
        if name == "INBOX" {
            return no("[ALREADYEXISTS] INBOX always exists");
        }
        let store = &self.shared.store;
        let account = self.account().to_string();
        if store.mailbox(&account, &name)?.is_some() {
            return no(format!("[ALREADYEXISTS] Mailbox {name} already exists"));
        }
        // Superiors are created too (RFC 3501 §6.3.3).
        let parts: Vec<&str> = name.split(DELIM).collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if parent != "INBOX" && store.mailbox(&account, &parent)?.is_none() {
                store.create_mailbox(&account, &parent, None)?;
            }
        }
        store.create_mailbox(&account, &name, None)?;
        Ok("CREATE completed".into())
    }

    pub(super) fn delete(&mut self, name: &str) -> Reply {
        let name = self.mailbox_arg(name)?;
        if name == "INBOX" {
            return no("[CANNOT] INBOX cannot be deleted");
        }
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let Some(mb) = store.mailbox(&account, &name)? else {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        };
        let prefix = format!("{name}/");
        if store.mailboxes(&account)?.iter().any(|m| m.name.starts_with(&prefix)) {
            // Dovecot and Cyrus refuse too: deleting would leave a \Noselect husk.
            return no("[INUSE] Mailbox has children; delete them first");
        }
        if mb.special_use.is_some() {
            tracing::info!(account, name, "deleting a special-use mailbox");
        }
        if self.selected.as_ref().is_some_and(|s| s.mailbox.id == mb.id) {
            self.selected = None;
            self.untagged("OK [CLOSED] Mailbox deleted");
        }
        store.delete_mailbox(&account, &name)?;
        Ok("DELETE completed".into())
    }

    pub(super) fn rename(&mut self, from: &str, to: &str) -> Reply {
        let from = self.mailbox_arg(from)?;
        let to = self.mailbox_arg(to)?;
        if to == "INBOX" {
            return no("[ALREADYEXISTS] INBOX exists");
        }
        if to.starts_with(&format!("{from}/")) {
            return no("[CANNOT] Cannot rename a mailbox into itself");
        }
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let parts: Vec<&str> = to.split(DELIM).collect();
        store.rename_mailbox(&account, &from, &to, DELIM)?;
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if parent != "INBOX" && store.mailbox(&account, &parent)?.is_none() {
                store.create_mailbox(&account, &parent, None)?;
            }
        }
        Ok("RENAME completed".into())
    }

    pub(super) fn subscribe(&mut self, name: &str, on: bool) -> Reply {
        let name = self.mailbox_arg(name)?;
        if on && self.shared.store.mailbox(self.account(), &name)?.is_none() {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        }
        self.shared.store.set_subscribed(self.account(), &name, on)?;
        Ok(if on {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        }
        .into())
    }

    pub(super) fn full_pattern(&self, reference: &str, pattern: &str) -> Result<String, Fail> {
        let decode = |s: &str| -> Result<String, Fail> {
            if self.utf8_names() {
                Ok(s.to_string())
            } else {
                // Not valid modified UTF-7: still a pattern (an atom), which no stored name
                // can match, so LIST answers OK with nothing.
                Ok(crate::imap::mutf7::decode(s).unwrap_or_else(|| format!("\u{0}{s}")))
            }
        };
        let (r, p) = (decode(reference)?, decode(pattern)?);
        Ok(if p.starts_with(DELIM) || r.is_empty() {
            p
        } else if r.ends_with(DELIM) {
            format!("{r}{p}")
        } else {
            format!("{r}{DELIM}{p}")
        })
    }

    pub(super) fn list(&mut self, reference: &str, patterns: &[String], o: &ListOptions) -> Reply {
        if patterns.len() == 1 && patterns[0].is_empty() && !o.extended {
            self.untagged("LIST (\\Noselect) \"/\" \"\"");
            return Ok("LIST completed".into());
        }
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let boxes = store.mailboxes(&account)?;
        let subs = store.subscriptions(&account)?;
        let full: Vec<String> = patterns
            .iter()
            .map(|p| self.full_pattern(reference, p))
            .collect::<Result<_, _>>()?;
        let matches = |name: &str| full.iter().any(|p| list_match(p, name));
        // Every name that exists, plus parents implied by a child (`a` for `a/b`).
        let mut names: Vec<String> = boxes.iter().map(|b| b.name.clone()).collect();
        if o.subscribed {
            names.extend(subs.iter().cloned());
            if o.recursive_match {
                names.extend(subs.iter().flat_map(|s| parents(s)));
            }
        }
        names.extend(boxes.iter().flat_map(|b| parents(&b.name)));
        names.sort();
        names.dedup();
        for name in names {
            if !matches(&name) {
                continue;
            }
            let mb = boxes.iter().find(|b| b.name == name);
            let subscribed = subs.contains(&name);
            let prefix = format!("{name}/");
            // RFC 5258 §3.5: with RECURSIVEMATCH, a name the pattern matches is also given
            // for a subscribed descendant the pattern does not return.
            let childinfo =
                o.subscribed && o.recursive_match && subs.iter().any(|s| s.starts_with(&prefix) && !matches(s));
            if o.subscribed && !subscribed && !childinfo {
                continue;
            }
            let has_children = boxes.iter().any(|b| b.name.starts_with(&prefix));
            if mb.is_none() && !o.subscribed {
                // A parent that does not exist: shown only if its children are not.
                let child_listed = boxes.iter().any(|b| b.name.starts_with(&prefix) && matches(&b.name));
                if child_listed {
                    continue;
                }
            }
            if o.special_use_only && mb.and_then(|m| m.special_use.as_ref()).is_none() {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            match mb {
                None if o.extended => attrs.push("\\NonExistent"),
                None => attrs.push("\\Noselect"),
                Some(_) => {}
            }
            attrs.push(if has_children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            });
            if subscribed && (o.subscribed || o.ret_subscribed) {
                attrs.push("\\Subscribed");
            }
            if let Some(su) = mb.and_then(|m| m.special_use.as_deref()) {
                attrs.push(su);
            }
            let head = format!("* LIST ({}) \"/\" ", attrs.join(" "));
            let extra = if childinfo {
                " (\"CHILDINFO\" (\"SUBSCRIBED\"))"
            } else {
                ""
            };
            self.write_mailbox_name(&head, &name, extra);
            if let (Some(items), Some(mb)) = (&o.ret_status, mb) {
                let line = self.status_line(mb, items)?;
                self.write_mailbox_name("* STATUS ", &name, &format!(" ({line})"));
            }
        }
        Ok("LIST completed".into())
    }

    pub(super) fn lsub(&mut self, reference: &str, pattern: &str) -> Reply {
        let pattern = self.full_pattern(reference, pattern)?;
        let store = self.shared.store.clone();
        let account = self.account().to_string();
        let subs = store.subscriptions(&account)?;
        let mut names: Vec<String> = subs
            .iter()
            .cloned()
            .chain(subs.iter().flat_map(|s| parents(s)))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            if !list_match(&pattern, &name) {
                continue;
            }
            let noselect = if subs.contains(&name) {
                store.mailbox(&account, &name)?.is_none()
            } else {
                // RFC 3501 §6.3.9: a parent that is not subscribed is given (as \Noselect)
                // only for a subscribed child that "%" hides.
                let prefix = format!("{name}/");
                if !subs.iter().any(|s| s.starts_with(&prefix) && !list_match(&pattern, s)) {
                    continue;
                }
                true
            };
            let attrs = if noselect { "\\Noselect" } else { "" };
            self.write_mailbox_name(&format!("* LSUB ({attrs}) \"/\" "), &name, "");
        }
        Ok("LSUB completed".into())
    }

    pub(super) fn status_line(&self, mb: &MailboxMeta, items: &[StatusItem]) -> Result<String, Fail> {
        let msgs = self.shared.store.messages(mb.id)?;
        Ok(self.status_of(mb, &msgs, items))
    }

    /// The STATUS items of a mailbox whose messages are `msgs`.
    pub(super) fn status_of(
        &self,
        mb: &MailboxMeta,
        msgs: &[crate::store::StoredMessage],
        items: &[StatusItem],
    ) -> String {
        let mut parts = Vec::new();
        for it in items {
            parts.push(match it {
                StatusItem::Messages => format!("MESSAGES {}", msgs.len()),
                StatusItem::Recent => {
                    // Looked at, not claimed: the session that selects the mailbox gets them.
                    let dates = msgs.iter().map(|m| (m.uid, m.meta.internal_date));
                    let first = self.shared.recent.peek(mb.id, dates, mb.uidnext);
                    format!("RECENT {}", msgs.iter().filter(|m| m.uid >= first).count())
                }
                StatusItem::UidNext => format!("UIDNEXT {}", mb.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", mb.uidvalidity),
                StatusItem::Unseen => format!(
                    "UNSEEN {}",
                    msgs.iter().filter(|m| !m.meta.flags.contains(Flags::SEEN)).count()
                ),
                StatusItem::Deleted => format!(
                    "DELETED {}",
                    msgs.iter().filter(|m| m.meta.flags.contains(Flags::DELETED)).count()
                ),
                StatusItem::Size => format!("SIZE {}", msgs.iter().map(|m| m.meta.size).sum::<u64>()),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", mb.highestmodseq),
            });
        }
        parts.join(" ")
    }

    pub(super) fn status(&mut self, name: &str, items: &[StatusItem]) -> Reply {
        let name = self.mailbox_arg(name)?;
        let Some(mb) = self.shared.store.mailbox(self.account(), &name)? else {
            return no(format!("[NONEXISTENT] Mailbox {name} does not exist"));
        };
        let line = self.status_line(&mb, items)?;
        self.write_mailbox_name("* STATUS ", &name, &format!(" ({line})"));
        Ok("STATUS completed".into())
    }
}

/// The names above `name` in the hierarchy (`a`, `a/b` for `a/b/c`).
fn parents(name: &str) -> Vec<String> {
    let parts: Vec<&str> = name.split(DELIM).collect();
    (1..parts.len()).map(|i| parts[..i].join("/")).collect()
}
