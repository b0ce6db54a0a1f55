//! pbxgate's own routes, mounted in one router. Which paths are pbxgate's own is derived
//! from the routes mounted here ([`OwnPaths`]); every other path belongs to 3CX and goes
//! straight to the gate, without the router.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;

use super::ops;
use crate::app::App;
use crate::auth;
use crate::metrics::RouteClass;
use crate::web;

/// The paths of pbxgate's own routes: exact paths, and the subtrees of `/{*rest}` routes.
#[derive(Debug, Clone, Default)]
pub struct OwnPaths {
    exact: Vec<&'static str>,
    /// With their trailing slash, e.g. `/auth/`.
    prefixes: Vec<&'static str>,
}

impl OwnPaths {
    fn add(&mut self, route: &'static str) {
        match route.find("{*") {
            Some(i) => self.prefixes.push(&route[..i]),
            None => self.exact.push(route),
        }
    }

    /// Whether `path` goes to the router (checked on every request: a few comparisons).
    pub fn contains(&self, path: &str) -> bool {
        self.exact.contains(&path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// The router of pbxgate's own routes and the list of their paths.
pub fn own(app: &Arc<App>) -> (Router, OwnPaths) {
    let mut paths = OwnPaths::default();
    let mut router = Router::new();
    for (path, route) in ops::routes() {
        paths.add(path);
        router = router.route(path, route.with_state(app.clone()));
    }
    for (path, route) in auth::routes() {
        paths.add(path);
        router = router.route(path, route.with_state(app.sign_in.clone()));
    }
    for (path, route) in crate::admin::routes(app) {
        paths.add(path);
        router = router.route(path, route);
    }
    (router.fallback(not_found), paths)
}

/// A path under an own prefix that no route matched (e.g. `/auth/`): pbxgate's, so 404.
async fn not_found(req: Request) -> Response {
    let (req, _) = req.into_parts();
    web::page(
        web::correlation(&req).as_deref(),
        RouteClass::Ops,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_own_route_is_dispatched_to_the_router_and_3cx_paths_are_not() {
        let mut own = OwnPaths::default();
        ops::routes().iter().for_each(|(p, _)| own.add(p));
        auth::routes().iter().for_each(|(p, _)| own.add(p));
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/auth/login",
            "/auth/callback",
            "/auth/logout",
            "/auth/signed-out",
            "/auth/frontchannel-logout",
            "/auth",
            "/auth/anything",
        ] {
            assert!(own.contains(path), "{path}");
        }
        for theirs in [
            "/",
            "/webclient",
            "/connect/token",
            "/authx",
            "/xapi/v1/Users",
            "/ws/webclient",
        ] {
            assert!(!own.contains(theirs), "{theirs}");
        }
    }
}
