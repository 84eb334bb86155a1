//! The local store: metadata in a redb database, module bytes in
//! content-addressed files.
//!
//! ```text
//! <data dir>/control.redb          names, versions, groups (redb: ACID, fsync on commit)
//! <data dir>/modules/<sha256>      each module's bytes, written once
//! <data dir>/modules/.tmp-*        a write in progress; removed on open
//! ```
//!
//! A module file is written as a temporary file, fsynced, renamed to its
//! hash and the directory fsynced, before the metadata naming it is
//! committed: metadata never names a missing or partial file. A crash
//! leaves at most a temporary file (removed on open) or a complete file no
//! metadata names yet (harmless; the next push of those bytes reuses it).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    GroupState, ModuleBytes, ModuleRecord, ModuleSelector, PutModule, Store, StoreError,
    check_module_name, is_sha256, unix_ms,
};

/// The metadata database's file name in the data directory.
pub const DB_FILE: &str = "control.redb";
/// The module files' directory in the data directory.
pub const MODULES_DIR: &str = "modules";
const TEMP_PREFIX: &str = ".tmp-";

/// (name, version) → `ModuleRecord` as JSON.
const MODULES: TableDefinition<(&str, u32), &str> = TableDefinition::new("modules");
/// sha256 → the first `ModuleRecord` with those bytes, as JSON.
const BY_SHA256: TableDefinition<&str, &str> = TableDefinition::new("modules_by_sha256");
/// group → `GroupState` as JSON.
const GROUPS: TableDefinition<&str, &str> = TableDefinition::new("groups");

