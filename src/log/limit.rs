//! Rate limits for lines a peer can make us write at will.
//!
//! A client can send malformed heads, stall its head or its reads, or go away
//! mid-reply as fast as it can open connections; each such event is worth a
//! line, but not thousands a second (two minutes of fuzzing once wrote
//! 690,000 lines, 48 MB). Each [`Kind`] gets a budget of lines per second;
//! what exceeds it is counted, and one line per [`REPORT_EVERY`] says how
//! many were left out. Pure: the time is passed in, so the tests can step it.

use std::time::{Duration, Instant};

use super::text::lines;
use super::Level;

/// What a rate-limited line is about. Each kind has its own budget, so a
/// flood of one does not hide the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request head we could not accept (`bad request from …`).
    BadRequest,
    /// A request head not complete within `--read-timeout`.
    HeadTimeout,
    /// A client that closed or reset its connection mid-reply.
    ClientGone,
    /// A client reading its reply below the minimum rate.
    SlowReader,
    /// A store failure (our own state, not the client's doing): each says
    /// which request and why, so the budget is ten times the others'. A
    /// store that is down would otherwise add a line for every request that
    /// clients send, as fast as they send them.
    Store,
    /// Another failure of our own making a reply (a compressor that could
    /// not start, a build log that could not be read): the same budget.
    Reply,
}

const KINDS: usize = 6;

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::BadRequest => 0,
            Kind::HeadTimeout => 1,
            Kind::ClientGone => 2,
            Kind::SlowReader => 3,
            Kind::Store => 4,
            Kind::Reply => 5,
        }
    }

    fn of_index(i: usize) -> Kind {
        [
            Kind::BadRequest,
            Kind::HeadTimeout,
            Kind::ClientGone,
            Kind::SlowReader,
            Kind::Store,
            Kind::Reply,
        ][i]
    }

    /// Lines of this kind written in any one second, at most. Ten a second
    /// shows an operator what is going on (which peers, which errors); a
    /// flood past that adds nothing but its size, which the report gives.
    pub fn per_second(self) -> u32 {
        match self {
            Kind::Store | Kind::Reply => 100,
            _ => 10,
        }
    }

    /// What the report line calls the lines it counts.
    fn what(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad requests",
            Kind::HeadTimeout => "request heads timed out",
            Kind::ClientGone => "clients gone mid-response",
            Kind::SlowReader => "clients reading too slowly",
            Kind::Store => "store errors",
            Kind::Reply => "replies that failed",
        }
    }
}

/// How long suppressed lines are counted before one line reports them.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Default)]
struct Budget {
    /// When the current one-second window began.
    window: Option<Instant>,
    passed: u32,
    suppressed: u64,
    /// The first line suppressed since the last report.
    since: Option<Instant>,
    /// The level of the lines suppressed, for the report.
    level: Option<Level>,
}

/// The budgets of every [`Kind`].
#[derive(Default)]
pub(super) struct Limiter {
    kinds: [Budget; KINDS],
}

/// One line's worth of suppressed lines.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Report {
    pub kind: Kind,
    pub level: Level,
    pub suppressed: u64,
    /// From the first line suppressed to the report.
    pub over: Duration,
}

impl Report {
    pub fn line(&self) -> String {
        // Whole seconds, the nearest (a report due after 10 s is written a
        // moment later), but never "in the last 0 s".
        let secs = ((self.over.as_millis() + 500) / 1000).max(1);
        format!(
            "{}: {} suppressed in the last {secs} s (at most {} a second are logged)",
            self.kind.what(),
            lines(self.suppressed, "similar"),
            self.kind.per_second()
        )
    }
}

