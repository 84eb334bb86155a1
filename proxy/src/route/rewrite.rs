//! A route's rewrites of the request as it goes upstream: the path (the
//! matched prefix replaced, or a regular expression's matches substituted;
//! the query kept) and the host.

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Uri, header};
use regex::Regex;

/// How the path is rewritten.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// The matched prefix is replaced.
    Prefix {
        /// The route's `match.path_prefix` (or `match.path`).
        matched: String,
        /// What replaces it.
        replacement: String,
    },
    /// Every match of `regex` is replaced by `substitution`.
    Regex {
        /// The expression, compiled when the snapshot was built.
        regex: Regex,
        /// The replacement (`$1`, `${name}` insert groups).
        substitution: String,
    },
}

/// A route's rewrites.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// The path's, if any.
    pub path: Option<PathRewrite>,
    /// The new authority, and as a header value.
    pub host: Option<(Authority, HeaderValue)>,
}

/// Why a rewrite could not be applied (the proxy answers 500).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    /// The rewritten path is not an origin-form path.
    #[error("the rewritten path {0:?} is not a valid origin-form path")]
    InvalidPath(String),
}

impl Rewrite {
    /// Rewrites `head`'s path (keeping its query) and host. A prefix
    /// rewrite leaves a path that no longer starts with the prefix (a
    /// filter changed it) as it is.
    pub fn apply(&self, head: &mut Parts) -> Result<(), RewriteError> {
        if let Some(path) = &self.path {
            let old = head.uri.path();
            let new = match path {
                PathRewrite::Prefix {
                    matched,
                    replacement,
                } => old
                    .strip_prefix(matched.as_str())
                    .map(|rest| format!("{replacement}{rest}")),
                PathRewrite::Regex {
                    regex,
                    substitution,
                } => match regex.replace_all(old, substitution.as_str()) {
                    std::borrow::Cow::Borrowed(_) => None,
                    std::borrow::Cow::Owned(new) => Some(new),
                },
            };
            if let Some(mut new) = new {
                if !new.starts_with('/') {
                    return Err(RewriteError::InvalidPath(new));
                }
                if let Some(query) = head.uri.query() {
                    new.push('?');
                    new.push_str(query);
                }
                let path_and_query = PathAndQuery::try_from(new.as_str())
                    .map_err(|_| RewriteError::InvalidPath(new.clone()))?;
                let mut parts = std::mem::take(&mut head.uri).into_parts();
                parts.path_and_query = Some(path_and_query);
                head.uri = Uri::from_parts(parts).map_err(|_| RewriteError::InvalidPath(new))?;
            }
        }
        if let Some((authority, value)) = &self.host {
            head.headers.insert(header::HOST, value.clone());
            if head.uri.authority().is_some() {
                let mut parts = std::mem::take(&mut head.uri).into_parts();
                parts.authority = Some(authority.clone());
                head.uri = Uri::from_parts(parts).expect("only the authority changed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str) -> Parts {
        http::Request::get(uri)
            .header("host", "old.example")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn a_prefix_rewrite_keeps_the_rest_and_the_query() {
        let rw = Rewrite {
            path: Some(PathRewrite::Prefix {
                matched: "/api/".into(),
                replacement: "/v2/".into(),
            }),
            ..Default::default()
        };
        let mut h = head("/api/users/1?x=1&y");
        rw.apply(&mut h).unwrap();
        assert_eq!(
            h.uri.path_and_query().unwrap().as_str(),
            "/v2/users/1?x=1&y"
        );
        // A path a filter moved elsewhere is left alone.
        let mut h = head("/other?x");
        rw.apply(&mut h).unwrap();
        assert_eq!(h.uri.path_and_query().unwrap().as_str(), "/other?x");
    }

    #[test]
    fn a_regex_rewrite_substitutes_groups_and_refuses_a_relative_result() {
        let rw = Rewrite {
            path: Some(PathRewrite::Regex {
                regex: Regex::new("^/users/([0-9]+)/profile$").unwrap(),
                substitution: "/profiles/$1".into(),
            }),
            ..Default::default()
        };
        let mut h = head("/users/42/profile?full=1");
        rw.apply(&mut h).unwrap();
        assert_eq!(
            h.uri.path_and_query().unwrap().as_str(),
            "/profiles/42?full=1"
        );
        let bad = Rewrite {
            path: Some(PathRewrite::Regex {
                regex: Regex::new("^/").unwrap(),
                substitution: "x".into(),
            }),
            ..Default::default()
        };
        let mut h = head("/a");
        assert_eq!(
            bad.apply(&mut h),
            Err(RewriteError::InvalidPath("xa".into()))
        );
    }

    #[test]
    fn a_host_rewrite_sets_host_and_an_absolute_targets_authority() {
        let authority: Authority = "new.example:8443".parse().unwrap();
        let value = HeaderValue::from_str(authority.as_str()).unwrap();
        let rw = Rewrite {
            host: Some((authority, value)),
            ..Default::default()
        };
        let mut h = head("http://old.example/a?b");
        rw.apply(&mut h).unwrap();
        assert_eq!(h.headers["host"], "new.example:8443");
        assert_eq!(h.uri.to_string(), "http://new.example:8443/a?b");
    }
}
