//! `proxy_get_property`: proxy-wasm attribute paths (Envoy's names) mapped
//! to what Weft knows of a request. Values are encoded as Envoy encodes
//! them: text as its bytes, integers as 8-byte little-endian, booleans as
//! one byte, times and durations as 8-byte nanoseconds. A path Weft does
//! not name the Envoy way is looked up under Weft's own property names,
//! its segments joined with dots (`["listener", "name"]` → `listener.name`).

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use super::state::VmState;
use crate::filter::exchange::{first_header, path_of};

fn int(n: i64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn text(s: impl AsRef<str>) -> Vec<u8> {
    s.as_ref().as_bytes().to_vec()
}

/// The value at `path` (segments as the guest sent them, split on NUL).
pub fn get(state: &VmState, context: u32, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(set) = state.properties.get(&(context, path.to_vec())) {
        return Some(set.clone());
    }
    let segments: Vec<&str> = path
        .split(|b| *b == 0)
        .map(|s| std::str::from_utf8(s).unwrap_or(""))
        .collect();
    let plugin = |s: &str| match s {
        "plugin_name" => Some(text(&*state.identity.name)),
        "plugin_root_id" | "plugin_vm_id" => Some(Vec::new()),
        _ => None,
    };
    if let [one] = segments.as_slice()
        && let Some(value) = plugin(one)
    {
        return Some(value);
    }
    // The rest is about the request: only for the stream being called.
    if !state.on_current_stream() {
        return None;
    }
    let ex = &state.exchange;
    let props = &ex.props;
    let request = ex.request.as_ref();
    let tls = props.peer.as_ref().and_then(|p| p.tls.as_deref());
    let cert = tls.and_then(|t| t.cert.as_ref());
    Some(match segments.as_slice() {
        ["request", "path"] => text(path_of(request?)),
        ["request", "url_path"] => text(request?.uri.path()),
        ["request", "query"] => text(request?.uri.query().unwrap_or("")),
        ["request", "host"] => text(ex.property("request.authority")?),
        ["request", "scheme"] => text(if tls.is_some() { "https" } else { "http" }),
        ["request", "method"] => text(request?.method.as_str()),
        ["request", "id"] => text(&props.request_id),
        ["request", "protocol"] => text(format!("{:?}", request?.version)),
        ["request", "useragent"] => text(first_header(&request?.headers, "user-agent")?),
        ["request", "referer"] => text(first_header(&request?.headers, "referer")?),
        ["request", "headers", name] => text(first_header(&request?.headers, name)?),
        ["request", "time"] => {
            let started = props.started?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            int(now.saturating_sub(started.elapsed()).as_nanos() as i64)
        }
        ["request", "duration"] => int(props.started?.elapsed().as_nanos() as i64),
        ["response", "code"] => int(ex.response.as_ref()?.status.as_u16().into()),
        ["response", "headers", name] => text(first_header(&ex.response.as_ref()?.headers, name)?),
        ["source", "address"] => text(&props.peer.as_ref()?.address),
        ["source", "port"] => int(props.peer.as_ref()?.addr.port().into()),
        ["connection", "mtls"] => vec![u8::from(cert.is_some())],
        ["connection", "tls_version"] => text(tls?.version),
        ["connection", "requested_server_name"] => text(tls?.sni.as_deref()?),
        ["connection", "subject_peer_certificate"] => text(&cert?.subject),
        ["connection", "uri_san_peer_certificate"] => text(&cert?.uri_sans),
        ["connection", "dns_san_peer_certificate"] => text(&cert?.dns_sans),
        ["upstream", "address"] => text(props.upstream_endpoint.as_ref()?.as_str()),
        ["route_name"] => text(&*props.route),
        ["cluster_name"] => text(&*props.cluster),
        ["listener_name"] => text(&*props.listener),
        _ => {
            let name = segments.join(".");
            let value: Cow<'_, str> = ex.property(&name)?;
            text(value)
        }
    })
}