/// The store in one local directory.
pub struct RedbStore {
    db: Database,
    db_path: String,
    modules_dir: PathBuf,
    temp_counter: AtomicU64,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, removing temporary files a
    /// crash left behind. redb recovers its own file after a crash.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let modules_dir = dir.join(MODULES_DIR);
        fs::create_dir_all(&modules_dir).map_err(io("cannot create", &modules_dir))?;
        remove_temp_files(&modules_dir)?;
        let db_file = dir.join(DB_FILE);
        let db_path = db_file.display().to_string();
        let db = Database::create(&db_file).db(&db_path)?;
        let store = Self {
            db,
            db_path,
            modules_dir,
            temp_counter: AtomicU64::new(0),
        };
        // Create the tables so that reads never meet a missing one.
        let txn = store.db.begin_write().db(&store.db_path)?;
        txn.open_table(MODULES).db(&store.db_path)?;
        txn.open_table(BY_SHA256).db(&store.db_path)?;
        txn.open_table(GROUPS).db(&store.db_path)?;
        txn.commit().db(&store.db_path)?;
        Ok(store)
    }

    /// Where the bytes of module `sha256` live.
    pub fn module_path(&self, sha256: &str) -> PathBuf {
        self.modules_dir.join(sha256)
    }

    /// Writes the module file durably unless it is already there (a file
    /// with the hash's name is only ever complete: it appears by rename).
    fn write_module_file(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.module_path(sha256);
        if path.exists() {
            return Ok(());
        }
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .modules_dir
            .join(format!("{TEMP_PREFIX}{sha256}-{}-{n}", std::process::id()));
        let result = (|| {
            let mut file = File::create(&temp).map_err(io("cannot create", &temp))?;
            file.write_all(bytes).map_err(io("cannot write", &temp))?;
            file.sync_all().map_err(io("cannot fsync", &temp))?;
            fs::rename(&temp, &path).map_err(io("cannot rename into place", &path))?;
            File::open(&self.modules_dir)
                .and_then(|d| d.sync_all())
                .map_err(io("cannot fsync", &self.modules_dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, json: &str) -> Result<T, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Database {
            path: self.db_path.clone(),
            message: format!("a record does not decode: {e}"),
        })
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store records serialize")
}

impl Store for RedbStore {
    fn put_module(
        &self,
        name: &str,
        bytes: &[u8],
        contract_version: &str,
    ) -> Result<PutModule, StoreError> {
        check_module_name(name).map_err(StoreError::Invalid)?;
        let sha256 = weft_api::sha256_hex(bytes);
        self.write_module_file(&sha256, bytes)?;
        let db = self.db_path.as_str();
        // One write transaction at a time: the version number is decided
        // and recorded atomically.
        let txn = self.db.begin_write().db(db)?;
        let outcome = {
            let mut modules = txn.open_table(MODULES).db(db)?;
            let mut newest = 0;
            let mut existing = None;
            for entry in modules.range((name, 0)..=(name, u32::MAX)).db(db)? {
                let (key, value) = entry.db(db)?;
                newest = key.value().1;
                let record: ModuleRecord = self.read_json(value.value())?;
                if record.sha256 == sha256 {
                    existing = Some(record);
                }
            }
            if let Some(module) = existing {
                PutModule {
                    module,
                    already_existed: true,
                }
            } else {
                let module = ModuleRecord {
                    name: name.to_string(),
                    version: newest + 1,
                    sha256: sha256.clone(),
                    size: bytes.len() as u64,
                    contract_version: contract_version.to_string(),
                    pushed_at_unix_ms: unix_ms(),
                };
                let json = to_json(&module);
                modules
                    .insert((name, module.version), json.as_str())
                    .db(db)?;
                let mut by_sha = txn.open_table(BY_SHA256).db(db)?;
                if by_sha.get(sha256.as_str()).db(db)?.is_none() {
                    by_sha.insert(sha256.as_str(), json.as_str()).db(db)?;
                }
                PutModule {
                    module,
                    already_existed: false,
                }
            }
        };
        if outcome.already_existed {
            txn.abort().db(db)?;
        } else {
            txn.commit().db(db)?;
        }
        Ok(outcome)
    }

    fn module(&self, selector: &ModuleSelector) -> Result<Option<ModuleRecord>, StoreError> {
        let db = self.db_path.as_str();
        let txn = self.db.begin_read().db(db)?;
        let json = match selector {
            ModuleSelector::Sha256(sha) => {
                let table = txn.open_table(BY_SHA256).db(db)?;
                table
                    .get(sha.as_str())
                    .db(db)?
                    .map(|v| v.value().to_string())
            }
            ModuleSelector::Version(name, version) => {
                let table = txn.open_table(MODULES).db(db)?;
                table
                    .get((name.as_str(), *version))
                    .db(db)?
                    .map(|v| v.value().to_string())
            }
            ModuleSelector::Newest(name) => {
                let table = txn.open_table(MODULES).db(db)?;
                let name = name.as_str();
                let last = table
                    .range((name, 0)..=(name, u32::MAX))
                    .db(db)?
                    .next_back()
                    .transpose()
                    .db(db)?;
                last.map(|(_, v)| v.value().to_string())
            }
        };
        json.map(|j| self.read_json(&j)).transpose()
    }

    fn modules(&self) -> Result<Vec<ModuleRecord>, StoreError> {
        let db = self.db_path.as_str();
        let txn = self.db.begin_read().db(db)?;
        let table = txn.open_table(MODULES).db(db)?;
        let mut out = Vec::new();
        for entry in table.iter().db(db)? {
            let (_, value) = entry.db(db)?;
            out.push(self.read_json(value.value())?);
        }
        Ok(out)
    }

    fn open_module(&self, sha256: &str) -> Result<Option<ModuleBytes>, StoreError> {
        if !is_sha256(sha256) {
            return Err(StoreError::Invalid(format!(
                "{sha256:?} is not a sha256 (64 hex digits)"
            )));
        }
        let path = self.module_path(&sha256.to_ascii_lowercase());
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot open", &path)(e)),
        };
        let size = file.metadata().map_err(io("cannot stat", &path))?.len();
        Ok(Some(ModuleBytes {
            size,
            reader: Box::new(file),
        }))
    }

    fn apply(&self, group: &str, mut state: GroupState) -> Result<GroupState, StoreError> {
        let db = self.db_path.as_str();
        let txn = self.db.begin_write().db(db)?;
        {
            let mut groups = txn.open_table(GROUPS).db(db)?;
            let previous = match groups.get(group).db(db)? {
                Some(v) => self.read_json::<GroupState>(v.value())?.version,
                None => 0,
            };
            state.group = group.to_string();
            state.version = previous + 1;
            groups.insert(group, to_json(&state).as_str()).db(db)?;
        }
        txn.commit().db(db)?;
        Ok(state)
    }

    fn group(&self, group: &str) -> Result<Option<GroupState>, StoreError> {
        let db = self.db_path.as_str();
        let txn = self.db.begin_read().db(db)?;
        let table = txn.open_table(GROUPS).db(db)?;
        let json = table.get(group).db(db)?.map(|v| v.value().to_string());
        json.map(|j| self.read_json(&j)).transpose()
    }
}

fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io("cannot list", dir))? {
        let entry = entry.map_err(io("cannot list", dir))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io("cannot remove", &path))?;
            tracing::info!(path = %path.display(), "removed an unfinished module write");
        }
    }
    Ok(())
}

fn io(what: &'static str, path: &Path) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        what,
        path: path.clone(),
        source,
    }
}

/// Turns redb's errors into `StoreError`s naming the database file.
trait DbResult<T> {
    fn db(self, path: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for Result<T, E> {
    fn db(self, path: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Database {
            path: path.to_string(),
            message: e.into().to_string(),
        })
    }
}
