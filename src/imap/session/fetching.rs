//! FETCH: bodies through `on_fetch`, then the data items.

use super::*;

/// Bodies a FETCH reads from the store at once, and about how many bytes of them.
const READ_AHEAD: usize = 64;
const READ_AHEAD_BYTES: u64 = 4 << 20;

impl Session {
    /// The bodies of the next messages of a FETCH (`next`, indices into the selected
    /// view), read from the store at once: up to [`READ_AHEAD`] of them or about
    /// [`READ_AHEAD_BYTES`], at least one. `None` for a body that is gone.
    fn read_ahead(&mut self, next: &[usize]) -> std::collections::VecDeque<Option<Arc<Vec<u8>>>> {
        let sel = self.selected();
        let mut ids = Vec::new();
        let mut bytes = 0;
        for &i in next.iter().take(READ_AHEAD) {
            if !ids.is_empty() && bytes >= READ_AHEAD_BYTES {
                break;
            }
            let meta = &sel.msgs[i].meta;
            bytes += meta.size;
            ids.push(meta.blob);
        }
        match self.shared.store.blobs(&ids) {
            Ok(bodies) => bodies.into_iter().map(|b| b.map(Arc::new)).collect(),
            Err(e) => {
                tracing::error!("IMAP: reading messages: {e}");
                ids.iter().map(|_| None).collect()
            }
        }
    }

    /// The message as this client may see it (on-fetch policies may hide or edit it).
    pub(super) async fn visible_body(&self, mailbox: &str, raw: Arc<Vec<u8>>) -> Result<Arc<Vec<u8>>, Fail> {
        let session = crate::hooks::contract::Session {
            client_ip: self.peer.ip().to_string(),
            helo: None,
            tls: self.conn.is_tls(),
            auth_user: self.user.clone(),
            listener: "imap".into(),
        };
        match crate::hooks::on_fetch(&self.policies, session, self.account(), mailbox, &raw).await {
            FetchView::Unchanged => Ok(raw),
            FetchView::Edited(b) => Ok(Arc::new(b)),
            FetchView::Hidden => no("[UNAVAILABLE] Message withheld by policy"),
            FetchView::Later => no("[UNAVAILABLE] Message unavailable now; try later"),
        }
    }

