//! HELP texts of the proxy's families updated by name.

/// The HELP text of the proxy's family `name`; a family not listed here
/// gets its name.
pub fn of(name: &str) -> String {
    let known = match name {
        "weft_config_reloads_total" => {
            "Snapshot builds and swaps (file, SIGHUP, admin API, control plane), by result (ok, rejected)."
        }
        "weft_connections_capped_total" => {
            "Times an accept loop waited because its worker's connection cap was reached, by kind."
        }
        "weft_filter_failures_total" => {
            "Filter calls that failed, by filter and kind (trap, deadline, memory, instantiate)."
        }
        "weft_filter_overloaded_total" => {
            "Requests answered 503 because every instance of a filter was in use, by filter."
        }
        "weft_filter_instances_created_total" => "Filter instances created, by filter.",
        "weft_filter_modules_compiled_total" => "Filter modules compiled.",
        "weft_filter_module_cache_hits_total" => {
            "Filter modules loaded from the compiled-module cache."
        }
        "weft_filter_metric_updates_dropped_total" => {
            "Filter metric updates dropped by the series, family or label-value limits, by filter."
        }
        _ => return name.to_string(),
    };
    known.to_string()
}
