//! The journal reader at start: a segment of arbitrary bytes (torn, corrupted, forged
//! records) is replayed into a fresh sled tree. It must open or fail with an error, never
//! panic, and never apply a record whose checksum does not hold.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|segment: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join(format!("{:016}.wal", 1)), segment).unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let _ = mailgate::store::journal::Journal::open(&journal, &db, &tree);
});
