//! `pbxgate doctor`: a live check of every credential and permission the enabled features
//! need, against the real Entra ID, Graph, 3CX and store. The gateway keeps the last report
//! (refreshed in the background) for `/readyz` and the admin console.

mod report;

use std::sync::{Arc, RwLock};

pub use report::{Area, Check, Report, Status};

/// The last report and how to make a new one.
#[derive(Default)]
pub struct Doctor {
    latest: RwLock<Option<Arc<Report>>>,
}

impl Doctor {
    /// The last report, if a check has run.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// Runs every check now and keeps the result.
    pub async fn refresh(&self) -> Arc<Report> {
        // Skeleton: the checks land with issue 18's doctor.
        let report = Arc::new(Report {
            checked_at: 0,
            checks: Vec::new(),
        });
        if let Ok(mut l) = self.latest.write() {
            *l = Some(report.clone());
        }
        report
    }
}
