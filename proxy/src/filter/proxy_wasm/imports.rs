//! The host functions a proxy-wasm module imports from `env`: the ABI
//! v0.2.1 set, and the v0.2.0 names that differ. Calls the proxy does not
//! serve (gRPC calls and streams, shared queues, foreign functions) answer
//! `UNIMPLEMENTED`; see docs/proxy-wasm.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::abi::{self, BufferType, MapType, MetricType, Status};
use super::headers::{self, Edit};
use super::properties;
use super::state::{
    DefinedMetric, PendingCall, VmState, give, read, read_string, write_u32, write_u64,
};
use crate::filter::bindings::weft::filter::host::HttpRequest;
use crate::filter::bindings::weft::filter::types::LocalResponse;

/// Longest panic message kept for a trap report.
const MAX_PANIC_MESSAGE: usize = crate::filter::host::MAX_PANIC_MESSAGE;
/// Most HTTP calls one context may have waiting.
const MAX_PENDING_CALLS: usize = 16;
/// Most metrics one VM may define.
const MAX_METRICS: usize = 256;

type C<'a> = Caller<'a, VmState>;
type R = wasmtime::Result<i32>;

fn ok(status: Status) -> R {
    Ok(status as i32)
}

/// Every `proxy_*` function this host provides, by name.
pub fn provided() -> &'static [&'static str] {
    &[
        "proxy_log",
        "proxy_get_log_level",
        "proxy_get_current_time_nanoseconds",
        "proxy_set_tick_period_milliseconds",
        "proxy_get_buffer_bytes",
        "proxy_set_buffer_bytes",
        "proxy_get_header_map_pairs",
        "proxy_set_header_map_pairs",
        "proxy_get_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_remove_header_map_value",
        "proxy_add_header_map_value",
        "proxy_get_header_map_size",
        "proxy_get_property",
        "proxy_set_property",
        "proxy_get_shared_data",
        "proxy_set_shared_data",
        "proxy_register_shared_queue",
        "proxy_resolve_shared_queue",
        "proxy_dequeue_shared_queue",
        "proxy_enqueue_shared_queue",
        "proxy_continue_stream",
        "proxy_close_stream",
        "proxy_continue_request",
        "proxy_continue_response",
        "proxy_clear_route_cache",
        "proxy_send_local_response",
        "proxy_http_call",
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
        "proxy_get_status",
        "proxy_set_effective_context",
        "proxy_call_foreign_function",
        "proxy_done",
        "proxy_define_metric",
        "proxy_get_metric",
        "proxy_record_metric",
        "proxy_increment_metric",
    ]
}

