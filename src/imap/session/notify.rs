//! NOTIFY (RFC 5465): the client says which mailboxes and events it wants to hear of, and
//! the session tells it as they happen, between commands and during IDLE, without being
//! asked:
//!
//! - the selected mailbox (`SELECTED`): EXISTS, EXPUNGE/VANISHED and FETCH FLAGS at once,
//!   with the FETCH items `MessageNew` names for each new message (never setting `\Seen`);
//!   `SELECTED-DELAYED` holds expunges back for a command that may report them;
//! - other mailboxes (`INBOXES`, `PERSONAL`, `SUBSCRIBED`, `SUBTREE`, `MAILBOXES`): a STATUS
//!   response (MESSAGES UIDNEXT UIDVALIDITY, and HIGHESTMODSEQ with `FlagChange`) when mail
//!   comes or goes or flags change; `MailboxName` and `SubscriptionChange` as LIST responses
//!   (`\NonExistent` for a deleted mailbox, `OLDNAME` for a renamed one).
//!
//! Events come from the store's change notices: each watched mailbox's, and the account's
//! mailbox-list notice (`store::locks::mailbox_list_notice`), so changes made on another node
//! sharing the store are heard too. What this session does itself to the list of mailboxes
//! it already knows from its own command and is not repeated.

use super::*;
use crate::imap::command::{NotifyEvent, NotifyFilter, NotifyGroup, NotifySpec};
use std::collections::{HashMap, HashSet};
use tokio::sync::watch;

/// The events NOTIFY offers, for `NO [BADEVENT (...)]`.
const EVENTS: &str = "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange";

#[derive(Default, Clone, Copy)]
struct Events {
    messages: bool,
    flags: bool,
    names: bool,
    subscriptions: bool,
}

impl Events {
    fn of(list: &[NotifyEvent]) -> Events {
        let mut e = Events::default();
        for ev in list {
            match ev {
                NotifyEvent::MessageNew(_) | NotifyEvent::MessageExpunge => e.messages = true,
                NotifyEvent::FlagChange => e.flags = true,
                NotifyEvent::MailboxName => e.names = true,
                NotifyEvent::SubscriptionChange => e.subscriptions = true,
                NotifyEvent::Other(_) => {}
            }
        }
        e
    }

    fn or(self, o: Events) -> Events {
        Events {
            messages: self.messages || o.messages,
            flags: self.flags || o.flags,
            names: self.names || o.names,
            subscriptions: self.subscriptions || o.subscriptions,
        }
    }
}

/// A non-selected mailbox being watched, with what the client was last told of it.
struct Watched {
    name: String,
    rx: watch::Receiver<u64>,
    events: Events,
    last: (usize, u32, u64),
}

pub(super) struct State {
    /// Push changes to the selected mailbox between commands: `Some(delayed)`.
    selected: Option<bool>,
    /// FETCH items for each new message in the selected mailbox.
    fetch: Vec<FetchAtt>,
    /// The non-selected groups, with mailbox names as stored.
    groups: Vec<(NotifyFilter, Events)>,
    watched: HashMap<u64, Watched>,
    /// The account's mailbox list, when MailboxName or SubscriptionChange is wanted.
    list: Option<watch::Receiver<u64>>,
    /// The names by mailbox id, and the subscriptions, as the client knows them.
    names: HashMap<u64, String>,
    subscribed: HashSet<String>,
}

