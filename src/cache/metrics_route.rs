//! `/metrics`, only with `--metrics-route`: the registry in the Prometheus
//! text format (README "Operating it"). Never cached: each scrape must see
//! the counts of now.

use crate::metrics::{Metrics, CONTENT_TYPE};

use crate::server::app::{Body, Response};

use super::response::CACHE_NONE;

pub fn handle(metrics: &Metrics) -> Response {
    Response::new(
        200,
        CONTENT_TYPE,
        CACHE_NONE,
        Body::Bytes(metrics.render().into_bytes()),
    )
}
