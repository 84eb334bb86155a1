//! What a proxy-wasm VM's store holds: the limits' bookkeeping shared with
//! Weft filters, the plugin's configuration, the guest's memory and
//! allocator, and the ABI's per-context state (local responses, resumed
//! streams, HTTP calls waiting to be made, properties set).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Caller, Memory, TypedFunc};

use super::abi::MetricType;
use crate::filter::bindings::weft::filter::host::HttpRequest;
use crate::filter::bindings::weft::filter::types::LocalResponse;
use crate::filter::exchange::Exchange;
use crate::filter::host::{CallClock, FilterIdentity, MemoryCap};

/// What every VM of one chain entry shares.
pub struct PluginShared {
    /// The plugin configuration (the chain entry's `config`).
    pub plugin_config: Bytes,
    /// The VM configuration (`filters.<name>.vm_config`).
    pub vm_config: Bytes,
    /// Values of the metrics the plugin defined, by name, as
    /// `proxy_get_metric` reads them.
    pub metric_values: Mutex<HashMap<String, Arc<AtomicI64>>>,
}

/// The guest's memory and allocator, found once after instantiation.
#[derive(Clone)]
pub struct Guest {
    pub memory: Memory,
    pub malloc: TypedFunc<i32, i32>,
}

/// One metric the guest defined: its id is its index.
pub struct DefinedMetric {
    pub kind: MetricType,
    pub name: String,
    pub value: Arc<AtomicI64>,
}

/// An HTTP call the guest dispatched, made once its callback returns.
pub struct PendingCall {
    pub token: u32,
    /// The context that dispatched it: its response goes there.
    pub context: u32,
    pub request: HttpRequest,
}

/// The response of the HTTP call whose callback is running.
#[derive(Default)]
pub struct CallResponse {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The data of one VM's store.
pub struct VmState {
    /// The VM's memory cap.
    pub memory: MemoryCap,
    /// The running callback's deadline and clock.
    pub clock: CallClock,
    /// The filter: its name, shared state, metrics, callouts, log file.
    pub identity: Arc<FilterIdentity>,
    /// What every VM of the chain entry shares.
    pub plugin: Arc<PluginShared>,
    /// Set once instantiated.
    pub guest: Option<Guest>,
    /// The request of the stream context being called (swapped in).
    pub exchange: Box<Exchange>,
    /// The stream context whose request is in `exchange` (0: none).
    pub current: u32,
    /// The context host calls act on (`proxy_set_effective_context`).
    pub effective: u32,
    /// Local responses sent, by context.
    pub local_responses: HashMap<u32, LocalResponse>,
    /// Contexts that called `proxy_continue_stream`.
    pub resumed: HashSet<u32>,
    /// HTTP calls dispatched and not made yet.
    pub pending_calls: Vec<PendingCall>,
    pub next_token: u32,
    /// The response `proxy_on_http_call_response` is reading.
    pub call_response: Option<CallResponse>,
    /// The tick period the guest asked for, and whether it changed since
    /// the VM last looked.
    pub tick_period: Duration,
    pub tick_changed: bool,
    pub metrics: Vec<DefinedMetric>,
    /// Properties set with `proxy_set_property`, by context and path.
    pub properties: HashMap<(u32, Vec<u8>), Vec<u8>>,
    /// A panic message the guest logged before trapping.
    pub panic: Option<String>,
}

impl VmState {
    /// Forgets what a context left behind once it is deleted.
    pub fn forget(&mut self, context: u32) {
        self.local_responses.remove(&context);
        self.resumed.remove(&context);
        self.properties.retain(|(c, _), _| *c != context);
        self.pending_calls.retain(|c| c.context != context);
    }

    /// Whether host calls act on the stream whose request is loaded.
    pub fn on_current_stream(&self) -> bool {
        self.current != 0 && self.effective == self.current
    }
}

/// Traps with `message` (a bad pointer, a call outside the contract).
pub fn trap(message: String) -> wasmtime::Error {
    wasmtime::format_err!("{message}")
}

fn guest(caller: &Caller<'_, VmState>) -> wasmtime::Result<Guest> {
    caller
        .data()
        .guest
        .clone()
        .ok_or_else(|| trap("host call during instantiation".into()))
}

/// Copies `len` bytes at `ptr` out of the guest's memory.
pub fn read(caller: &Caller<'_, VmState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = guest(caller)?.memory;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| trap(format!("out-of-bounds read of {len} bytes at {start:#x}")))
}

/// Reads a string argument; invalid UTF-8 is replaced.
pub fn read_string(caller: &Caller<'_, VmState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// Writes `bytes` at `at` in the guest's memory.
pub fn write(caller: &mut Caller<'_, VmState>, at: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = guest(caller)?.memory;
    memory
        .write(caller, at as u32 as usize, bytes)
        .map_err(|_| trap(format!("out-of-bounds write at {:#x}", at as u32)))
}

pub fn write_u32(caller: &mut Caller<'_, VmState>, at: i32, value: u32) -> wasmtime::Result<()> {
    write(caller, at, &value.to_le_bytes())
}

pub fn write_u64(caller: &mut Caller<'_, VmState>, at: i32, value: u64) -> wasmtime::Result<()> {
    write(caller, at, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: copied into memory its allocator gives,
/// with the pointer and size written at `ret_ptr` and `ret_size`. Nothing
/// is allocated for no bytes: the pointer is null.
pub fn give(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> wasmtime::Result<()> {
    let ptr = if bytes.is_empty() {
        0
    } else {
        let malloc = guest(caller)?.malloc;
        let ptr = malloc.call(&mut *caller, bytes.len() as i32)?;
        if ptr == 0 {
            return Err(trap(format!(
                "the guest's allocator returned null for {} bytes",
                bytes.len()
            )));
        }
        write(caller, ptr, bytes)?;
        ptr
    };
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, bytes.len() as u32)
}
