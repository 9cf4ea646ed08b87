//! The shipped policies (the source tree's `policies/`), carried in the binary so that a
//! `mailgate` run anywhere filters mail as shipped: when `[policies] dir` is the default
//! `./policies` and that folder does not exist, the set is written to
//! `<data_dir>/policies.shipped` (replaced whole at each start when the binary's set
//! differs) and loaded from there. It is the binary's, not for editing: copy it, edit the
//! copy and point `[policies] dir` at it.

use std::path::{Path, PathBuf};

/// The default `[policies] dir`.
pub const DEFAULT_DIR: &str = "./policies";

/// The folder under the data directory the shipped set is written to.
pub const SHIPPED_DIR: &str = "policies.shipped";

/// Each shipped file: its path under the policies folder and its contents.
pub const FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../policies/README.md")),
    ("05-lists.lua", include_str!("../../policies/05-lists.lua")),
    ("05-lists.toml", include_str!("../../policies/05-lists.toml")),
    ("15-helo.lua", include_str!("../../policies/15-helo.lua")),
    ("15-helo.toml", include_str!("../../policies/15-helo.toml")),
    ("20-origin.lua", include_str!("../../policies/20-origin.lua")),
    ("20-origin.toml", include_str!("../../policies/20-origin.toml")),
    ("30-keywords.lua", include_str!("../../policies/30-keywords.lua")),
    ("30-keywords.toml", include_str!("../../policies/30-keywords.toml")),
    ("40-letters.lua", include_str!("../../policies/40-letters.lua")),
    ("40-letters.toml", include_str!("../../policies/40-letters.toml")),
    ("50-bayes.lua", include_str!("../../policies/50-bayes.lua")),
    ("50-bayes.toml", include_str!("../../policies/50-bayes.toml")),
    ("90-greylist.lua", include_str!("../../policies/90-greylist.lua")),
    ("90-greylist.toml", include_str!("../../policies/90-greylist.toml")),
    (
        "keywords/00-shipped.toml",
        include_str!("../../policies/keywords/00-shipped.toml"),
    ),
];

/// The folder to load policies from: `dir` itself, or, when it is the default and does not
/// exist, the shipped set written under `data_dir` (see the module comment). Says which in
/// the log.
pub fn resolve(dir: &Path, data_dir: &Path) -> Result<PathBuf, String> {
    if dir != Path::new(DEFAULT_DIR) || dir.exists() {
        return Ok(dir.to_path_buf());
    }
    let target = data_dir.join(SHIPPED_DIR);
    if !matches(&target) {
        write(&target).map_err(|e| format!("writing the shipped policies to {}: {e}", target.display()))?;
    }
    tracing::info!(
        "no {DEFAULT_DIR} in {}: using the shipped policies, written to {} (edit a copy and set [policies] dir)",
        super::absolute(Path::new(".")).display(),
        target.display()
    );
    Ok(target)
}

/// Whether `target` holds exactly the shipped files.
fn matches(target: &Path) -> bool {
    let mut present = Vec::new();
    if list(target, Path::new(""), &mut present).is_err() {
        return false;
    }
    present.sort();
    let mut shipped: Vec<&str> = FILES.iter().map(|(p, _)| *p).collect();
    shipped.sort_unstable();
    present == shipped
        && FILES
            .iter()
            .all(|(p, text)| std::fs::read(target.join(p)).is_ok_and(|b| b == text.as_bytes()))
}

/// Every file under `dir`, as paths relative to the top (`/`-separated).
fn list(dir: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list(&entry.path(), &rel, out)?;
        } else {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Writes the set into a fresh folder beside `target` and puts it in `target`'s place, so a
/// set is never seen half written (or mixed with an older binary's files).
fn write(target: &Path) -> std::io::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    // Named per process: two starting at once (a server and `spam eval`) never share one.
    let fresh = parent.join(format!("{SHIPPED_DIR}.new.{}", std::process::id()));
    let old = parent.join(format!("{SHIPPED_DIR}.old.{}", std::process::id()));
    for d in [&fresh, &old] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    for (p, text) in FILES {
        let path = fresh.join(p);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
    }
    if target.exists() {
        std::fs::rename(target, &old)?;
    }
    std::fs::rename(&fresh, target)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_is_carried() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut on_disk = Vec::new();
        list(&root, Path::new(""), &mut on_disk).unwrap();
        on_disk.sort();
        let mut carried: Vec<&str> = FILES.iter().map(|(p, _)| *p).collect();
        carried.sort_unstable();
        assert_eq!(
            on_disk, carried,
            "policies/ and hooks::shipped::FILES must list the same files"
        );
    }

    #[test]
    fn the_shipped_set_replaces_a_stale_one_and_is_left_alone_when_current() {
        let data = tempfile::tempdir().unwrap();
        let default = Path::new(DEFAULT_DIR);
        // (The tests run in the source tree, where ./policies exists: it is used as is.)
        assert!(default.exists());
        assert_eq!(resolve(default, data.path()).unwrap(), default);
        assert!(!data.path().join(SHIPPED_DIR).exists());
        let target = data.path().join(SHIPPED_DIR);
        write(&target).unwrap();
        assert!(matches(&target));
        // An older binary's set: a changed file and one the binary no longer ships.
        std::fs::write(target.join("50-bayes.toml"), "old").unwrap();
        std::fs::write(target.join("60-gone.lua"), "-- removed").unwrap();
        assert!(!matches(&target));
        write(&target).unwrap();
        assert!(matches(&target));
        assert!(!target.join("60-gone.lua").exists());
        let left: Vec<_> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [SHIPPED_DIR], "no fresh or old folder is left behind");
    }
}
