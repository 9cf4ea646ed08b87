//! Key-value state, small values whole and large ones in chunks.

use super::*;

impl KeyValue for SledStore {
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.kv.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn kv_set(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(v) => self.kv.insert(key.as_bytes(), v)?,
            None => self.kv.remove(key.as_bytes())?,
        };
        Ok(())
    }

    fn kv_retain(&self, keep: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<usize> {
        let mut gone = 0;
        for entry in self.kv.iter() {
            let (k, v) = entry?;
            if keep(&k, &v) {
                continue;
            }
            // Only the value judged: one set since then is newer state, not expired.
            if self.kv.compare_and_swap(&k, Some(&v), None::<&[u8]>)?.is_ok() {
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn kv_get_large(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(head) = self.large.get(key.as_bytes())? else {
            // Stored whole by a version before chunking, or never.
            return self.kv_get(key);
        };
        let (chunks, len) = large_head(&head)?;
        let mut v = Vec::with_capacity(len);
        for i in 0..chunks {
            let chunk = self.large.get(large_chunk_key(key, i))?;
            v.extend_from_slice(&chunk.ok_or_else(|| StoreError::Backend(format!("{key}: chunk {i} missing")))?);
        }
        if v.len() != len {
            return Err(StoreError::Backend(format!("{key}: {} bytes, not {len}", v.len())));
        }
        Ok(Some(v))
    }

    fn kv_set_large_with(&self, key: &str, value: Option<&[u8]>, small: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        // One transaction over both trees: the chunks, their head, a whole value an older
        // version stored (it goes: the head wins from now on) and the small entries.
        let r = (&self.large, &self.kv).transaction(|(large, kv)| {
            let old = match large.get(key.as_bytes())? {
                Some(head) => large_head(&head).map_err(ConflictableTransactionError::Abort)?.0,
                None => 0,
            };
            let mut chunks: u32 = 0;
            match value {
                Some(v) => {
                    for (i, c) in v.chunks(LARGE_CHUNK).enumerate() {
                        large.insert(large_chunk_key(key, i as u32), c)?;
                        chunks += 1;
                    }
                    let mut head = chunks.to_le_bytes().to_vec();
                    head.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    large.insert(key.as_bytes(), head)?;
                }
                None => {
                    large.remove(key.as_bytes())?;
                }
            }
            for i in chunks..old {
                large.remove(large_chunk_key(key, i))?;
            }
            kv.remove(key.as_bytes())?;
            for (k, v) in small {
                match v {
                    Some(v) => kv.insert(k.as_bytes(), v.as_slice())?,
                    None => kv.remove(k.as_bytes())?,
                };
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}

/// Chunk size of a `kv_set_large` value. sled stores a tree node larger than about a
/// quarter of a segment (128 KiB at the default 512 KiB) as a file of its own, and a leaf
/// holds up to 17 entries; overwritten megabyte values stored that way were seen to leave
/// their old files behind across restarts (a store of 4 GB after a few hundred `spam train`
/// runs). Chunks this small keep every node in the log, which sled compacts.
pub(super) const LARGE_CHUNK: usize = 4096;

/// A chunked value's head, `chunks u32, length u64` little-endian.
fn large_head(head: &[u8]) -> Result<(u32, usize)> {
    let corrupt = || StoreError::Backend("corrupt large-value head".into());
    let chunks = u32::from_le_bytes(head.get(..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let len = u64::from_le_bytes(head.get(4..12).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    Ok((chunks, usize::try_from(len).map_err(|_| corrupt())?))
}

/// Chunk `i` of a large value: its key, a 0xFF byte (never in UTF-8, so never another
/// key's head) and `i` big-endian (the chunks sort in order after their head).
pub(super) fn large_chunk_key(key: &str, i: u32) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0xff);
    k.extend_from_slice(&i.to_be_bytes());
    k
}