impl Limiter {
    /// Whether a line of `kind` may be written at `now`; if not, it is
    /// counted for the next report.
    pub fn admit(&mut self, kind: Kind, level: Level, now: Instant) -> bool {
        let b = &mut self.kinds[kind.index()];
        match b.window {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                b.window = Some(now);
                b.passed = 0;
            }
        }
        if b.passed < kind.per_second() {
            b.passed += 1;
            return true;
        }
        b.suppressed += 1;
        b.since.get_or_insert(now);
        b.level = Some(level);
        false
    }

    /// When the next report is due, if any line is waiting to be reported.
    pub fn next_due(&self) -> Option<Instant> {
        self.kinds
            .iter()
            .filter_map(|b| b.since.map(|s| s + REPORT_EVERY))
            .min()
    }

    /// The reports due at `now` (all of them when `all`: before exit),
    /// each kind's count starting again from zero.
    pub fn reports(&mut self, now: Instant, all: bool) -> Vec<Report> {
        let mut out = Vec::new();
        for (i, b) in self.kinds.iter_mut().enumerate() {
            let Some(since) = b.since else {
                continue;
            };
            if all || now >= since + REPORT_EVERY {
                out.push(Report {
                    kind: Kind::of_index(i),
                    level: b.level.unwrap_or(Level::Info),
                    suppressed: b.suppressed,
                    over: now.saturating_duration_since(since),
                });
                b.suppressed = 0;
                b.since = None;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn each_kind_passes_its_budget_per_second_then_counts() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let passed = (0..1000)
            .filter(|_| l.admit(Kind::BadRequest, Level::Info, t0))
            .count();
        assert_eq!(passed, 10);
        // Another kind has a budget of its own.
        assert!(l.admit(Kind::HeadTimeout, Level::Info, t0));
        // A second later, ten more.
        let t1 = t0 + WINDOW;
        let passed = (0..1000)
            .filter(|_| l.admit(Kind::BadRequest, Level::Info, t1))
            .count();
        assert_eq!(passed, 10);
        assert!(!l.admit(Kind::BadRequest, Level::Info, t1 + 999 * MS));
        // Store errors: a budget ten times as large.
        let passed = (0..1000)
            .filter(|_| l.admit(Kind::Store, Level::Error, t0))
            .count();
        assert_eq!(passed, 100);
    }

    #[test]
    fn a_steady_flood_gets_the_budget_and_one_report_per_interval() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        // 1,000 lines a second for 60 s, the log thread looking every 100 ms.
        let (mut passed, mut reports) = (0u64, Vec::new());
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            passed += u64::from(l.admit(Kind::ClientGone, Level::Info, now));
            if ms % 100 == 99 {
                reports.extend(l.reports(now, false));
            }
        }
        assert_eq!(passed, 60 * 10);
        // Suppression starts at the 11th line (10 ms in); a report every
        // 10 s after that, the last of which lands in the final second.
        assert_eq!(reports.len(), 5, "{reports:?}");
        for r in &reports {
            assert_eq!(r.kind, Kind::ClientGone);
            assert!(r.over >= REPORT_EVERY && r.over < REPORT_EVERY + 100 * MS);
        }
        // Nothing is lost: what was reported plus what waits for the next
        // report is everything suppressed.
        let end = t0 + Duration::from_secs(60);
        reports.extend(l.reports(end, true));
        let suppressed: u64 = reports.iter().map(|r| r.suppressed).sum();
        assert_eq!(passed + suppressed, 60_000);
        assert!(l.reports(end, true).is_empty());
        assert_eq!(l.next_due(), None);
    }

    #[test]
    fn reports_are_due_an_interval_after_the_first_suppressed_line() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert_eq!(l.next_due(), None);
        for _ in 0..10 {
            assert!(l.admit(Kind::SlowReader, Level::Info, t0));
        }
        assert_eq!(l.next_due(), None, "nothing suppressed yet");
        let first = t0 + 5 * MS;
        assert!(!l.admit(Kind::SlowReader, Level::Info, first));
        assert!(!l.admit(Kind::SlowReader, Level::Info, t0 + 7 * MS));
        assert_eq!(l.next_due(), Some(first + REPORT_EVERY));
        assert!(l.reports(first + REPORT_EVERY - MS, false).is_empty());
        let due = l.reports(first + REPORT_EVERY, false);
        assert_eq!(
            due,
            [Report {
                kind: Kind::SlowReader,
                level: Level::Info,
                suppressed: 2,
                over: REPORT_EVERY
            }]
        );
        assert_eq!(l.next_due(), None);
    }

    #[test]
    fn report_lines_say_what_how_many_and_over_how_long() {
        let r = Report {
            kind: Kind::BadRequest,
            level: Level::Info,
            suppressed: 12_345,
            over: REPORT_EVERY,
        };
        assert_eq!(
            r.line(),
            "bad requests: 12,345 similar lines suppressed in the last 10 s (at most 10 a second are logged)"
        );
        let r = Report {
            kind: Kind::Store,
            level: Level::Error,
            suppressed: 1,
            over: 2600 * MS,
        };
        assert_eq!(
            r.line(),
            "store errors: 1 similar line suppressed in the last 3 s (at most 100 a second are logged)"
        );
        for (ms, secs) in [(1, 1), (10_003, 10), (10_600, 11)] {
            let r = Report { over: ms * MS, ..r };
            let said = format!("in the last {secs} s");
            assert!(r.line().contains(&said), "{ms} ms: {}", r.line());
        }
    }
}
