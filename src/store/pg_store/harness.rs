//! A real PostgreSQL server for tests: `initdb` into a temporary directory and `postgres`
//! on a free loopback port, started once per test process (as the `postgres` user when the
//! tests run as root, since PostgreSQL refuses to run as root), with a fresh database per
//! [`database`] call. The server dies with the process (`PR_SET_PDEATHSIG` on a thread that
//! lives as long as it). Without PostgreSQL's binaries the tests that need it are skipped,
//! with the reason printed, unless `MAILGATE_REQUIRE_POSTGRES` is set (`.ci/run` sets it).

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

struct Server {
    port: u16,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// Where `initdb` and `postgres` are: on the PATH, or Debian's versioned directory.
fn binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root, else ourselves.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam reads a NUL-terminated name; the record is copied out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no postgres user to run PostgreSQL as".into());
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Removes the data directories of earlier test processes that have ended.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mailgate-pg-test-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let gone =
            unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Result<Server, String> {
    let bin = binaries().ok_or("no PostgreSQL binaries (initdb, postgres) on PATH or in /usr/lib/postgresql")?;
    let user = run_as()?;
    remove_stale();
    let dir = std::env::temp_dir().join(format!("mailgate-pg-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    let data = dir.join("data");
    let as_user = move |c: &mut Command| {
        if let Some((uid, gid)) = user {
            c.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut initdb);
    let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // The server is started from a thread that never ends, so that the parent-death signal
    // (sent when the *thread* that forked the child exits) comes only with the process.
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (bin2, dir2) = (bin.clone(), dir.clone());
    std::thread::Builder::new()
        .name("test-postgresql".into())
        .spawn(move || {
            let mut cmd = Command::new(bin2.join("postgres"));
            cmd.arg("-D")
                .arg(dir2.join("data"))
                .args([
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=300",
                ])
                .arg("-k")
                .arg(&dir2)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            as_user(&mut cmd);
            // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                    Ok(())
                });
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(format!("postgres: {e}")));
                    return;
                }
            };
            let stderr = child.stderr.take().expect("piped");
            let mut ready = false;
            let mut log = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !ready && line.contains("ready to accept connections") {
                    ready = true;
                    let _ = tx.send(Ok(()));
                } else if !ready {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            if !ready {
                let _ = tx.send(Err(format!("postgres exited before it was ready:\n{log}")));
            }
            let _ = child.wait();
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())??;
    Ok(Server { port })
}

/// The URL of a new, empty database on the test server, or `None` (with the reason printed)
/// when PostgreSQL cannot be run here.
pub fn database() -> Option<String> {
    let server = match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(e) if std::env::var_os("MAILGATE_REQUIRE_POSTGRES").is_some() => {
            panic!("MAILGATE_REQUIRE_POSTGRES is set and PostgreSQL cannot run here: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no PostgreSQL for this test: {e}");
            return None;
        }
    };
    let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    // Its own thread and runtime: the caller may be inside one.
    let create = format!("CREATE DATABASE {name}");
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client.batch_execute(&create).await
            })
    })
    .join()
    .expect("creating a test database")
    .expect("creating a test database");
    Some(format!("postgres://postgres@127.0.0.1:{}/{name}", server.port))
}
