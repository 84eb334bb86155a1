//! The host functions a proxy-wasm module imports from `env`: the ABI
//! v0.2.1 set, and the v0.2.0 names that differ. Calls the proxy does not
//! serve (gRPC calls and streams, shared queues, foreign functions) answer
//! `UNIMPLEMENTED`; see docs/proxy-wasm.md.

mod data;
mod http;

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::abi::{self, Status};
use super::state::{VmState, give, read_string, write_u32, write_u64};

/// Longest panic message kept for a trap report.
const MAX_PANIC_MESSAGE: usize = crate::filter::host::MAX_PANIC_MESSAGE;

type C<'a> = Caller<'a, VmState>;
type R = wasmtime::Result<i32>;

fn ok(status: Status) -> R {
    Ok(status as i32)
}

/// Hands the guest the bytes of `found` (at `ret_ptr`/`ret_size`) and
/// answers `Ok`, or answers the status it failed with.
fn give_found(
    c: &mut C<'_>,
    found: Result<impl AsRef<[u8]>, Status>,
    ret_ptr: i32,
    ret_size: i32,
) -> R {
    match found {
        Ok(bytes) => {
            give(c, bytes.as_ref(), ret_ptr, ret_size)?;
            ok(Status::Ok)
        }
        Err(status) => ok(status),
    }
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
    http::add_to_linker(linker)?;
    data::add_to_linker(linker)?;
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
