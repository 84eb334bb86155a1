//! The local store on a real directory: what is written survives a reopen
//! and a kill -9, and nothing half-written is ever named.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use weft_control::store::{
    ConfigFormat, GroupState, MODULES_DIR, ModuleSelector, RedbStore, Store,
};

fn read_all(store: &RedbStore, sha256: &str) -> Vec<u8> {
    let mut module = store.open_module(sha256).unwrap().expect("module stored");
    let mut bytes = Vec::new();
    module.reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, module.size);
    bytes
}

fn group_state(config: &str) -> GroupState {
    GroupState {
        group: String::new(),
        version: 0,
        config: config.to_string(),
        format: ConfigFormat::Yaml,
        modules: Vec::new(),
        applied_at_unix_ms: 0,
    }
}

fn module_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(MODULES_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn modules_and_groups_round_trip_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (
        b"\0asm first module".to_vec(),
        b"\0asm second module".to_vec(),
    );
    {
        let store = RedbStore::open(dir.path()).unwrap();
        let first = store.put_module("api-key", &one, "0.4.0").unwrap();
        assert_eq!((first.module.version, first.already_existed), (1, false));
        let second = store.put_module("api-key", &two, "0.4.0").unwrap();
        assert_eq!((second.module.version, second.already_existed), (2, false));
        // The same bytes again: a no-op that says so.
        let again = store.put_module("api-key", &one, "0.4.0").unwrap();
        assert_eq!(again.module, first.module);
        assert!(again.already_existed);
        // The same bytes under another name: a new name, one file.
        let other = store.put_module("copy", &one, "0.4.0").unwrap();
        assert_eq!((other.module.version, other.already_existed), (1, false));

        assert_eq!(store.apply("web", group_state("a: 1")).unwrap().version, 1);
        assert_eq!(store.apply("web", group_state("a: 2")).unwrap().version, 2);
        assert_eq!(store.apply("api", group_state("b: 1")).unwrap().version, 1);
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let newest = store
        .module(&ModuleSelector::parse("api-key"))
        .unwrap()
        .unwrap();
    assert_eq!(newest.version, 2);
    let pinned = store
        .module(&ModuleSelector::parse("api-key@1"))
        .unwrap()
        .unwrap();
    assert_eq!(read_all(&store, &pinned.sha256), one);
    let by_hash = store
        .module(&ModuleSelector::parse(&newest.sha256))
        .unwrap()
        .unwrap();
    assert_eq!(by_hash, newest);
    assert_eq!(read_all(&store, &newest.sha256), two);
    assert!(
        store
            .module(&ModuleSelector::parse("api-key@3"))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .module(&ModuleSelector::parse("nope"))
            .unwrap()
            .is_none()
    );
    let names: Vec<(String, u32)> = store
        .modules()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.version))
        .collect();
    assert_eq!(
        names,
        [
            ("api-key".into(), 1),
            ("api-key".into(), 2),
            ("copy".into(), 1)
        ]
    );
    assert_eq!(
        module_files(dir.path()).len(),
        2,
        "one file per distinct bytes"
    );
    let web = store.group("web").unwrap().unwrap();
    assert_eq!((web.version, web.config.as_str()), (2, "a: 2"));
    assert!(store.group("nobody").unwrap().is_none());
    // Versions go on from where they were.
    assert_eq!(store.apply("web", group_state("a: 3")).unwrap().version, 3);
}

#[test]
fn bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    for name in ["", "Api", "a/b", "a@1", "-x", &"a".repeat(65)] {
        let err = store.put_module(name, b"\0asm", "0.4.0").unwrap_err();
        assert!(err.to_string().contains("module name"), "{name}: {err}");
    }
    assert!(module_files(dir.path()).is_empty());
}

/// Run as a child process by the test below: stores one module, says so,
/// then starts writing another one's temporary file and waits to be killed.
#[test]
fn child_writes_then_waits_for_kill() {
    let Ok(dir) = std::env::var("WEFT_STORE_CHILD_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let store = RedbStore::open(dir).unwrap();
    store.put_module("kept", b"\0asm durable", "0.4.0").unwrap();
    store.apply("web", group_state("kept: yes")).unwrap();
    std::fs::write(
        dir.join(MODULES_DIR).join(".tmp-unfinished-1"),
        b"\0asm half",
    )
    .unwrap();
    println!("committed");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[test]
fn a_kill_9_keeps_what_was_answered_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writes_then_waits_for_kill", "--nocapture"])
        .env("WEFT_STORE_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let said_committed = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("committed"));
    assert!(said_committed, "the child process did not commit");
    child.kill().unwrap(); // SIGKILL: no destructor runs, the database is not closed
    child.wait().unwrap();
    assert!(
        module_files(dir.path())
            .iter()
            .any(|f| f.starts_with(".tmp-"))
    );

    let store = RedbStore::open(dir.path()).expect("opens without repair");
    let kept = store
        .module(&ModuleSelector::parse("kept"))
        .unwrap()
        .unwrap();
    assert_eq!(read_all(&store, &kept.sha256), b"\0asm durable");
    assert_eq!(store.group("web").unwrap().unwrap().config, "kept: yes");
    assert_eq!(
        module_files(dir.path()),
        vec![kept.sha256],
        "temporary file removed on open"
    );
}
