//! Properties, shared data and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use wasmtime::Linker;

use super::{C, R, give_found, ok};
use crate::filter::proxy_wasm::abi::{MetricType, Status};
use crate::filter::proxy_wasm::properties;
use crate::filter::proxy_wasm::state::{
    DefinedMetric, VmState, give, read, read_string, write_u32, write_u64,
};

/// Most metrics one VM may define.
const MAX_METRICS: usize = 256;

/// Adds the property, shared-data and metric functions to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(
        env,
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, ps: i32, ret_ptr: i32, ret_size: i32| -> R {
            let path = read(&c, pp, ps)?;
            let context = c.data().effective;
            let found = properties::get(c.data(), context, &path).ok_or(Status::NotFound);
            give_found(&mut c, found, ret_ptr, ret_size)
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