impl Session {
    /// NOTIFY SET / NOTIFY NONE.
    pub(super) fn notify_command(&mut self, spec: Option<NotifySpec>) -> Reply {
        let Some(spec) = spec else {
            self.notify = None;
            return Ok("NOTIFY completed".into());
        };
        if spec
            .groups
            .iter()
            .flat_map(|g| &g.events)
            .any(|e| matches!(e, NotifyEvent::Other(_)))
        {
            return no(format!("[BADEVENT ({EVENTS})] Only these events are offered"));
        }
        let mut state = State {
            selected: None,
            fetch: Vec::new(),
            groups: Vec::new(),
            watched: HashMap::new(),
            list: None,
            names: HashMap::new(),
            subscribed: HashSet::new(),
        };
        let mut seen_selected = false;
        for NotifyGroup { filter, events } in &spec.groups {
            let new = events.iter().any(|e| matches!(e, NotifyEvent::MessageNew(_)));
            let expunge = events.contains(&NotifyEvent::MessageExpunge);
            if new != expunge {
                return bad("MessageNew and MessageExpunge go together (RFC 5465 §5)");
            }
            if events.contains(&NotifyEvent::FlagChange) && !new {
                return bad("FlagChange needs MessageNew and MessageExpunge (RFC 5465 §5)");
            }
            let e = Events::of(events);
            match filter {
                NotifyFilter::Selected | NotifyFilter::SelectedDelayed => {
                    if seen_selected {
                        return bad("SELECTED or SELECTED-DELAYED once");
                    }
                    seen_selected = true;
                    if e.names || e.subscriptions {
                        return bad("Only message events are for the selected mailbox");
                    }
                    if e.messages {
                        state.selected = Some(*filter == NotifyFilter::SelectedDelayed);
                    }
                    for ev in events {
                        if let NotifyEvent::MessageNew(atts) = ev {
                            if atts
                                .iter()
                                .any(|a| matches!(a, FetchAtt::Rfc822 | FetchAtt::Rfc822Text))
                            {
                                return bad("A notice may not set \\Seen: use BODY.PEEK[...] in MessageNew");
                            }
                            state.fetch = atts
                                .iter()
                                .map(|a| match a {
                                    FetchAtt::Section {
                                        section,
                                        partial,
                                        binary,
                                        ..
                                    } => FetchAtt::Section {
                                        section: section.clone(),
                                        partial: *partial,
                                        binary: *binary,
                                        peek: true,
                                    },
                                    other => other.clone(),
                                })
                                .collect();
                        }
                    }
                }
                other => {
                    if events
                        .iter()
                        .any(|ev| matches!(ev, NotifyEvent::MessageNew(a) if !a.is_empty()))
                    {
                        return bad("FETCH items in MessageNew are for the selected mailbox only");
                    }
                    let names = |list: &[String]| -> Vec<String> {
                        list.iter().filter_map(|n| self.mailbox_arg(n).ok()).collect()
                    };
                    let f = match other {
                        NotifyFilter::Subtree(l) => NotifyFilter::Subtree(names(l)),
                        NotifyFilter::Mailboxes(l) => NotifyFilter::Mailboxes(names(l)),
                        f => f.clone(),
                    };
                    state.groups.push((f, e));
                }
            }
        }
        let any = state.groups.iter().fold(Events::default(), |a, (_, e)| a.or(*e));
        let account = self.account().to_string();
        let store = self.shared.store.clone();
        if any.names || any.subscriptions || state.groups.iter().any(|(f, _)| *f == NotifyFilter::Subscribed) {
            let mut rx = store.watch(crate::store::locks::mailbox_list_notice(&account));
            rx.borrow_and_update();
            state.list = Some(rx);
        }
        self.notify = Some(state);
        self.notify_rebuild()?;
        if spec.status {
            let selected = self.selected.as_ref().map(|s| s.mailbox.id);
            let ids: Vec<u64> = self.notify_state().watched.keys().copied().collect();
            for id in ids {
                if Some(id) != selected {
                    self.notify_status(id, true)?;
                }
            }
        }
        Ok("NOTIFY completed".into())
    }

    fn notify_state(&mut self) -> &mut State {
        self.notify.as_mut().expect("NOTIFY is set")
    }

    /// Works out which mailboxes the groups name now, watching new ones and dropping gone ones.
    fn notify_rebuild(&mut self) -> Result<(), Fail> {
        let account = self.account().to_string();
        let store = self.shared.store.clone();
        let mailboxes = store.mailboxes(&account)?;
        let subscribed: HashSet<String> = store.subscriptions(&account)?.into_iter().collect();
        let state = self.notify_state();
        let mut keep: HashMap<u64, Watched> = HashMap::new();
        for mb in &mailboxes {
            let events = state
                .groups
                .iter()
                .filter(|(f, _)| filter_matches(f, &mb.name, &subscribed))
                .fold(Events::default(), |a, (_, e)| a.or(*e));
            if !(events.messages || events.flags) {
                continue;
            }
            let w = match state.watched.remove(&mb.id) {
                Some(mut w) => {
                    w.name = mb.name.clone();
                    w.events = events;
                    w
                }
                None => {
                    let mut rx = store.watch(mb.id);
                    rx.borrow_and_update();
                    let count = store.messages(mb.id)?.len();
                    Watched {
                        name: mb.name.clone(),
                        rx,
                        events,
                        last: (count, mb.uidnext, mb.highestmodseq),
                    }
                }
            };
            keep.insert(mb.id, w);
        }
        state.watched = keep;
        state.names = mailboxes.iter().map(|m| (m.id, m.name.clone())).collect();
        state.subscribed = subscribed;
        Ok(())
    }

