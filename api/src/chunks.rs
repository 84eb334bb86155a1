//! Modules cut into chunks for the wire and put back together: what a
//! pushing client sends and what a fetching proxy checks.

use sha2::{Digest, Sha256};

use crate::CHUNK_SIZE;
use crate::v1::{ModuleChunk, PushChunk};

/// The chunks of a push of `bytes` as module `name`: the first carries the
/// name and the total size, each at most [`CHUNK_SIZE`] bytes of data.
pub fn push_chunks(name: &str, bytes: &[u8]) -> Vec<PushChunk> {
    let total_size = bytes.len() as u64;
    let mut chunks: Vec<PushChunk> = bytes
        .chunks(CHUNK_SIZE)
        .map(|data| PushChunk {
            name: String::new(),
            total_size: 0,
            data: data.to_vec(),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(PushChunk::default());
    }
    chunks[0].name = name.to_string();
    chunks[0].total_size = total_size;
    chunks
}

/// Why fetched chunks do not make the module that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleFetchError {
    /// A chunk did not start where the previous one ended.
    #[error("module {sha256}: a chunk starts at byte {offset}, expected {expected}")]
    OutOfOrder {
        /// The module asked for.
        sha256: String,
        /// Where the chunk said it starts.
        offset: u64,
        /// Where it should have started.
        expected: u64,
    },
    /// More bytes than the announced size, or a size over the caller's cap.
    #[error("module {sha256}: {got} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The module asked for.
        sha256: String,
        /// The bytes received or announced.
        got: u64,
        /// The limit.
        limit: u64,
    },
    /// The stream ended early.
    #[error("module {sha256}: the stream ended after {got} of {total} bytes")]
    Truncated {
        /// The module asked for.
        sha256: String,
        /// The bytes received.
        got: u64,
        /// The announced size.
        total: u64,
    },
    /// The bytes do not hash to what was asked for: never use them.
    #[error("module {sha256}: the bytes received hash to {got}")]
    HashMismatch {
        /// The module asked for.
        sha256: String,
        /// What they hash to.
        got: String,
    },
}

/// Puts a fetched module back together and checks its hash.
pub struct ModuleAssembler {
    sha256: String,
    max_size: u64,
    total_size: Option<u64>,
    bytes: Vec<u8>,
    hasher: Sha256,
}

impl ModuleAssembler {
    /// Expects the module whose hex sha256 is `sha256`, of at most
    /// `max_size` bytes.
    pub fn new(sha256: &str, max_size: u64) -> Self {
        Self {
            sha256: sha256.to_ascii_lowercase(),
            max_size,
            total_size: None,
            bytes: Vec::new(),
            hasher: Sha256::new(),
        }
    }

    /// Adds the next chunk.
    pub fn push(&mut self, chunk: &ModuleChunk) -> Result<(), ModuleFetchError> {
        let expected = self.bytes.len() as u64;
        if chunk.offset != expected {
            return Err(ModuleFetchError::OutOfOrder {
                sha256: self.sha256.clone(),
                offset: chunk.offset,
                expected,
            });
        }
        let total = *self.total_size.get_or_insert(chunk.total_size);
        let got = expected + chunk.data.len() as u64;
        let limit = total.min(self.max_size);
        if total > self.max_size || got > limit {
            return Err(ModuleFetchError::TooLarge {
                sha256: self.sha256.clone(),
                got: got.max(total),
                limit,
            });
        }
        if self.bytes.is_empty() {
            self.bytes.reserve_exact(total as usize);
        }
        self.bytes.extend_from_slice(&chunk.data);
        self.hasher.update(&chunk.data);
        Ok(())
    }

    /// The module's bytes, once the stream has ended: complete and hashing
    /// to what was asked for.
    pub fn finish(self) -> Result<Vec<u8>, ModuleFetchError> {
        let got = self.bytes.len() as u64;
        let total = self.total_size.unwrap_or(0);
        if got != total || total == 0 {
            return Err(ModuleFetchError::Truncated {
                sha256: self.sha256,
                got,
                total,
            });
        }
        let digest = self.hasher.finalize();
        let hex = crate::hex(&digest);
        if hex != self.sha256 {
            return Err(ModuleFetchError::HashMismatch {
                sha256: self.sha256,
                got: hex,
            });
        }
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: &[u8] = b"\0asm\x0d\0\x01\0 a component's bytes";

    use crate::sha256_hex;

    fn chunk(offset: usize, data: &[u8], total: usize) -> ModuleChunk {
        ModuleChunk {
            data: data.to_vec(),
            offset: offset as u64,
            total_size: total as u64,
        }
    }

    #[test]
    fn chunks_put_back_together_give_the_bytes_asked_for() {
        let mut assembler = ModuleAssembler::new(&sha256_hex(BYTES), 1024);
        assembler
            .push(&chunk(0, &BYTES[..10], BYTES.len()))
            .unwrap();
        assembler
            .push(&chunk(10, &BYTES[10..], BYTES.len()))
            .unwrap();
        assert_eq!(assembler.finish().unwrap(), BYTES);
    }

    #[test]
    fn bytes_that_do_not_hash_to_what_was_asked_are_refused() {
        let mut tampered = BYTES.to_vec();
        tampered[12] ^= 1;
        let mut assembler = ModuleAssembler::new(&sha256_hex(BYTES), 1024);
        assembler.push(&chunk(0, &tampered, BYTES.len())).unwrap();
        let err = assembler.finish().unwrap_err();
        assert!(
            matches!(err, ModuleFetchError::HashMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn gaps_short_streams_and_oversize_are_refused() {
        let sha = sha256_hex(BYTES);
        let total = BYTES.len();
        let mut gap = ModuleAssembler::new(&sha, 1024);
        gap.push(&chunk(0, &BYTES[..10], total)).unwrap();
        let err = gap.push(&chunk(11, &BYTES[11..], total)).unwrap_err();
        assert!(
            matches!(err, ModuleFetchError::OutOfOrder { expected: 10, .. }),
            "{err}"
        );

        let mut short = ModuleAssembler::new(&sha, 1024);
        short.push(&chunk(0, &BYTES[..10], total)).unwrap();
        let err = short.finish().unwrap_err();
        assert!(
            matches!(err, ModuleFetchError::Truncated { got: 10, .. }),
            "{err}"
        );

        let mut capped = ModuleAssembler::new(&sha, 8);
        let err = capped.push(&chunk(0, &BYTES[..4], total)).unwrap_err();
        assert!(matches!(err, ModuleFetchError::TooLarge { .. }), "{err}");

        let mut overlong = ModuleAssembler::new(&sha, 1024);
        let err = overlong.push(&chunk(0, BYTES, total - 1)).unwrap_err();
        assert!(matches!(err, ModuleFetchError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_push_is_cut_in_chunks_of_at_most_chunk_size() {
        let bytes = vec![7u8; 2 * CHUNK_SIZE + 5];
        let chunks = push_chunks("big", &bytes);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            (chunks[0].name.as_str(), chunks[0].total_size),
            ("big", bytes.len() as u64)
        );
        assert!(
            chunks[1..]
                .iter()
                .all(|c| c.name.is_empty() && c.total_size == 0)
        );
        assert_eq!(
            chunks.iter().map(|c| c.data.len()).sum::<usize>(),
            bytes.len()
        );
    }
}
