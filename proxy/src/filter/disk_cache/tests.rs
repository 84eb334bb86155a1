//! The module cache's unit tests.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-dc-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn keys_are_stable_and_short() {
    let engine = Engine::default();
    let a = compat_key(&engine);
    assert_eq!(a, compat_key(&engine));
    assert_eq!(a.len(), 16);
    let mut other = wasmtime::Config::new();
    other.epoch_interruption(true);
    assert_ne!(a, compat_key(&Engine::new(&other).unwrap()));
}

#[test]
fn relative_dirs_resolve_from_the_config_and_disabled_means_none() {
    let engine = Engine::default();
    let base = temp("rel");
    let config = ModuleCacheConfig {
        enabled: true,
        dir: Some("cache".into()),
    };
    let cache = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
    assert_eq!(cache.dir(), base.join("cache"));
    assert!(!base.exists(), "resolving creates nothing");
    let off = ModuleCacheConfig {
        enabled: false,
        dir: Some("cache".into()),
    };
    assert!(DiskCache::resolve(Some(&off), &base, &engine).is_none());
}

#[test]
fn shared_directories_are_refused() {
    let dir = temp("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = check_private(&std::fs::metadata(&dir).unwrap()).unwrap_err();
    assert!(
        err.contains("writable by group or others (mode 777)"),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(check_private(&std::fs::metadata(&dir).unwrap()), Ok(()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn artifacts_round_trip_and_the_directory_is_private() {
    let engine = Engine::default();
    let base = temp("roundtrip");
    let config = ModuleCacheConfig {
        enabled: true,
        dir: Some("a/b".into()),
    };
    let cache = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
    // The smallest component: the preamble alone.
    let component = Component::new(&engine, b"\0asm\x0d\0\x01\0").unwrap();
    assert!(cache.load(&engine, "abc").is_none());
    cache.store("abc", &component);
    let meta = std::fs::metadata(cache.dir()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(
        cache.load(&engine, "abc").is_none(),
        "not read from a directory that was not there when this build looked"
    );
    let cache = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
    assert!(cache.load(&engine, "abc").is_some());
    std::fs::write(cache.path("abc"), b"garbage").unwrap();
    assert!(cache.load(&engine, "abc").is_none(), "garbage is ignored");
    // This build made the directory: the next one reads from it.
    cache.store("abc", &component);
    let next = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
    assert!(next.load(&engine, "abc").is_some());
    // Not this user's alone, or a link: not loaded.
    std::fs::set_permissions(next.path("abc"), std::fs::Permissions::from_mode(0o620)).unwrap();
    assert!(next.load(&engine, "abc").is_none());
    std::fs::rename(next.path("abc"), cache.dir().join("elsewhere")).unwrap();
    std::fs::set_permissions(
        cache.dir().join("elsewhere"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("elsewhere", next.path("abc")).unwrap();
    assert!(
        next.load(&engine, "abc").is_none(),
        "a link is not followed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_directory_that_appears_after_the_first_look_is_not_read() {
    let engine = Engine::default();
    let base = std::env::temp_dir().join(format!("weft-dc-{}-appears", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let config = ModuleCacheConfig {
        enabled: true,
        dir: Some("cache".into()),
    };
    let first = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
    // Someone else makes it, with an artifact, before this process does.
    let planted = DiskCache::resolve(
        Some(&ModuleCacheConfig {
            enabled: true,
            dir: Some("other".into()),
        }),
        &base,
        &engine,
    )
    .unwrap();
    let component = Component::new(&engine, b"\0asm\x0d\0\x01\0").unwrap();
    planted.store("abc", &component);
    std::fs::rename(planted.dir(), first.dir()).unwrap();
    let later = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
    assert!(later.load(&engine, "abc").is_none());
    later.store("def", &component);
    assert!(!later.path("def").exists(), "nor written");
    std::fs::remove_dir_all(&base).unwrap();
}
