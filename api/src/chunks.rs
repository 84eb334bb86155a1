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
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if hex != self.sha256 {
            return Err(ModuleFetchError::HashMismatch {
                sha256: self.sha256,
                got: hex,
            });
        }
        Ok(self.bytes)
    }
}