    /// A STATUS response for a watched mailbox, if it changed in a way the client asked
    /// about (or always, for NOTIFY SET STATUS).
    fn notify_status(&mut self, id: u64, always: bool) -> Result<(), Fail> {
        let Some(mb) = self.shared.store.mailbox_by_id(id)? else {
            return Ok(());
        };
        let msgs = self.shared.store.messages(id)?;
        let state = self.notify_state();
        let Some(w) = state.watched.get_mut(&id) else {
            return Ok(());
        };
        let now = (msgs.len(), mb.uidnext, mb.highestmodseq);
        let messages_changed = now.0 != w.last.0 || now.1 != w.last.1;
        let report = always || (w.events.messages && messages_changed) || (w.events.flags && now.2 != w.last.2);
        w.last = now;
        if !report {
            return Ok(());
        }
        let mut items = vec![StatusItem::Messages, StatusItem::UidNext, StatusItem::UidValidity];
        if w.events.flags {
            items.push(StatusItem::HighestModSeq);
        }
        let name = w.name.clone();
        let line = self.status_of(&mb, &msgs, &items);
        self.write_mailbox_name("* STATUS ", &name, &format!(" ({line})"));
        Ok(())
    }

    /// A future that ends when anything NOTIFY watches may have changed; `None` when there
    /// is nothing to wait for. It owns copies of the receivers, so the session stays free.
    pub(super) fn notify_signal(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let state = self.notify.as_ref()?;
        let mut rxs: Vec<watch::Receiver<u64>> = state.watched.values().map(|w| w.rx.clone()).collect();
        rxs.extend(state.list.clone());
        if state.selected.is_some()
            && let Some(sel) = &self.selected
        {
            rxs.push(sel.watch.clone());
        }
        if rxs.is_empty() {
            return None;
        }
        Some(async move {
            let waits: Vec<_> = rxs.iter_mut().map(|r| Box::pin(r.changed())).collect();
            let _ = futures_util::future::select_all(waits).await;
        })
    }

    /// Tells the client what changed among the things NOTIFY watches.
    pub(super) async fn notify_deliver(&mut self) {
        let Some(state) = self.notify.as_ref() else { return };
        // The selected mailbox first: its updates, then the new messages' FETCH items.
        if let (Some(delayed), Some(sel)) = (state.selected, self.selected.as_ref())
            && sel.watch.has_changed().unwrap_or(false)
        {
            let before = sel.msgs.len();
            let fetch = state.fetch.clone();
            self.sync(!delayed);
            self.refresh_contexts();
            let after = self.selected.as_ref().map_or(0, |s| s.msgs.len());
            if !fetch.is_empty() && after > before {
                let set = SeqSet::Ranges(vec![(before as u64 + 1, after as u64)]);
                let _ = self.fetch(&set, fetch, None, false, false).await;
            }
        }
        if let Err(Fail::No(e) | Fail::Bad(e)) = self.notify_list_changes() {
            tracing::warn!("IMAP NOTIFY: {e}");
        }
        let selected = self.selected.as_ref().map(|s| s.mailbox.id);
        let Some(state) = self.notify.as_mut() else { return };
        let changed: Vec<u64> = state
            .watched
            .iter_mut()
            .filter(|(_, w)| w.rx.has_changed().unwrap_or(false))
            .map(|(id, w)| {
                w.rx.borrow_and_update();
                *id
            })
            .collect();
        let pushes_selected = state.selected.is_some();
        for id in changed {
            // The selected mailbox speaks through EXISTS and the like when SELECTED is set.
            if pushes_selected && Some(id) == selected {
                continue;
            }
            if let Err(Fail::No(e) | Fail::Bad(e)) = self.notify_status(id, false) {
                tracing::warn!("IMAP NOTIFY: {e}");
            }
        }
    }

