//! The command line: every subcommand and flag (clap).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mailgate", version, about = "Mail server and spam gateway")]
pub struct Cli {
    /// Configuration file (TOML). Without it, embedded defaults are used.
    #[arg(long, global = true, value_name = "FILE", env = "MAILGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run every configured listener.
    Serve,
    /// Send a message as sendmail does (`send [-t] [-f SENDER] [-F NAME] [-i] [RECIPIENT...]
    /// < message`); the binary installed as `sendmail` does this. Needs a running server.
    Send {
        /// sendmail's options and the recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Local domains (besides server.local_domains in the config).
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Aliases; a source of `@domain` is a catch-all.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Look into mailboxes.
    #[command(subcommand)]
    Mailbox(MailboxCmd),
    /// Policies: validate, try on a message, reload, status.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Spam filter: train the Bayes model, classify a message, evaluate on a corpus.
    #[command(subcommand)]
    Spam(SpamCmd),
    /// The outbound queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// The store itself.
    #[command(subcommand)]
    Store(StoreCmd),
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Bring the PostgreSQL schema up to date (also done at every start); says which
    /// versions were applied. Safe to run while nodes are serving.
    Migrate,
}

#[derive(Subcommand)]
pub enum QueueCmd {
    /// Every queued message with each recipient's state, attempts, next attempt, last reply.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One message: its recipients and its text.
    Show { id: u64 },
    /// Try now: one message, one domain's recipients (--domain), or everything.
    Flush {
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        domain: Option<String>,
    },
    /// Keep a message back until released.
    Hold { id: u64 },
    /// Let a held (or quarantined) message go.
    Release { id: u64 },
    /// Remove a message from the queue, undelivered and without a bounce.
    Delete { id: u64 },
}

#[derive(Subcommand)]
pub enum SpamCmd {
    /// Train the Bayes model on folders of .eml or mbox files (adds to the stored model).
    Train {
        #[arg(long, required = true)]
        spam: Vec<PathBuf>,
        #[arg(long, required = true)]
        ham: Vec<PathBuf>,
        /// Start from an empty model.
        #[arg(long)]
        reset: bool,
        /// Leave out this fraction of each folder (the part `eval --holdout` scores).
        #[arg(long)]
        holdout: Option<f64>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fold a new model's token hashes into this many buckets (default: every distinct token
        /// its own feature).
        #[arg(long)]
        features: Option<u64>,
    },
    /// Run the whole policy chain on one message from stdin: `spam SCORE` or `ham SCORE`,
    /// then the symbols and the Bayes tokens.
    Classify,
    /// Score folders of known spam and ham through the whole policy chain.
    Eval {
        #[arg(long, required = true)]
        spam: Vec<PathBuf>,
        #[arg(long, required = true)]
        ham: Vec<PathBuf>,
        /// Score only the held-out fraction (as given to `train --holdout`).
        #[arg(long)]
        holdout: Option<f64>,
        /// Cross-validate instead: cut the folders into N parts (by --seed) and judge each
        /// part with a model trained, in memory, on the others. The stored model is neither
        /// used nor changed.
        #[arg(long, value_name = "N", conflicts_with = "holdout",
              value_parser = clap::value_parser!(u64).range(2..=100))]
        folds: Option<u64>,
        /// With --folds: choose the Bayes weights for each fold by a K-fold cross-validation
        /// of the other folds alone (nested cross-validation), so no choice sees the messages
        /// it is scored on.
        #[arg(long, value_name = "K", requires = "folds",
              value_parser = clap::value_parser!(u64).range(2..=20))]
        nested: Option<u64>,
        /// Set a seeded fraction aside (the lockbox), choose the Bayes weights by a
        /// --inner-fold cross-validation of the rest, train on the rest and score the
        /// lockbox once.
        #[arg(long, value_name = "F", conflicts_with_all = ["holdout", "folds"])]
        lockbox: Option<f64>,
        /// Inner folds for --lockbox.
        #[arg(long, value_name = "K", default_value_t = 5, requires = "lockbox",
              value_parser = clap::value_parser!(u64).range(2..=20))]
        inner: u64,
        /// With --folds or --lockbox: keep each sender's mail together (the organisational
        /// domain of From), so every part is judged by a model that never saw its senders.
        #[arg(long)]
        by_sender: bool,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        json: bool,
        /// Also write every message's label, total score and Bayes probability to FILE
        /// (tab-separated, with a header line): for choosing the `[spam.thresholds]`.
        #[arg(long, value_name = "FILE")]
        scores: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Load every policy in DIR (default: [policies] dir) and report errors as file:line.
    Check { dir: Option<PathBuf> },
    /// Run the whole chain on a message offline and print the verdict and trace.
    Test {
        file: PathBuf,
        #[arg(long, default_value = "sender@example.org")]
        from: String,
        /// Recipient (repeatable) [default: postmaster@localhost].
        #[arg(long = "to")]
        to: Vec<String>,
        #[arg(long, default_value = "192.0.2.1")]
        ip: String,
        #[arg(long, default_value = "client.example.org")]
        helo: String,
        /// Policies directory (default: [policies] dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Ask the running server to reload its policies now.
    Reload,
    /// Show the running server's policy version, plugins and last error.
    Status,
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add an account (with INBOX, Sent, Drafts, Junk, Trash).
    Add {
        address: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and all its mail.
    Del { address: String },
    /// List accounts.
    List,
    /// Change an account's password.
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub enum DomainCmd {
    Add { domain: String },
    Del { domain: String },
    List,
}

#[derive(Subcommand)]
pub enum AliasCmd {
    /// Point SOURCE (address or @domain) at one or more local addresses.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    Del {
        source: String,
    },
    List,
}

#[derive(Subcommand)]
pub enum MailboxCmd {
    /// List messages: UID, size, flags, date, From, Subject.
    List {
        address: String,
        #[arg(default_value = "INBOX")]
        folder: String,
    },
    /// Print one message, raw.
    Show {
        address: String,
        uid: u32,
        #[arg(default_value = "INBOX")]
        folder: String,
    },
}
