//! The store lines: reachable, migrations current, writable (a write rolled back).

use crate::store::Store;

use super::{Area, Check};

const AREA: Area = Area::Store;

/// The store lines, and the store when it opened (the 3CX client shares its token through it).
pub(super) async fn check(url: &str, given: Option<Store>) -> (Vec<Check>, Option<Store>) {
    const TITLE: &str = "Store reachable";
    let store = match given {
        Some(s) => Ok(s),
        None => Store::connect(url).await,
    };
    let opened = match store {
        Ok(s) => s.ping().await.map(|()| s),
        Err(e) => Err(e),
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            let why = "the store cannot be reached";
            return (
                vec![
                    Check::fail(AREA, "store.reachable", TITLE, e.to_string()).fix(
                        "check [store] url, that the database runs, and pbxgate's access to it",
                    ),
                    Check::skip(AREA, "store.migrations", "Store schema current", why),
                    Check::skip(AREA, "store.writable", "Store writable", why),
                ],
                None,
            );
        }
    };
    let backend = format!("{:?}", store.backend()).to_lowercase();
    let mut checks = vec![Check::pass(
        AREA,
        "store.reachable",
        TITLE,
        format!("{backend} answers"),
    )];
    let current = migrations(&store, &mut checks).await;
    checks.push(if current {
        writable(&store).await
    } else {
        Check::skip(
            AREA,
            "store.writable",
            "Store writable",
            "needs the current schema",
        )
    });
    (checks, Some(store))
}

/// `store.migrations`; true when the schema is current.
async fn migrations(store: &Store, checks: &mut Vec<Check>) -> bool {
    const TITLE: &str = "Store schema current";
    let (line, current) = match store.migrations().await {
        Ok(m) if m.pending.is_empty() && m.unknown.is_empty() => (
            Check::pass(
                AREA,
                "store.migrations",
                TITLE,
                "every migration is applied",
            ),
            true,
        ),
        Ok(m) if m.pending.is_empty() => (
            Check::warn(
                AREA,
                "store.migrations",
                TITLE,
                format!(
                    "the store has migrations {:?} this pbxgate does not know",
                    m.unknown
                ),
            )
            .fix("a newer pbxgate used this store: run that version"),
            true,
        ),
        Ok(m) => (
            Check::fail(
                AREA,
                "store.migrations",
                TITLE,
                format!("migrations {:?} are not applied", m.pending),
            )
            .fix("start `pbxgate serve` once: it migrates the store"),
            false,
        ),
        Err(e) => (
            Check::fail(AREA, "store.migrations", TITLE, e.to_string()),
            false,
        ),
    };
    checks.push(line);
    current
}

/// `store.writable`: a row written and rolled back.
async fn writable(store: &Store) -> Check {
    const TITLE: &str = "Store writable";
    match store.probe_write().await {
        Ok(()) => Check::pass(AREA, "store.writable", TITLE, "a test write succeeded (rolled back)"),
        Err(e) => Check::fail(AREA, "store.writable", TITLE, e.to_string())
            .fix("check the store's permissions, free disk space, or that PostgreSQL is not a read-only replica"),
    }
}
