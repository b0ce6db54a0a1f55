//! The checklist as `pbxgate doctor` prints it: one line per check with ✔ / ! / ✘ / –,
//! what was found, and what to do.

use std::fmt::Write;

use super::{Area, Report, Status};

fn heading(area: Area) -> &'static str {
    match area {
        Area::Entra => "Microsoft Entra ID",
        Area::Graph => "Microsoft Graph",
        Area::Pbx => "3CX",
        Area::Store => "Store",
    }
}

pub fn mark(status: Status) -> &'static str {
    match status {
        Status::Pass => "✔",
        Status::Warn => "!",
        Status::Fail => "✘",
        Status::Skip => "–",
    }
}

impl Report {
    /// The checklist, grouped by area, with a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut area = None;
        for c in &self.checks {
            if area != Some(c.area) {
                area = Some(c.area);
                let _ = writeln!(out, "\n{}", heading(c.area));
            }
            let _ = writeln!(
                out,
                "  {} {} [{}]: {}",
                mark(c.status),
                c.title,
                c.id,
                c.detail
            );
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "      → {fix}");
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (fails, warns) = (count(Status::Fail), count(Status::Warn));
        let _ = writeln!(
            out,
            "\n{}",
            if fails == 0 {
                format!("Every enabled feature can work ({warns} warning(s)).")
            } else {
                format!("{fails} problem(s) stop an enabled feature, {warns} warning(s).")
            }
        );
        out
    }
}
