//! The glue between the generated `Guest` trait and [`Filter`]: what
//! [`__export_filter!`](crate::__export_filter) expands to calls. Not part of
//! the API.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::{Filter, Phases, Request, Response, config, panic_hook};

pub use crate::bindings::exports::weft::filter::filter::Guest;
pub use crate::bindings::weft::filter::types::Action as WitAction;

/// Where the exported filter's instance lives, once `init` succeeded.
pub type Slot<F> = LocalKey<RefCell<Option<F>>>;

/// `init`: parses the config, builds the filter and keeps it. On error the
/// previous instance, if any, stays.
pub fn init<F: Filter>(slot: &'static Slot<F>, config: String) -> Result<(), String> {
    panic_hook::install();
    let config = config::parse::<F::Config>(&config)?;
    let filter = F::new(config)?;
    slot.with(|slot| *slot.borrow_mut() = Some(filter));
    Ok(())
}

/// `phases`.
pub fn phases<F: Filter>(slot: &'static Slot<F>) -> Phases {
    with_filter(slot, |filter| filter.phases())
}

/// `on-request-headers`.
pub fn on_request_headers<F: Filter>(slot: &'static Slot<F>) -> WitAction {
    let req = Request::current();
    with_filter(slot, |filter| filter.on_request_headers(&req)).into_wit()
}

/// `on-request-body`.
pub fn on_request_body<F: Filter>(slot: &'static Slot<F>) -> WitAction {
    let req = Request::current();
    with_filter(slot, |filter| filter.on_request_body(&req)).into_wit()
}

/// `on-response-headers`.
pub fn on_response_headers<F: Filter>(slot: &'static Slot<F>) -> WitAction {
    let (req, resp) = (Request::current(), Response::current());
    with_filter(slot, |filter| filter.on_response_headers(&req, &resp)).into_wit()
}

/// `on-response-body`.
pub fn on_response_body<F: Filter>(slot: &'static Slot<F>) -> WitAction {
    let (req, resp) = (Request::current(), Response::current());
    with_filter(slot, |filter| filter.on_response_body(&req, &resp)).into_wit()
}

/// `on-done`.
pub fn on_done<F: Filter>(slot: &'static Slot<F>) {
    let (req, resp) = (Request::current(), Response::current());
    with_filter(slot, |filter| filter.on_done(&req, &resp))
}

fn with_filter<F: Filter, R>(slot: &'static Slot<F>, call: impl FnOnce(&mut F) -> R) -> R {
    slot.with(|slot| match slot.borrow_mut().as_mut() {
        Some(filter) => call(filter),
        None => not_initialised(),
    })
}

#[cold]
fn not_initialised() -> ! {
    panic_hook::install();
    panic!("filter not initialised: the proxy called a phase before a successful `init`")
}

/// What `init` does with the config: parses it into `F::Config` and builds
/// the filter. [`testing`](crate::testing) builds filters with it.
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub(crate) fn build<F: Filter>(config: &str) -> Result<F, String> {
    let config = config::parse::<F::Config>(config)?;
    F::new(config)
}

/// Exports `$filter` (a type implementing [`Filter`](crate::Filter)) as the
/// component's filter. `#[weft_sdk::filter]` invokes it.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_filter {
    ($filter:ty) => {
        const _: () = {
            ::std::thread_local! {
                static WEFT_FILTER: ::core::cell::RefCell<::core::option::Option<$filter>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct WeftExport;

            impl $crate::__private::Guest for WeftExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init(&WEFT_FILTER, config)
                }

                fn phases() -> $crate::Phases {
                    $crate::__private::phases(&WEFT_FILTER)
                }

                fn on_request_headers() -> $crate::__private::WitAction {
                    $crate::__private::on_request_headers(&WEFT_FILTER)
                }

                fn on_request_body() -> $crate::__private::WitAction {
                    $crate::__private::on_request_body(&WEFT_FILTER)
                }

                fn on_response_headers() -> $crate::__private::WitAction {
                    $crate::__private::on_response_headers(&WEFT_FILTER)
                }

                fn on_response_body() -> $crate::__private::WitAction {
                    $crate::__private::on_response_body(&WEFT_FILTER)
                }

                fn on_done() {
                    $crate::__private::on_done(&WEFT_FILTER)
                }
            }

    $crate::bindings::__export_http_filter!(WeftExport with_types_in $crate::bindings);
        };
    };
}