/// Adds the `env` functions to `linker`.
pub fn add_to_linker(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(
        env,
        "proxy_log",
        |c: C<'_>, level: i32, ptr: i32, len: i32| -> R { log(c, level, ptr, len) },
    )?;
    linker.func_wrap(env, "proxy_get_log_level", |mut c: C<'_>, ret: i32| -> R {
        write_u32(&mut c, ret, abi::current_log_level() as u32)?;
        ok(Status::Ok)
    })?;
    linker.func_wrap(
        env,
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> R {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            write_u64(&mut c, ret, now)?;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, ms: i32| -> R {
            let state = c.data_mut();
            state.tick_period = std::time::Duration::from_millis(ms as u32 as u64);
            state.tick_changed = true;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| -> R {
            let Some(kind) = BufferType::from_abi(kind) else {
                return ok(Status::BadArgument);
            };
            match headers::buffer(c.data(), kind, start as u32 as usize, max as u32 as usize) {
                Ok(bytes) => {
                    give(&mut c, &bytes, ret_ptr, ret_size)?;
                    ok(Status::Ok)
                }
                Err(status) => ok(status),
            }
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
            match headers::value(c.data(), map, &key) {
                Ok(value) => {
                    give(&mut c, &value, ret_ptr, ret_size)?;
                    ok(Status::Ok)
                }
                Err(status) => ok(status),
            }
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
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, ps: i32, ret_ptr: i32, ret_size: i32| -> R {
            let path = read(&c, pp, ps)?;
            let context = c.data().effective;
            match properties::get(c.data(), context, &path) {
                Some(value) => {
                    give(&mut c, &value, ret_ptr, ret_size)?;
                    ok(Status::Ok)
                }
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, ps: i32, vp: i32, vs: i32| -> R {
            let (path, value) = (read(&c, pp, ps)?, read(&c, vp, vs)?);
            let state = c.data_mut();
            if state.properties.len() >= 1024 {
                return ok(Status::BadArgument);
            }
            state.properties.insert((state.effective, path), value);
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, ks: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> R {
            let key = read_string(&c, kp, ks)?;
            match c.data().identity.shared.get(&key) {
                Some((value, version)) => {
                    give(&mut c, &value, ret_ptr, ret_size)?;
                    write_u32(&mut c, ret_cas, version as u32)?;
                    ok(Status::Ok)
                }
                None => ok(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, ks: i32, vp: i32, vs: i32, cas: i32| -> R {
            let (key, value) = (read_string(&c, kp, ks)?, read(&c, vp, vs)?);
            ok(set_shared(c.data(), key, value, cas as u32))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_register_shared_queue",
        |_: C<'_>, _: i32, _: i32, _: i32| -> R { ok(Status::Unimplemented) },
    )?;
    linker.func_wrap(
        env,
        "proxy_resolve_shared_queue",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { ok(Status::Unimplemented) },
    )?;
    linker.func_wrap(
        env,
        "proxy_dequeue_shared_queue",
        |_: C<'_>, _: i32, _: i32, _: i32| -> R { ok(Status::Unimplemented) },
    )?;
    linker.func_wrap(
        env,
        "proxy_enqueue_shared_queue",
        |_: C<'_>, _: i32, _: i32, _: i32| -> R { ok(Status::Unimplemented) },
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
    linker.func_wrap(
        env,
        "proxy_grpc_call",
        |_: C<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> R { ok(Status::Unimplemented) },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_stream",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R {
            ok(Status::Unimplemented)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_send",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32| -> R { ok(Status::Unimplemented) },
    )?;
    linker.func_wrap(env, "proxy_grpc_cancel", |_: C<'_>, _: i32| -> R {
        ok(Status::Unimplemented)
    })?;
    linker.func_wrap(env, "proxy_grpc_close", |_: C<'_>, _: i32| -> R {
        ok(Status::Unimplemented)
    })?;
    linker.func_wrap(
        env,
        "proxy_get_status",
        |_: C<'_>, _: i32, _: i32, _: i32| -> R { ok(Status::Unimplemented) },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_effective_context",
        |mut c: C<'_>, context: i32| -> R {
            c.data_mut().effective = context as u32;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_call_foreign_function",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { ok(Status::NotFound) },
    )?;
    linker.func_wrap(env, "proxy_done", |_: C<'_>| -> R { ok(Status::Ok) })?;
    linker.func_wrap(
        env,
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, ns: i32, ret: i32| -> R {
            let Some(kind) = MetricType::from_abi(kind) else {
                return ok(Status::BadArgument);
            };
            let name = metric_name(&read_string(&c, np, ns)?);
            let state = c.data_mut();
            let id = match state
                .metrics
                .iter()
                .position(|m| m.name == name && m.kind == kind)
            {
                Some(id) => id,
                None if state.metrics.len() >= MAX_METRICS => return ok(Status::BadArgument),
                None => {
                    let value = state
                        .plugin
                        .metric_values
                        .lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_insert_with(|| Arc::new(AtomicI64::new(0)))
                        .clone();
                    state.metrics.push(DefinedMetric { kind, name, value });
                    state.metrics.len() - 1
                }
            };
            write_u32(&mut c, ret, id as u32)?;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> R {
            let Some(metric) = c.data().metrics.get(id as u32 as usize) else {
                return ok(Status::NotFound);
            };
            let value = metric.value.load(Ordering::Relaxed) as u64;
            write_u64(&mut c, ret, value)?;
            ok(Status::Ok)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> R {
            ok(update_metric(c.data(), id, Update::Record(value as u64)))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> R {
            ok(update_metric(c.data(), id, Update::Increment(offset)))
        },
    )?;
    Ok(())
}

fn log(mut c: C<'_>, level: i32, ptr: i32, len: i32) -> R {
    let message = read_string(&c, ptr, len)?;
    message_line(c.data(), abi::log_level(level), &message);
    // The SDK's panic hook logs the panic before the trap: kept for the
    // trap's report.
    if message.contains("panicked at") && c.data().panic.is_none() {
        let mut end = message.len().min(MAX_PANIC_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        c.data_mut().panic = Some(message[..end].to_string());
    }
    ok(Status::Ok)
}

/// Writes a guest's log line where the filter's lines go.
pub fn message_line(state: &VmState, level: tracing::Level, message: &str) {
    if let Some(file) = state.identity.log_file {
        // A log file of its own takes `info` and above, as for Weft filters.
        if level <= tracing::Level::INFO {
            file.line(message);
        }
        return;
    }
    if !abi::enabled(level) {
        return;
    }
    crate::logging::filter_line(
        level,
        &state.identity.name,
        &state.exchange.props.request_id,
        message,
    );
}

fn resume(state: &mut VmState, stream: i32) -> Status {
    if stream != abi::STREAM_REQUEST && stream != abi::STREAM_RESPONSE {
        return Status::BadArgument;
    }
    state.resumed.insert(state.effective);
    Status::Ok
}

/// proxy-wasm's CAS: 0 writes whatever is there; a version must match.
fn set_shared(state: &VmState, key: String, value: Vec<u8>, cas: u32) -> Status {
    let shared = &state.identity.shared;
    for _ in 0..8 {
        let current = shared.get(&key).map_or(0, |(_, v)| v);
        if cas != 0 && current as u32 != cas {
            return Status::CasMismatch;
        }
        match shared.set(key.clone(), value.clone(), current) {
            Ok(_) => return Status::Ok,
            Err(crate::filter::bindings::weft::filter::host::SharedError::CasMismatch)
                if cas == 0 =>
            {
                continue;
            }
            Err(crate::filter::bindings::weft::filter::host::SharedError::CasMismatch) => {
                return Status::CasMismatch;
            }
            Err(_) => return Status::BadArgument,
        }
    }
    Status::CasMismatch
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

/// A metric name as Prometheus accepts it: other characters become `_`.
fn metric_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

enum Update {
    Record(u64),
    Increment(i64),
}

fn update_metric(state: &VmState, id: i32, update: Update) -> Status {
    let Some(metric) = state.metrics.get(id as u32 as usize) else {
        return Status::NotFound;
    };
    let (registry, filter) = (&state.identity.metrics, &state.identity.name);
    let result = match (metric.kind, update) {
        (MetricType::Counter, Update::Increment(n)) if n >= 0 => {
            metric.value.fetch_add(n, Ordering::Relaxed);
            registry.filter_counter_add(filter, &metric.name, vec![], n as u64)
        }
        (MetricType::Counter, Update::Increment(_)) => return Status::BadArgument,
        (MetricType::Counter, Update::Record(v)) => {
            let before = metric.value.swap(v as i64, Ordering::Relaxed);
            let grow = (v as i64).saturating_sub(before).max(0) as u64;
            registry.filter_counter_add(filter, &metric.name, vec![], grow)
        }
        (MetricType::Gauge, Update::Increment(n)) => {
            metric.value.fetch_add(n, Ordering::Relaxed);
            registry.filter_gauge_add(filter, &metric.name, vec![], n as f64)
        }
        (MetricType::Gauge, Update::Record(v)) => {
            metric.value.store(v as i64, Ordering::Relaxed);
            registry.filter_gauge_set(filter, &metric.name, vec![], v as f64)
        }
        (MetricType::Histogram, Update::Record(v)) => {
            metric.value.store(v as i64, Ordering::Relaxed);
            registry.filter_histogram_observe(filter, &metric.name, vec![], v as f64)
        }
        (MetricType::Histogram, Update::Increment(_)) => return Status::BadArgument,
    };
    match result {
        Ok(()) => Status::Ok,
        // Refused by the limits on filters' metrics: counted there.
        Err(_) => Status::Ok,
    }
}