    /// LIST responses for mailboxes created, deleted, renamed, subscribed or unsubscribed
    /// elsewhere; then the watched set is brought up to date.
    fn notify_list_changes(&mut self) -> Result<(), Fail> {
        let Some(rx) = self.notify.as_mut().and_then(|s| s.list.as_mut()) else {
            return Ok(());
        };
        if !rx.has_changed().unwrap_or(false) {
            return Ok(());
        }
        rx.borrow_and_update();
        let account = self.account().to_string();
        let mailboxes = self.shared.store.mailboxes(&account)?;
        let subscribed: HashSet<String> = self.shared.store.subscriptions(&account)?.into_iter().collect();
        let utf8 = self.utf8_names();
        let state = self.notify_state();
        let wants = |name: &str, subs: &HashSet<String>, pick: fn(&Events) -> bool| {
            state
                .groups
                .iter()
                .any(|(f, e)| pick(e) && filter_matches(f, name, subs))
        };
        let mut lines: Vec<(String, String, String)> = Vec::new();
        let now: HashMap<u64, String> = mailboxes.iter().map(|m| (m.id, m.name.clone())).collect();
        for (id, name) in &now {
            match state.names.get(id) {
                None if wants(name, &subscribed, |e| e.names) => {
                    lines.push(("* LIST () \"/\" ".into(), name.clone(), String::new()));
                }
                Some(old) if old != name && wants(name, &subscribed, |e| e.names) => {
                    let mut old_name = Vec::new();
                    write_mailbox(&mut old_name, old, utf8);
                    let old_name = String::from_utf8_lossy(&old_name);
                    lines.push((
                        "* LIST () \"/\" ".into(),
                        name.clone(),
                        format!(" (\"OLDNAME\" ({old_name}))"),
                    ));
                }
                _ => {}
            }
        }
        for (id, old) in &state.names {
            if !now.contains_key(id) && wants(old, &state.subscribed, |e| e.names) {
                lines.push(("* LIST (\\NonExistent) \"/\" ".into(), old.clone(), String::new()));
            }
        }
        for name in subscribed.symmetric_difference(&state.subscribed) {
            if wants(name, &subscribed, |e| e.subscriptions) || wants(name, &state.subscribed, |e| e.subscriptions) {
                let attr = if subscribed.contains(name) {
                    "(\\Subscribed)"
                } else {
                    "()"
                };
                lines.push((format!("* LIST {attr} \"/\" "), name.clone(), String::new()));
            }
        }
        for (prefix, name, suffix) in lines {
            self.write_mailbox_name(&prefix, &name, &suffix);
        }
        self.notify_rebuild()
    }

    /// After this session's own CREATE, DELETE, RENAME or (UN)SUBSCRIBE: the client knows,
    /// so NOTIFY takes the new list as known without telling it again.
    pub(super) fn notify_own_list_change(&mut self) {
        let Some(rx) = self.notify.as_mut().and_then(|s| s.list.as_mut()) else {
            return;
        };
        rx.borrow_and_update();
        if let Err(Fail::No(e) | Fail::Bad(e)) = self.notify_rebuild() {
            tracing::warn!("IMAP NOTIFY: {e}");
        }
    }
}

fn filter_matches(f: &NotifyFilter, name: &str, subscribed: &HashSet<String>) -> bool {
    match f {
        // RFC 5465 §6.2: the mailboxes a delivery agent may deliver to, or, for a server that
        // "cannot easily compute this set", PERSONAL. Policies file mail into any folder
        // (`on_deliver`'s `folder`; the spam thresholds into Junk), so it is all of them.
        NotifyFilter::Inboxes | NotifyFilter::Personal => true,
        NotifyFilter::Subscribed => subscribed.contains(name),
        NotifyFilter::Subtree(roots) => roots.iter().any(|r| {
            name == r
                || name
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with(DELIM))
        }),
        NotifyFilter::Mailboxes(list) => list.iter().any(|m| m == name),
        NotifyFilter::Selected | NotifyFilter::SelectedDelayed => false,
    }
}
