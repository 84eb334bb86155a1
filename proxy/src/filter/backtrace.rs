//! The Wasm backtrace of a trap, bounded, for the failure report.
//!
//! wasmtime captures the guest's frames when a call traps (never on a call
//! that returns) and attaches them to the error as a [`WasmBacktrace`].
//! Only then, on the failure path, are they turned into text here: at most
//! [`MAX_FRAMES`] frames, each name cut at [`MAX_NAME`] bytes. A frame is
//! named from the component's name section (kept by `strip = "debuginfo"`,
//! removed by `strip = true`); its file and line come from DWARF when the
//! module carries it and the engine parses it (`WASMTIME_BACKTRACE_DETAILS=1`,
//! see docs/architecture.md, "Trap reports").

use std::fmt;

use wasmtime::{FrameInfo, WasmBacktrace};

/// Most frames kept, innermost first.
pub const MAX_FRAMES: usize = 16;
/// Longest function name or file path kept, in bytes.
pub const MAX_NAME: usize = 160;

/// A trap's frames, innermost first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backtrace {
    /// One line per frame: `name` or `name (file:line:column)`.
    pub frames: Vec<String>,
    /// Innermost frames left out as the panic and abort machinery of the
    /// guest's standard library (`std::panicking::…`, `core::panicking::…`,
    /// `abort`), which every panic goes through before it traps.
    pub skipped: usize,
    /// Frames left out past [`MAX_FRAMES`] (as far as wasmtime captured).
    pub omitted: usize,
}

impl Backtrace {
    /// The backtrace attached to `error`, if the error is a guest trap that
    /// carries one with frames.
    pub fn of(error: &wasmtime::Error) -> Option<Backtrace> {
        let trace = error.downcast_ref::<WasmBacktrace>()?;
        Self::from_frames(trace.frames().iter().map(frame_line))
    }

    /// Bounds `frames` (innermost first), leaving out the panic machinery
    /// on top (unless nothing else is left).
    fn from_frames(frames: impl ExactSizeIterator<Item = String>) -> Option<Backtrace> {
        let all: Vec<String> = frames.collect();
        if all.is_empty() {
            return None;
        }
        let machinery = all.iter().take_while(|f| is_machinery(f)).count();
        let skipped = if machinery == all.len() { 0 } else { machinery };
        let rest = all.len() - skipped;
        Some(Backtrace {
            frames: all.into_iter().skip(skipped).take(MAX_FRAMES).collect(),
            skipped,
            omitted: rest.saturating_sub(MAX_FRAMES),
        })
    }

    /// Whether some frame names a function.
    pub fn has_names(&self) -> bool {
        self.frames.iter().any(|f| !f.starts_with("<wasm function"))
    }
}

/// `#0 name (file:line:col); #1 …`, on one line (for logs).
impl fmt::Display for Backtrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped > 0 {
            write!(f, "({} panic frames skipped) ", self.skipped)?;
        }
        for (i, frame) in self.frames.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "#{i} {frame}")?;
        }
        if self.omitted > 0 {
            write!(f, "; … {} more", self.omitted)?;
        }
        Ok(())
    }
}

/// The functions a Rust panic runs through between the panicking frame
/// and the trap (`panic = "abort"`).
fn is_machinery(frame: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        "std::",
        "core::panicking::",
        "__rustc::",
        "panic_abort::",
        "abort",
        "rust_begin_unwind",
    ];
    PREFIXES.iter().any(|p| frame.starts_with(p))
}

fn frame_line(frame: &FrameInfo) -> String {
    // The innermost symbol of the frame: the function the code was inlined
    // into is the frame's own name.
    let symbol = frame.symbols().first();
    let name = symbol
        .and_then(|s| s.name())
        .or(frame.func_name())
        .map(|name| cut(&demangle(name)).into_owned())
        .unwrap_or_else(|| format!("<wasm function {}>", frame.func_index()));
    let location = symbol.and_then(|s| {
        let file = s.file()?;
        let mut at = cut(file).into_owned();
        if let Some(line) = s.line() {
            at.push_str(&format!(":{line}"));
            if let Some(column) = s.column() {
                at.push_str(&format!(":{column}"));
            }
        }
        Some(at)
    });
    match location {
        Some(at) => format!("{name} ({at})"),
        None => name,
    }
}

/// The name demangled (legacy `_ZN…E` or v0 `_R…`), without its hash; as
/// given when it is not mangled (the linker demangles the crate's own).
fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => name.to_string(),
    }
}

/// `text` cut at [`MAX_NAME`] bytes (on a character boundary), marked.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_NAME {
        return text.into();
    }
    let mut end = MAX_NAME;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangled_names_lose_their_hash() {
        assert_eq!(
            demangle("_ZN16misbehave_filter6nested5inner17h0123456789abcdefE"),
            "misbehave_filter::nested::inner"
        );
        assert_eq!(
            demangle("_RNvNtCs9pv848UzQwQ_4core9panicking9panic_fmt"),
            "core::panicking::panic_fmt"
        );
        assert_eq!(demangle("plain::name"), "plain::name");
    }

    #[test]
    fn the_panic_machinery_on_top_is_skipped_and_the_rest_bounded() {
        let mut frames: Vec<String> =
            ["abort", "std::process::abort", "core::panicking::panic_fmt"]
                .map(String::from)
                .to_vec();
        frames.extend((0..20).map(|i| format!("mine::f{i}")));
        let bt = Backtrace::from_frames(frames.into_iter()).unwrap();
        assert_eq!(bt.skipped, 3);
        assert_eq!(bt.frames.len(), MAX_FRAMES);
        assert_eq!(bt.frames[0], "mine::f0");
        assert_eq!(bt.omitted, 4);
        // Nothing but machinery: kept.
        let bt = Backtrace::from_frames(["abort".to_string()].into_iter()).unwrap();
        assert_eq!((bt.skipped, bt.frames.len()), (0, 1));
        assert!(Backtrace::from_frames(Vec::new().into_iter()).is_none());
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_NAME);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_NAME + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn display_is_one_line_and_counts_what_it_left_out() {
        let bt = Backtrace {
            frames: vec!["a::b (src/lib.rs:3:5)".into(), "<wasm function 7>".into()],
            skipped: 1,
            omitted: 2,
        };
        assert_eq!(
            bt.to_string(),
            "(1 panic frames skipped) #0 a::b (src/lib.rs:3:5); #1 <wasm function 7>; … 2 more"
        );
        assert!(bt.has_names());
    }
}
