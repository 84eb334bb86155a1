//! The ways the filter can go wrong.

use serde::Deserialize;
use weft_sdk::log::{self, Level};

/// What goes wrong.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Misbehaviour {
    /// Executes the `unreachable` instruction.
    Trap,
    /// Spins forever.
    Loop,
    /// Allocates and touches memory until the proxy's cap stops it.
    Grow,
    /// Panics.
    Panic,
    /// Panics three calls deep, in `nested::parse_the_doomed_header`: for
    /// the trap report's backtrace to name.
    PanicDeep,
    /// Calls `response.status` where there is no response (a request
    /// phase, or `init`): what only a filter using the contract directly,
    /// not the SDK's types, can do.
    Misuse,
    /// Reads property set 999, which it never registered (the contract
    /// directly: the SDK only reads sets it made).
    UnknownPropertySet,
    /// Registers property sets until the proxy refuses one.
    HoardPropertySets,
    /// Sets the response's `content-length` to `5`, whatever the body, and
    /// goes on (in `response_headers`): a framing header the proxy manages.
    SetContentLength,
}

impl Misbehaviour {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            Misbehaviour::Trap => "trap",
            Misbehaviour::Loop => "loop",
            Misbehaviour::Grow => "grow",
            Misbehaviour::Panic => "panic",
            Misbehaviour::PanicDeep => "panic_deep",
            Misbehaviour::Misuse => "misuse",
            Misbehaviour::UnknownPropertySet => "unknown_property_set",
            Misbehaviour::HoardPropertySets => "hoard_property_sets",
            Misbehaviour::SetContentLength => "set_content_length",
        }
    }

    /// Goes wrong; never returns.
    pub fn commit(self) -> ! {
        match self {
            Misbehaviour::Trap => trap(),
            Misbehaviour::Loop => spin(),
            Misbehaviour::Grow => grow(),
            Misbehaviour::Panic => panic!("misbehave-filter: asked to panic"),
            Misbehaviour::PanicDeep => nested::handle_the_request(3),
            Misbehaviour::Misuse => {
                let status = weft_sdk::bindings::weft::filter::response::status();
                // The host traps: this is not reached.
                panic!("misbehave-filter: response.status answered {status}")
            }
            Misbehaviour::UnknownPropertySet => {
                let packed = weft_sdk::bindings::weft::filter::host::properties(999);
                panic!(
                    "misbehave-filter: property set 999 gave {} bytes",
                    packed.len()
                )
            }
            Misbehaviour::HoardPropertySets => loop {
                weft_sdk::property::PropertySet::new(&["request.id"]);
            },
            Misbehaviour::SetContentLength => {
                panic!("misbehave-filter: set_content_length needs the response_headers phase")
            }
        }
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// A clock jump longer than this between two looks is time the proxy stood
/// still (stopped, or its machine paused), not time spent here.
const STOPPED_NS: u64 = 5_000_000;

/// Spins for `ms` of running time, looking at the clock as it goes.
pub fn keep_busy(ms: u64) {
    let mut busy = 0u64;
    let mut last = weft_sdk::time::monotonic_nanos();
    while busy < ms * 1_000_000 {
        let now = weft_sdk::time::monotonic_nanos();
        let step = now.saturating_sub(last);
        if step <= STOPPED_NS {
            busy += step;
        }
        last = now;
    }
}

/// Turns a loop `turns` times, each turn a step the compiler cannot
/// remove: a fixed amount of work.
pub fn spin_for(turns: u64) {
    let mut state = 0u64;
    for _ in 0..turns {
        state = std::hint::black_box(state.wrapping_add(1));
    }
}

fn spin() -> ! {
    let mut turns = 0u64;
    loop {
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
}

/// Allocates 1 MiB chunks and writes to every page of each, until an
/// allocation fails; then logs that and traps. (Left to itself, the standard
/// library would report the failure on WASI stderr, which the proxy does not
/// provide, and trap on that import instead.)
fn grow() -> ! {
    const CHUNK: usize = 1 << 20;
    const PAGE: usize = 4096;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(CHUNK).is_err() || chunks.try_reserve(1).is_err() {
            // No formatting: that would allocate.
            log::log(Level::Error, "misbehave-filter: out of memory");
            trap();
        }
        chunk.resize(CHUNK, 0);
        for byte in chunk.iter_mut().step_by(PAGE) {
            *byte = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
}

/// Calls that end in a panic a few frames down, kept apart (never inlined)
/// so that each is a function of its own in the component.
mod nested {
    #[inline(never)]
    pub fn handle_the_request(depth: u32) -> ! {
        check_the_headers(std::hint::black_box(depth))
    }

    #[inline(never)]
    fn check_the_headers(depth: u32) -> ! {
        parse_the_doomed_header(std::hint::black_box(depth))
    }

    #[inline(never)]
    fn parse_the_doomed_header(depth: u32) -> ! {
        panic!("misbehave-filter: panicked {depth} calls deep")
    }
}
