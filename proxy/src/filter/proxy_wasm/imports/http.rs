//! The stream's header maps and bodies, its local response and its
//! resumption, and HTTP calls.

use wasmtime::Linker;

use super::{C, R, give_found, ok};
use crate::filter::bindings::weft::filter::host::HttpRequest;
use crate::filter::bindings::weft::filter::types::LocalResponse;
use crate::filter::proxy_wasm::abi::{self, BufferType, MapType, Status};
use crate::filter::proxy_wasm::headers::{self, Edit};
use crate::filter::proxy_wasm::state::{PendingCall, VmState, give, read, read_string, write_u32};

/// Most HTTP calls one context may have waiting.
const MAX_PENDING_CALLS: usize = 16;

/// Adds the header-map, buffer, local-response, resumption and HTTP-call
/// functions to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(
        env,
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(kind) = BufferType::from_abi(kind) else {
                return ok(Status::BadArgument);
            };
            let found = headers::buffer(c.data(), kind, start as u32 as usize, max as u32 as usize);
            give_found(&mut c, found, ret_ptr, ret_size)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> R {
            let Some(kind) = BufferType::from_abi(kind) else {
                return ok(Status::BadArgument);
            };
            let data = read(&c, ptr, len)?;
            ok(headers::set_buffer(
                c.data_mut(),
                kind,
                start as u32 as usize,
                size as u32 as usize,
                &data,
            ))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(pairs) = MapType::from_abi(map).and_then(|m| headers::pairs(c.data(), m))
            else {
                return ok(Status::NotFound);
            };
            let bytes = abi::encode_map(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            give(&mut c, &bytes, ret_ptr, ret_size)?;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_size",
        |mut c: C<'_>, map: i32, ret: i32| -> R {
            let Some(pairs) = MapType::from_abi(map).and_then(|m| headers::pairs(c.data(), m))
            else {
                return ok(Status::NotFound);
            };
            let size =
                abi::encode_map(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).len();
            write_u32(&mut c, ret, size as u32)?;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> R {
            let Some(map) = MapType::from_abi(map) else {
                return ok(Status::BadArgument);
            };
            let Some(pairs) = abi::decode_map(&read(&c, ptr, len)?) else {
                return ok(Status::ParseFailure);
            };
            ok(headers::edit(c.data_mut(), map, Edit::All(pairs)))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, ks: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(map) = MapType::from_abi(map) else {
                return ok(Status::BadArgument);
            };
            let key = read(&c, kp, ks)?;
            let found = headers::value(c.data(), map, &key);
            give_found(&mut c, found, ret_ptr, ret_size)
        },
    )?;
    for (name, add) in [
        ("proxy_replace_header_map_value", false),
        ("proxy_add_header_map_value", true),
    ] {
        linker.func_wrap(
            env,
            name,
            move |mut c: C<'_>, map: i32, kp: i32, ks: i32, vp: i32, vs: i32| -> R {
                let Some(map) = MapType::from_abi(map) else {
                    return ok(Status::BadArgument);
                };
                let (key, value) = (read(&c, kp, ks)?, read(&c, vp, vs)?);
                let edit = if add {
                    Edit::Add(&key, &value)
                } else {
                    Edit::Replace(&key, &value)
                };
                ok(headers::edit(c.data_mut(), map, edit))
            },
        )?;
    }
    linker.func_wrap(
        env,
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, ks: i32| -> R {
            let Some(map) = MapType::from_abi(map) else {
                return ok(Status::BadArgument);
            };
            let key = read(&c, kp, ks)?;
            ok(headers::edit(c.data_mut(), map, Edit::Remove(&key)))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_continue_stream",
        |mut c: C<'_>, stream: i32| -> R { ok(resume(c.data_mut(), stream)) },
    )?;
    linker.func_wrap(env, "proxy_continue_request", |mut c: C<'_>| -> R {
        ok(resume(c.data_mut(), abi::STREAM_REQUEST))
    })?;
    linker.func_wrap(env, "proxy_continue_response", |mut c: C<'_>| -> R {
        ok(resume(c.data_mut(), abi::STREAM_RESPONSE))
    })?;
    linker.func_wrap(
        env,
        "proxy_close_stream",
        |mut c: C<'_>, _stream: i32| -> R {
            // Closing a stream ends it: answered as a reset would be.
            let state = c.data_mut();
            let context = state.effective;
            state
                .local_responses
                .entry(context)
                .or_insert_with(|| LocalResponse {
                    status: 502,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: b"closed by filter\n".to_vec(),
                });
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(env, "proxy_clear_route_cache", |_: C<'_>| -> R {
        ok(Status::Ok)
    })?;
    linker.func_wrap(
        env,
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         _dp: i32,
         _ds: i32,
         bp: i32,
         bs: i32,
         hp: i32,
         hs: i32,
         _grpc: i32|
         -> R {
            let body = read(&c, bp, bs)?;
            let Some(pairs) = abi::decode_map(&read(&c, hp, hs)?) else {
                return ok(Status::ParseFailure);
            };
            let headers = pairs
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(&k).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .filter(|(k, _)| !k.starts_with(':'))
                .collect();
            let state = c.data_mut();
            let context = state.effective;
            state.local_responses.insert(
                context,
                LocalResponse {
                    status: status as u32 as u16,
                    headers,
                    body,
                },
            );
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         us: i32,
         hp: i32,
         hs: i32,
         bp: i32,
         bs: i32,
         _tp: i32,
         _ts: i32,
         timeout: i32,
         ret: i32|
         -> R {
            let upstream = read_string(&c, up, us)?;
            let Some(pairs) = abi::decode_map(&read(&c, hp, hs)?) else {
                return ok(Status::ParseFailure);
            };
            let body = read(&c, bp, bs)?;
            let Some(request) = call_request(c.data(), &upstream, pairs, body, timeout as u32)
            else {
                return ok(Status::BadArgument);
            };
            let state = c.data_mut();
            let context = state.effective;
            if state
                .pending_calls
                .iter()
                .filter(|p| p.context == context)
                .count()
                >= MAX_PENDING_CALLS
            {
                return ok(Status::BadArgument);
            }
            state.next_token = state.next_token.wrapping_add(1).max(1);
            let token = state.next_token;
            state.pending_calls.push(PendingCall {
                token,
                context,
                request,
            });
            write_u32(&mut c, ret, token)?;
            ok(Status::Ok)
        },
    )?;
    Ok(())
}

fn resume(state: &mut VmState, stream: i32) -> Status {
    if stream != abi::STREAM_REQUEST && stream != abi::STREAM_RESPONSE {
        return Status::BadArgument;
    }
    state.resumed.insert(state.effective);
    Status::Ok
}

/// The callout a `proxy_http_call` asks for: `upstream` is a granted
/// `host:port`; `:method` and `:path` come from the headers (`:authority`
/// is ignored: the callout's `Host` is the granted authority).
fn call_request(
    state: &VmState,
    upstream: &str,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    timeout_ms: u32,
) -> Option<HttpRequest> {
    if !state.identity.callouts.allows(upstream) {
        return None;
    }
    let (mut method, mut path) = ("GET".to_string(), "/".to_string());
    let mut headers = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let (k, v) = (
            String::from_utf8_lossy(&k).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        );
        match k.as_str() {
            ":method" => method = v,
            ":path" => path = v,
            _ if k.starts_with(':') => {}
            _ => headers.push((k, v)),
        }
    }
    Some(HttpRequest {
        method,
        url: format!("http://{upstream}{path}"),
        headers,
        body,
        timeout_ms,
    })
}
