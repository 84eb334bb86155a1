//! Step 4's route action: the proxy's own answer for a redirect or direct
//! response, or — after the route's rewrites, with its mirror's copy
//! started — the request sent to the cluster picked for it.

use std::future::{Future, Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;

use http::request::Parts;
use http::{Response, StatusCode};

use super::forward::forward;
use super::mirror;
use crate::filter::RequestProps;
use crate::http::{ProxyBody, local};
use crate::listener::Peer;
use crate::route::Route;
use crate::telemetry::Registry;
use crate::upstream::Cluster;

/// Where one request's attempts go: the cluster picked for it once (a
/// split's pick holds for its retries), or `None` when the route answers.
pub struct Dispatch<'a> {
    /// The route.
    pub route: &'a Route,
    /// The cluster picked for this request.
    pub cluster: Option<&'a Arc<Cluster>>,
    /// The client.
    pub peer: &'a Peer,
    /// Where mirrors are counted.
    pub metrics: &'a Arc<Registry>,
}

impl<'a> Dispatch<'a> {
    /// Picks the cluster of a request on `route` (a weighted pick for a
    /// split) and names it in `props`.
    pub fn new(
        route: &'a Route,
        peer: &'a Peer,
        metrics: &'a Arc<Registry>,
        props: &mut RequestProps,
    ) -> Self {
        let cluster = route.action.pick();
        if let Some(cluster) = cluster {
            props.cluster = cluster.name.clone();
        }
        Self {
            route,
            cluster,
            peer,
            metrics,
        }
    }

    /// Whether attempts go upstream (and so may be retried).
    pub fn upstream(&self) -> bool {
        self.cluster.is_some()
    }

    /// Makes attempt `props.attempt` of the request: the route's own
    /// answer, or the rewritten request sent upstream (mirrored on the
    /// first attempt).
    ///
    /// Not an `async fn`: its future would hold the head and body beside
    /// the upstream send's future holding them again, and be moved whole
    /// into every request's future. The work before sending is done here;
    /// the future is the send itself, or the answer.
    pub fn send<'s>(
        &'s self,
        mut head: Parts,
        body: ProxyBody,
        timeout: Duration,
        props: &'s mut RequestProps,
    ) -> Either<Ready<Response<ProxyBody>>, impl Future<Output = Response<ProxyBody>> + 's> {
        let route = self.route;
        let Some(cluster) = self.cluster else {
            return Either::Left(ready(
                route
                    .action
                    .local_response(&head, self.peer.tls.is_some())
                    .expect("a route without a cluster answers itself"),
            ));
        };
        if let Some(rewrite) = &route.rewrite
            && let Err(e) = rewrite.apply(&mut head)
        {
            tracing::warn!(route = &*route.name, request_id = props.request_id, "{e}");
            return Either::Left(ready(local::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rewrite_failed",
                &e.to_string(),
                &props.request_id,
            )));
        }
        if props.attempt <= 1
            && let Some(m) = &route.mirror
            && m.sampled()
        {
            mirror::spawn(
                m,
                route,
                &head,
                &body,
                self.peer,
                route.timeout,
                self.metrics,
            );
        }
        Either::Right(forward(
            route, cluster, head, body, self.peer, timeout, props,
        ))
    }
}
