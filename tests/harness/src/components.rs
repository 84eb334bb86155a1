//! Components made from WIT with dummy code, for what the built filters
//! cannot show: a component of another world or another contract version,
//! and modules padded to any size (still valid components, with distinct
//! bytes per tag).

use std::path::Path;

use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

/// The filter contract as the proxy serves it (`wit/filter.wit`).
pub fn contract_wit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/filter.wit");
    std::fs::read_to_string(path).expect("wit/filter.wit")
}

/// A component of `world` in the package written in `wit`, with dummy
/// code: what `cargo build --target wasm32-wasip2` makes, minus behaviour.
pub fn component_of_world(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("filter.wit", wit).expect("WIT parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("world exists");
    let mangling = ManglingAndAbi::Legacy(LiftLowerAbi::Sync);
    let mut module = wit_component::dummy_module(&resolve, world, mangling);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        StringEncoding::UTF8,
        false,
    )
    .expect("metadata embeds");
    ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// A filter component of the contract served, with dummy code.
pub fn filter_component() -> Vec<u8> {
    component_of_world(&contract_wit(), "http-filter")
}

/// A filter component (dummy code) of contract version `version`.
pub fn filter_component_of_contract(version: &str) -> Vec<u8> {
    let wit = contract_wit();
    let package = wit
        .lines()
        .find(|l| l.starts_with("package weft:filter@"))
        .expect("the contract's package line")
        .to_string();
    let wit = wit.replace(&package, &format!("package weft:filter@{version};"));
    assert!(wit.contains(version), "the contract's package line changed");
    component_of_world(&wit, "http-filter")
}

/// A component of a world that is not the filter contract.
pub fn other_world_component() -> Vec<u8> {
    component_of_world(
        "package acme:thing@1.0.0; interface api { run: func(); } world thing { export api; }",
        "thing",
    )
}

/// `component` grown to at least `size` bytes by a custom section (so it
/// stays a valid component), with `tag` in it so that different tags make
/// different bytes.
pub fn padded(component: &[u8], size: usize, tag: &str) -> Vec<u8> {
    let name = format!("padding-{tag}");
    let payload = size.saturating_sub(component.len()) + 1;
    let mut content = Vec::with_capacity(payload + name.len() + 8);
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    content.resize(content.len() + payload, 0x5a);
    let mut out = Vec::with_capacity(component.len() + content.len() + 16);
    out.extend_from_slice(component);
    out.push(0); // custom section
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

/// The sha256 of `bytes` in lower-case hex: a module's name in the
/// registry and in the caches.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
