//! IMAP commands as data: what the parser ([`super::parser`]) produces and the session
//! executes. No grammar here.

use crate::store::FlagOp;

pub type Result<T> = std::result::Result<T, String>;

/// A sequence set. Numbers are 32-bit; `*` is [`STAR`], outside that range, so it is never
/// taken for the number 4294967295. `Saved` is `$` (RFC 5182).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqSet {
    Ranges(Vec<(u64, u64)>),
    Saved,
}

/// `*`: the largest number in use (RFC 3501 §9, seq-number).
pub const STAR: u64 = u64::MAX;

impl SeqSet {
    /// Does `n` fall in the set, with `*` meaning `max`?
    pub fn contains(ranges: &[(u64, u64)], n: u32, max: u32) -> bool {
        let n = u64::from(n);
        ranges.iter().any(|&(a, b)| {
            let a = if a == STAR { u64::from(max) } else { a };
            let b = if b == STAR { u64::from(max) } else { b };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            n >= lo && n <= hi
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    Full,
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub part: Vec<u32>,
    pub kind: SectionKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAtt {
    Envelope,
    Flags,
    InternalDate,
    Rfc822Size,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Uid,
    /// BODY without a section: BODYSTRUCTURE without extension data.
    Body,
    BodyStructure,
    ModSeq,
    /// BODY[...], BODY.PEEK[...], BINARY[...], BINARY.PEEK[...]
    Section {
        peek: bool,
        binary: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    BinarySize(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Seq(SeqSet),
    Uid(SeqSet),
    Flag(u8, bool),
    Keyword(String, bool),
    New,
    Old,
    Recent,
    /// Header name (lower case; "" for TEXT/BODY pseudo keys not used here) and substring.
    Header(String, String),
    Body(String),
    Text(String),
    /// Internal date, days since the epoch: before, on, since.
    Before(i64),
    On(i64),
    Since(i64),
    SentBefore(i64),
    SentOn(i64),
    SentSince(i64),
    Larger(u64),
    Smaller(u64),
    ModSeq(u64),
    Not(Box<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    And(Vec<SearchKey>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    HighestModSeq,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub subscribed: bool,
    pub remote: bool,
    pub recursive_match: bool,
    pub special_use_only: bool,
    pub ret_subscribed: bool,
    pub ret_children: bool,
    pub ret_special_use: bool,
    pub ret_status: Option<Vec<StatusItem>>,
    /// Was any LIST-EXTENDED syntax used (changes the default output)?
    pub extended: bool,
}

/// One message of an APPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    pub date: Option<i64>,
    pub data: AppendData,
}

/// One URL of URLFETCH and what is asked of it: plain (the URL's bytes), or any of
/// BODYPARTSTRUCTURE, BINARY, BODY (RFC 5524).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlFetchItem {
    pub url: String,
    /// `None`: the plain form.
    pub params: Option<UrlFetchParams>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlFetchParams {
    pub body_part_structure: bool,
    pub binary: bool,
    pub body: bool,
}

/// `QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]])` of SELECT/EXAMINE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QresyncParams {
    pub uidvalidity: u32,
    pub modseq: u64,
    /// The UIDs the client knows of; `None`: all.
    pub known: Option<SeqSet>,
}

/// `NOTIFY SET [STATUS] (filter events)...` (RFC 5465 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySpec {
    /// STATUS: report the non-selected mailboxes' state at once.
    pub status: bool,
    pub groups: Vec<NotifyGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyGroup {
    pub filter: NotifyFilter,
    /// Empty: `NONE`.
    pub events: Vec<NotifyEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyFilter {
    Selected,
    SelectedDelayed,
    Inboxes,
    Personal,
    Subscribed,
    /// The mailboxes and everything below them.
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// With the FETCH items to send for each new message (SELECTED only).
    MessageNew(Vec<FetchAtt>),
    MessageExpunge,
    FlagChange,
    MailboxName,
    SubscriptionChange,
    /// Events this server does not offer (AnnotationChange, the METADATA ones, ...).
    Other(String),
}

/// What an APPEND stores: a literal, or CATENATE's parts (RFC 4469) joined in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendData {
    Literal(Vec<u8>),
    Catenate(Vec<CatPart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    /// `TEXT literal`: these bytes.
    Text(Vec<u8>),
    /// `URL "..."`: a message or part of one in the user's own mailboxes (RFC 5092).
    Url(String),
}

/// `RETURN (...)` of SEARCH and SORT: ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and
/// CONTEXT=SEARCH/SORT (RFC 5267). `RETURN ()` means ALL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnOpts {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    pub save: bool,
    /// `PARTIAL low:high`, positions in the result counted from 1 (negative: from the end,
    /// RFC 9394), `low <= high` whatever order the client gave them in.
    pub partial: Option<(i64, i64)>,
    /// Keep the result up to date with ADDTO/REMOVEFROM until CANCELUPDATE (RFC 5267 §4.3).
    pub update: bool,
}

impl ReturnOpts {
    /// Whether anything beyond SAVE asks for an ESEARCH response.
    pub fn answers(&self) -> bool {
        self.min || self.max || self.all || self.count || self.partial.is_some() || self.update
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Capability,
    Noop,
    Logout,
    StartTls,
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: String,
        password: String,
    },
    Enable(Vec<String>),
    Id,
    Namespace,
    Select {
        mailbox: String,
        read_only: bool,
        condstore: bool,
        /// QRESYNC's resynchronisation data (RFC 7162 §3.2.5).
        qresync: Option<QresyncParams>,
    },
    Create(String),
    Delete(String),
    Rename(String, String),
    Subscribe(String),
    Unsubscribe(String),
    List {
        reference: String,
        patterns: Vec<String>,
        options: ListOptions,
    },
    Lsub {
        reference: String,
        pattern: String,
    },
    Status {
        mailbox: String,
        items: Vec<StatusItem>,
    },
    /// APPEND, with MULTIAPPEND's several messages (RFC 3502).
    Append {
        mailbox: String,
        messages: Vec<AppendMessage>,
    },
    Idle,
    Check,
    Close,
    Unselect,
    Expunge(Option<SeqSet>),
    Search {
        ret: Option<ReturnOpts>,
        key: SearchKey,
    },
    /// SORT (RFC 5256), with ESORT's RETURN (RFC 5267).
    Sort {
        ret: Option<ReturnOpts>,
        criteria: Vec<super::sort::SortKey>,
        key: SearchKey,
    },
    /// CANCELUPDATE of CONTEXT=SEARCH (RFC 5267 §4.3): the tags whose updates end.
    CancelUpdate(Vec<String>),
    /// GENURLAUTH (RFC 4467 §7.1): `(url rump, mechanism)` pairs.
    GenUrlAuth(Vec<(String, String)>),
    /// RESETKEY (RFC 4467 §7.2): one mailbox's keys, or all of the user's.
    ResetKey {
        mailbox: Option<String>,
        mechanisms: Vec<String>,
    },
    /// URLFETCH (RFC 4467 §7.3, with URLAUTH=BINARY's parameters, RFC 5524).
    UrlFetch(Vec<UrlFetchItem>),
    /// NOTIFY (RFC 5465): `None` is `NOTIFY NONE`.
    Notify(Option<NotifySpec>),
    Thread {
        algorithm: super::sort::ThreadAlgorithm,
        key: SearchKey,
    },
    Fetch {
        set: SeqSet,
        atts: Vec<FetchAtt>,
        changed_since: Option<u64>,
        /// QRESYNC's VANISHED modifier (RFC 7162 §3.2.6).
        vanished: bool,
    },
    Store {
        set: SeqSet,
        op: FlagOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        set: SeqSet,
        mailbox: String,
    },
    Move {
        set: SeqSet,
        mailbox: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    /// The `UID` prefix: sets and results are UIDs.
    pub uid: bool,
    pub cmd: Cmd,
}
