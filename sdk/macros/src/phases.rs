//! Which phase each `Filter` method implements.

/// The `Filter` methods that implement a phase, with the name of the phase's
/// constant on `weft_sdk::Phases`.
pub const PHASE_METHODS: [(&str, &str); 5] = [
    ("on_request_headers", "REQUEST_HEADERS"),
    ("on_request_body", "REQUEST_BODY"),
    ("on_response_headers", "RESPONSE_HEADERS"),
    ("on_response_body", "RESPONSE_BODY"),
    ("on_done", "DONE"),
];

/// The `Phases` constant for `method`, if it is a phase method.
pub fn phase_of(method: &str) -> Option<&'static str> {
    PHASE_METHODS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, phase)| *phase)
}

/// The `Phases` constants for the phase methods among `methods`, in the
/// order of [`PHASE_METHODS`], without duplicates.
pub fn phases_of<'a>(methods: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    let found: Vec<&'static str> = methods.into_iter().filter_map(phase_of).collect();
    PHASE_METHODS
        .iter()
        .map(|(_, phase)| *phase)
        .filter(|phase| found.contains(phase))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_method_maps_to_its_flag() {
        assert_eq!(phase_of("on_request_headers"), Some("REQUEST_HEADERS"));
        assert_eq!(phase_of("on_request_body"), Some("REQUEST_BODY"));
        assert_eq!(phase_of("on_response_headers"), Some("RESPONSE_HEADERS"));
        assert_eq!(phase_of("on_response_body"), Some("RESPONSE_BODY"));
        assert_eq!(phase_of("on_done"), Some("DONE"));
    }

    #[test]
    fn other_methods_are_no_phase() {
        for name in ["new", "phases", "helper", "on_request", "on_done_"] {
            assert_eq!(phase_of(name), None, "{name}");
        }
    }

    #[test]
    fn phases_are_in_flag_order_and_deduplicated() {
        assert_eq!(
            phases_of(["on_done", "new", "on_request_headers", "on_done"]),
            ["REQUEST_HEADERS", "DONE"]
        );
        assert!(phases_of(["new"]).is_empty());
    }
}