    pub(super) async fn fetch(
        &mut self,
        set: &SeqSet,
        mut atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
        uid: bool,
    ) -> Reply {
        if vanished && !(uid && self.qresync) {
            return bad("VANISHED needs UID FETCH and ENABLE QRESYNC");
        }
        if changed_since.is_some() || atts.contains(&FetchAtt::ModSeq) {
            self.enable_condstore();
        }
        if vanished {
            // Which of the UIDs asked for are gone (RFC 7162 §3.2.6), before the FETCHes.
            if let Some(line) = self.selected().vanished_earlier(Some(set)) {
                self.untagged(&line);
            }
        }
        if uid && !atts.contains(&FetchAtt::Uid) {
            atts.insert(0, FetchAtt::Uid);
        }
        if changed_since.is_some() && !atts.contains(&FetchAtt::ModSeq) {
            atts.push(FetchAtt::ModSeq);
        }
        let sel = self.selected();
        let mut idx = sel.resolve(set, uid).map_err(Fail::Bad)?;
        if let Some(cs) = changed_since {
            idx.retain(|&i| sel.msgs[i].meta.modseq > cs);
        }
        let read_only = sel.read_only;
        let mailbox_id = sel.mailbox.id;
        let mailbox_name = sel.mailbox.name.clone();
        // Reading a body without PEEK sets \Seen (RFC 3501 §6.4.5); done first so the FLAGS
        // in the response are the new ones.
        let sets_seen = atts.iter().any(|a| {
            matches!(
                a,
                FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::Section { peek: false, .. }
            )
        });
        if sets_seen && !read_only {
            let unseen: Vec<u32> = idx
                .iter()
                .filter(|&&i| !sel.msgs[i].meta.flags.contains(Flags::SEEN))
                .map(|&i| sel.msgs[i].uid)
                .collect();
            if !unseen.is_empty() {
                let r =
                    self.shared
                        .store
                        .store_flags(mailbox_id, &unseen, FlagOp::Add, Flags(Flags::SEEN), &[], None)?;
                let sel = self.selected();
                for (u, meta) in r.changed {
                    if let Some(i) = sel.seq_of_uid(u) {
                        sel.msgs[i].meta = meta;
                    }
                }
                if !atts.contains(&FetchAtt::Flags) {
                    atts.push(FetchAtt::Flags);
                }
            }
        }
        let needs_body = atts.iter().any(|a| {
            !matches!(
                a,
                FetchAtt::Flags | FetchAtt::InternalDate | FetchAtt::Rfc822Size | FetchAtt::Uid | FetchAtt::ModSeq
            )
        });
        let content = atts.iter().any(|a| {
            matches!(
                a,
                FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::Section { .. } | FetchAtt::BinarySize(_)
            )
        });
        let mut failed = false;
        let mut vanished = false;
        let mut ahead = std::collections::VecDeque::new();
        for (at, &i) in idx.iter().enumerate() {
            let (uid_i, meta) = {
                let e = &self.selected().msgs[i];
                (e.uid, e.meta.clone())
            };
            let raw = if needs_body {
                if ahead.is_empty() {
                    ahead = self.read_ahead(&idx[at..]);
                }
                match ahead.pop_front().flatten() {
                    Some(r) => Some(r),
                    None => {
                        vanished = true; // expunged meanwhile by another session
                        continue;
                    }
                }
            } else {
                None
            };
            let raw = match raw {
                Some(r) if content => match self.visible_body(&mailbox_name, r).await {
                    Ok(r) => Some(r),
                    Err(_) => {
                        failed = true;
                        continue;
                    }
                },
                r => r,
            };
            let condstore = self.condstore;
            let recent = self.is_recent(uid_i);
            let mut err = None;
            self.conn.write_with(|out| {
                let before = out.len();
                let item = Item {
                    seq: i + 1,
                    uid: uid_i,
                    meta: &meta,
                    recent,
                };
                if let Err(e) = write_fetch(out, &item, raw.as_deref().map(|v| &v[..]), &atts, condstore) {
                    out.truncate(before); // no half-written response
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                return no(e);
            }
            // Let the client read while we work: a 2000-message FETCH is many megabytes.
            if self.conn.pending_output() > FLUSH_AT && self.conn.flush().await.is_err() {
                return no("connection lost");
            }
        }
        if failed {
            return no("Some messages could not be fetched (withheld by policy)");
        }
        // Expunged by another session while we read (RFC 2180 §4.1, RFC 5530): by UID the
        // message is simply gone (the EXPUNGE follows this command); by sequence number the
        // client named a message it cannot have, and is told so.
        if vanished && !uid {
            return no("[EXPUNGEISSUED] Some of the messages were expunged meanwhile");
        }
        if vanished {
            return Ok("[EXPUNGEISSUED] UID FETCH completed; some messages were expunged meanwhile".into());
        }
        Ok(if uid { "UID FETCH completed" } else { "FETCH completed" }.into())
    }
}

/// The message a FETCH response is about.
pub(super) struct Item<'a> {
    pub seq: usize,
    pub uid: u32,
    pub meta: &'a MessageMeta,
    /// `\Recent` to this session.
    pub recent: bool,
}

/// One `* n FETCH (...)` response.
pub(super) fn write_fetch(
    out: &mut Vec<u8>,
    item: &Item<'_>,
    raw: Option<&[u8]>,
    atts: &[FetchAtt],
    condstore: bool,
) -> Result<(), String> {
    let (seq, uid, meta) = (item.seq, item.uid, item.meta);
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    // The MIME structure is parsed only for items that need it (not for BODY[] or ENVELOPE).
    let has_raw = raw.is_some();
    let raw = raw.unwrap_or(b"");
    let parsed = std::cell::OnceCell::new();
    let root = || -> Result<&mime::Part, String> {
        if !has_raw {
            return Err("no message".into());
        }
        Ok(parsed.get_or_init(|| mime::parse(raw)))
    };
    let header = || raw[..mime::header_len(raw)].as_ref();
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    let mut modseq_written = false;
    for a in atts {
        sep(out);
        match a {
            FetchAtt::Uid => out.extend_from_slice(format!("UID {uid}").as_bytes()),
            FetchAtt::Flags => out.extend_from_slice(format!("FLAGS {}", flag_list(meta, item.recent)).as_bytes()),
            FetchAtt::InternalDate => {
                out.extend_from_slice(format!("INTERNALDATE {}", fetch::internal_date(meta.internal_date)).as_bytes())
            }
            // The size of what this client is shown (on-fetch policies may add headers).
            FetchAtt::Rfc822Size => {
                let size = if raw.is_empty() { meta.size } else { raw.len() as u64 };
                out.extend_from_slice(format!("RFC822.SIZE {size}").as_bytes())
            }
            FetchAtt::ModSeq => {
                modseq_written = true;
                out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes())
            }
            FetchAtt::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                fetch::envelope(out, header());
            }
            FetchAtt::Body | FetchAtt::BodyStructure => {
                let ext = *a == FetchAtt::BodyStructure;
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                fetch::body_structure(out, raw, root()?, ext);
            }
            FetchAtt::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                fetch::write_text_literal(out, raw);
            }
            FetchAtt::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                fetch::write_text_literal(out, header());
            }
            FetchAtt::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                fetch::write_text_literal(out, &raw[header().len()..]);
            }
            FetchAtt::Section {
                binary,
                section,
                partial,
                ..
            } => {
                out.extend_from_slice(fetch::section_name(*binary, section, *partial).as_bytes());
                out.push(b' ');
                if section.part.is_empty() && section.kind == SectionKind::Full {
                    // The whole message: straight from the stored bytes (no copy unless it
                    // holds NUL).
                    let d = fetch::partial(raw, *partial);
                    if *binary {
                        fetch::write_binary_literal(out, d);
                    } else {
                        fetch::write_text_literal(out, d);
                    }
                    continue;
                }
                let root = root()?;
                let data = if *binary {
                    match fetch::binary_bytes(raw, root, &section.part) {
                        Some(Ok(d)) => Some(d),
                        Some(Err(())) => return Err("[UNKNOWN-CTE] Cannot decode this part".into()),
                        None => None,
                    }
                } else {
                    fetch::section_bytes(raw, root, section)
                };
                match data {
                    Some(d) => {
                        let d = fetch::partial(&d, *partial);
                        if *binary {
                            fetch::write_binary_literal(out, d);
                        } else {
                            fetch::write_text_literal(out, d);
                        }
                    }
                    None => out.extend_from_slice(b"\"\""),
                }
            }
            FetchAtt::BinarySize(part) => {
                let n = match fetch::binary_bytes(raw, root()?, part) {
                    Some(Ok(d)) => d.len(),
                    Some(Err(())) => return Err("[UNKNOWN-CTE] Cannot decode this part".into()),
                    None => 0,
                };
                let nums: Vec<String> = part.iter().map(|n| n.to_string()).collect();
                out.extend_from_slice(format!("BINARY.SIZE[{}] {n}", nums.join(".")).as_bytes());
            }
        }
    }
    if condstore && !modseq_written && atts.contains(&FetchAtt::Flags) {
        sep(out);
        out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes());
    }
    out.extend_from_slice(b")\r\n");
    Ok(())
}
