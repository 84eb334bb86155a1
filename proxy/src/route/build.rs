//! Building a route's action, rewrites and mirror from its config, with an
//! error naming the config path of each problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, StatusCode};

use super::action::{
    DirectResponse, Mirror, Redirect, RedirectPath, RouteAction, WeightedClusters,
};
use super::rewrite::{PathRewrite, Rewrite};
use crate::config::{
    ClusterConfig, ConfigError, DirectResponseConfig, MAX_CLUSTER_WEIGHT, MAX_DIRECT_BODY_BYTES,
    MatchConfig, MirrorConfig, RedirectConfig, RewriteConfig, RouteConfig,
};
use crate::upstream::Cluster;

/// A route's action and what goes with it.
pub struct RouteParts {
    /// Where its requests go.
    pub action: RouteAction,
    /// Its rewrites.
    pub rewrite: Option<Rewrite>,
    /// Its mirror.
    pub mirror: Option<Mirror>,
}

/// The clusters a route may name: those built, and those defined (a defined
/// cluster that failed to build was reported already).
pub struct ClusterNames<'a> {
    /// Clusters built.
    pub built: &'a HashMap<String, Arc<Cluster>>,
    /// Clusters defined in the config.
    pub defined: &'a BTreeMap<String, ClusterConfig>,
}

impl ClusterNames<'_> {
    fn get(&self, name: &str, at: String, errors: &mut Vec<ConfigError>) -> Option<Arc<Cluster>> {
        if let Some(c) = self.built.get(name) {
            return Some(c.clone());
        }
        if !self.defined.contains_key(name) {
            let names: Vec<&str> = self.defined.keys().map(String::as_str).collect();
            let known = if names.is_empty() {
                " (none are defined)".to_string()
            } else {
                format!(" (known: {})", names.join(", "))
            };
            errors.push(ConfigError::new(
                at,
                format!("unknown cluster {name:?}{known}"),
            ));
        }
        None
    }
}

/// Builds route `r`'s parts (at config path `at`); `None` when an error was
/// pushed.
pub fn route_parts(
    r: &RouteConfig,
    at: &str,
    clusters: &ClusterNames<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<RouteParts> {
    let before = errors.len();
    let given: Vec<&str> = [
        ("cluster", r.cluster.is_some()),
        ("clusters", r.clusters.is_some()),
        ("redirect", r.redirect.is_some()),
        ("direct_response", r.direct_response.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    if given.len() != 1 {
        let found = if given.is_empty() {
            "none".to_string()
        } else {
            given.join(" and ")
        };
        errors.push(ConfigError::new(
            at,
            format!(
                "give exactly one of `cluster`, `clusters`, `redirect`, `direct_response` (found {found})"
            ),
        ));
        return None;
    }
    let matched = r.matcher.path_prefix.as_ref().or(r.matcher.path.as_ref());
    let action = if let Some(name) = &r.cluster {
        clusters
            .get(name, format!("{at}.cluster"), errors)
            .map(RouteAction::Cluster)
    } else if let Some(split) = &r.clusters {
        split_action(split, &format!("{at}.clusters"), clusters, errors)
    } else if let Some(redirect) = &r.redirect {
        redirect_action(redirect, &r.matcher, &format!("{at}.redirect"), errors)
    } else {
        let direct = r.direct_response.as_ref().expect("one action is given");
        direct_action(direct, &format!("{at}.direct_response"), errors)
    };
    let local = r.redirect.is_some() || r.direct_response.is_some();
    for (key, set) in [
        ("rewrite", r.rewrite.is_some()),
        ("mirror", r.mirror.is_some()),
    ] {
        if local && set {
            errors.push(ConfigError::new(
                format!("{at}.{key}"),
                format!(
                    "a route with `{}` sends nothing upstream: `{key}` does not apply",
                    given[0]
                ),
            ));
        }
    }
    let rewrite = r
        .rewrite
        .as_ref()
        .and_then(|rw| rewrite(rw, matched, &format!("{at}.rewrite"), errors));
    let mirror = r
        .mirror
        .as_ref()
        .and_then(|m| mirror(m, &format!("{at}.mirror"), clusters, errors));
    if errors.len() > before {
        return None;
    }
    Some(RouteParts {
        action: action?,
        rewrite,
        mirror,
    })
}

fn split_action(
    split: &[crate::config::WeightedClusterConfig],
    at: &str,
    clusters: &ClusterNames<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<RouteAction> {
    if split.is_empty() {
        errors.push(ConfigError::new(at, "at least one cluster is required"));
        return None;
    }
    let mut seen = HashSet::new();
    let mut weighted = Vec::new();
    for (k, w) in split.iter().enumerate() {
        if !seen.insert(w.name.as_str()) {
            errors.push(ConfigError::new(
                format!("{at}[{k}].name"),
                format!("cluster {:?} is in the split twice", w.name),
            ));
        }
        if w.weight > MAX_CLUSTER_WEIGHT {
            errors.push(ConfigError::new(
                format!("{at}[{k}].weight"),
                format!("{} is out of range 0..={MAX_CLUSTER_WEIGHT}", w.weight),
            ));
        }
        if let Some(c) = clusters.get(&w.name, format!("{at}[{k}].name"), errors) {
            weighted.push((w.weight, c));
        }
    }
    if split.iter().all(|w| w.weight == 0) {
        errors.push(ConfigError::new(
            at,
            "the weights add up to 0: at least one must be greater than 0",
        ));
        return None;
    }
    WeightedClusters::new(weighted).map(RouteAction::Split)
}

/// Checks a path given in the config: starts with `/`, valid in a target.
fn check_path(p: &str, at: String, errors: &mut Vec<ConfigError>) -> bool {
    let ok = p.starts_with('/')
        && !p.contains(['?', '#'])
        && PathAndQuery::try_from(p).is_ok_and(|pq| pq.as_str() == p);
    if !ok {
        errors.push(ConfigError::new(
            at,
            format!(
                "{p:?} is not a valid path: it must start with '/' and hold no query, fragment, space or control character"
            ),
        ));
    }
    ok
}

fn redirect_action(
    r: &RedirectConfig,
    matcher: &MatchConfig,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<RouteAction> {
    let before = errors.len();
    let status = match r.status {
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(r.status).ok(),
        s => {
            errors.push(ConfigError::new(
                format!("{at}.status"),
                format!("{s} is not a redirect status: give 301, 302, 303, 307 or 308"),
            ));
            None
        }
    };
    if let Some(scheme) = &r.scheme
        && scheme != "http"
        && scheme != "https"
    {
        errors.push(ConfigError::new(
            format!("{at}.scheme"),
            format!("{scheme:?}: give `http` or `https`"),
        ));
    }
    if let Some(host) = &r.host {
        let ok = host
            .parse::<Authority>()
            .is_ok_and(|a| a.port().is_none() && a.as_str() == host && !host.contains('@'));
        if !ok {
            errors.push(ConfigError::new(
                format!("{at}.host"),
                format!("{host:?} is not a host name (a port goes in `port`)"),
            ));
        }
    }
    if r.port == Some(0) {
        errors.push(ConfigError::new(
            format!("{at}.port"),
            "must be greater than 0",
        ));
    }
    let path = match (&r.path, &r.prefix_rewrite) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                at,
                "give at most one of `path` and `prefix_rewrite`",
            ));
            RedirectPath::Keep
        }
        (Some(p), None) => {
            check_path(p, format!("{at}.path"), errors);
            RedirectPath::Replace(p.clone())
        }
        (None, Some(p)) => {
            check_path(p, format!("{at}.prefix_rewrite"), errors);
            match matcher.path_prefix.as_ref().or(matcher.path.as_ref()) {
                Some(matched) => RedirectPath::Prefix {
                    matched: matched.clone(),
                    replacement: p.clone(),
                },
                None => {
                    errors.push(ConfigError::new(
                        format!("{at}.prefix_rewrite"),
                        "replaces the matched prefix: the route must match by `match.path_prefix` or `match.path`",
                    ));
                    RedirectPath::Keep
                }
            }
        }
        (None, None) => RedirectPath::Keep,
    };
    if errors.len() > before {
        return None;
    }
    Some(RouteAction::Redirect(Redirect {
        status: status?,
        scheme: r.scheme.clone(),
        host: r.host.clone(),
        port: r.port,
        path,
        strip_query: r.strip_query,
    }))
}

fn direct_action(
    d: &DirectResponseConfig,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<RouteAction> {
    let before = errors.len();
    let status = match StatusCode::from_u16(d.status) {
        Ok(s) if (200..=599).contains(&d.status) => Some(s),
        _ => {
            errors.push(ConfigError::new(
                format!("{at}.status"),
                format!("{} is out of range 200..=599", d.status),
            ));
            None
        }
    };
    let body = d.body.clone().unwrap_or_default();
    if body.len() > MAX_DIRECT_BODY_BYTES {
        errors.push(ConfigError::new(
            format!("{at}.body"),
            format!(
                "{} bytes: at most {MAX_DIRECT_BODY_BYTES} are allowed",
                body.len()
            ),
        ));
    }
    if !body.is_empty() && matches!(d.status, 204 | 304) {
        errors.push(ConfigError::new(
            format!("{at}.body"),
            format!("a {} response has no body", d.status),
        ));
    }
    let content_type = HeaderValue::from_str(&d.content_type);
    if content_type.is_err() || d.content_type.is_empty() {
        errors.push(ConfigError::new(
            format!("{at}.content_type"),
            format!("{:?} is not a valid header value", d.content_type),
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(RouteAction::Direct(DirectResponse {
        status: status?,
        body: Bytes::from(body),
        content_type: content_type.ok()?,
    }))
}

fn rewrite(
    rw: &RewriteConfig,
    matched: Option<&String>,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Rewrite> {
    let before = errors.len();
    if rw.path_prefix.is_none() && rw.path_regex.is_none() && rw.host.is_none() {
        errors.push(ConfigError::new(
            at,
            "give at least one of `path_prefix`, `path_regex`, `host`",
        ));
    }
    let path = match (&rw.path_prefix, &rw.path_regex) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                at,
                "give at most one of `path_prefix` and `path_regex`",
            ));
            None
        }
        (Some(p), None) => {
            check_path(p, format!("{at}.path_prefix"), errors);
            match matched {
                Some(matched) => Some(PathRewrite::Prefix {
                    matched: matched.clone(),
                    replacement: p.clone(),
                }),
                None => {
                    errors.push(ConfigError::new(
                        format!("{at}.path_prefix"),
                        "replaces the matched prefix: the route must match by `match.path_prefix` or `match.path`",
                    ));
                    None
                }
            }
        }
        (None, Some(re)) => match regex::RegexBuilder::new(&re.pattern)
            .size_limit(1 << 20)
            .build()
        {
            Ok(regex) => Some(PathRewrite::Regex {
                regex,
                substitution: re.substitution.clone(),
            }),
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{at}.path_regex.pattern"),
                    format!("invalid regular expression: {e}"),
                ));
                None
            }
        },
        (None, None) => None,
    };
    let host =
        rw.host.as_ref().and_then(
            |h| match (h.parse::<Authority>(), HeaderValue::from_str(h)) {
                (Ok(a), Ok(v)) if a.as_str() == h && !h.contains('@') => Some((a, v)),
                _ => {
                    errors.push(ConfigError::new(
                        format!("{at}.host"),
                        format!("{h:?} is not a valid host[:port]"),
                    ));
                    None
                }
            },
        );
    (errors.len() == before).then_some(Rewrite { path, host })
}

fn mirror(
    m: &MirrorConfig,
    at: &str,
    clusters: &ClusterNames<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Mirror> {
    if !(0.0..=100.0).contains(&m.percent) {
        errors.push(ConfigError::new(
            format!("{at}.percent"),
            format!("{} is out of range 0..=100", m.percent),
        ));
        return None;
    }
    let cluster = clusters.get(&m.cluster, format!("{at}.cluster"), errors)?;
    Some(Mirror {
        cluster,
        percent: m.percent,
    })
}
