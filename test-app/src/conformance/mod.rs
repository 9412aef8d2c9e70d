//! The XEP-0357 conformance kit: checks an XMPP server, or an App Server,
//! against what the spec and real deployments need, and reports one table.
//!
//! XEP-0357 leaves the App Server side open, so push on XMPP grew a
//! dialect per App Server and servers that disagree about which answers
//! disable a registration (docs/answers.md). The kit makes that visible and
//! checkable by anyone: `server` mode plays the App Server and two clients
//! against a server; `app-server` mode plays the server toward an App
//! Server. Both produce a [`Report`]: one [`Row`] per behaviour, with the
//! requirement it is judged by, what was observed (as text and as a
//! machine-readable value that tests compare with the live fixtures), and a
//! note where the spec is silent. The committed tables for Prosody and
//! ejabberd are in `docs/conformance/`; what they imply for the spec is in
//! `docs/xep-0357-notes.md`.

pub mod app_server;
pub mod server;
pub mod xml;

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// What the spec (or real deployments) asks of the behaviour a row checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requirement {
    /// An absolute requirement.
    #[serde(rename = "MUST")]
    Must,
    /// A recommendation.
    #[serde(rename = "SHOULD")]
    Should,
    /// An option.
    #[serde(rename = "MAY")]
    May,
    /// The spec is silent: observed for the record.
    #[serde(rename = "none")]
    None,
}

impl Requirement {
    /// The keyword as the table shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::Must => "MUST",
            Requirement::Should => "SHOULD",
            Requirement::May => "MAY",
            Requirement::None => "-",
        }
    }
}

/// How a row came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The requirement holds.
    Pass,
    /// The requirement does not hold.
    Fail,
    /// Observed; there is no requirement to judge it by.
    Note,
    /// Not run (a prerequisite was missing); `observed` says why.
    Skipped,
}

impl Verdict {
    /// The word as the table shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Note => "note",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One behaviour, checked once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Stable kebab-case name (`answer-cancel`), what tests and docs cite.
    pub id: String,
    /// What was done, in one sentence.
    pub scenario: String,
    /// What the behaviour is judged by.
    pub requirement: Requirement,
    /// Where the requirement comes from (`XEP-0357 §7`, `XEP-0114 §3`,
    /// `RFC 6120 §8.2.3`, `docs/answers.md`).
    pub reference: String,
    /// How it came out.
    pub verdict: Verdict,
    /// What happened, for a reader.
    pub observed: String,
    /// What happened, for a program: compared by tests with the live
    /// fixtures and the committed tables (`"empty"`, `"kept"`, `10`, `true`).
    pub value: serde_json::Value,
    /// Where the spec is silent or ambiguous: what an implementation must
    /// make of it ("" when nothing).
    pub note: String,
}

impl Row {
    /// A row not run yet: [`Verdict::Skipped`], no value.
    pub fn new(id: &str, scenario: &str, requirement: Requirement, reference: &str) -> Row {
        Row {
            id: id.to_owned(),
            scenario: scenario.to_owned(),
            requirement,
            reference: reference.to_owned(),
            verdict: Verdict::Skipped,
            observed: String::new(),
            value: serde_json::Value::Null,
            note: String::new(),
        }
    }

    fn outcome(
        mut self,
        verdict: Verdict,
        observed: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Row {
        self.verdict = verdict;
        self.observed = observed.into();
        self.value = value.into();
        self
    }

    /// The requirement holds.
    pub fn pass(self, observed: impl Into<String>, value: impl Into<serde_json::Value>) -> Row {
        self.outcome(Verdict::Pass, observed, value)
    }

    /// The requirement does not hold.
    pub fn fail(self, observed: impl Into<String>, value: impl Into<serde_json::Value>) -> Row {
        self.outcome(Verdict::Fail, observed, value)
    }

    /// Observed, with no requirement to judge it by.
    pub fn note_only(
        self,
        observed: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Row {
        self.outcome(Verdict::Note, observed, value)
    }

    /// Pass or fail by `holds`; a [`Requirement::None`] row is a note
    /// whatever `holds` says.
    pub fn judged(
        self,
        holds: bool,
        observed: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Row {
        let verdict = match (self.requirement, holds) {
            (Requirement::None, _) => Verdict::Note,
            (_, true) => Verdict::Pass,
            (_, false) => Verdict::Fail,
        };
        self.outcome(verdict, observed, value)
    }

    /// Not run, and why.
    pub fn skipped(self, reason: impl Into<String>) -> Row {
        self.outcome(Verdict::Skipped, reason, serde_json::Value::Null)
    }

    /// Adds the note on what the spec leaves open.
    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// Which side the kit played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The kit played the App Server and two clients against a server.
    Server,
    /// The kit played the server toward an App Server.
    AppServer,
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Which side the kit played.
    pub mode: Mode,
    /// What was tested, e.g. `127.0.0.1:15222`.
    pub target: String,
    /// The target's software name and version (XEP-0092), when it says.
    pub software: Option<String>,
    /// The rows, in the kit's fixed order.
    pub rows: Vec<Row>,
}

impl Report {
    /// The rows that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Fail)
    }

    /// The row with this id.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// An aligned text table: id, requirement, verdict, observed, note;
    /// then a count per verdict.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mode = match self.mode {
            Mode::Server => "server",
            Mode::AppServer => "app-server",
        };
        let _ = writeln!(out, "XEP-0357 conformance ({mode} mode): {}", self.target);
        if let Some(software) = &self.software {
            let _ = writeln!(out, "software: {software}");
        }
        let id_width = self
            .rows
            .iter()
            .map(|r| r.id.len())
            .max()
            .unwrap_or(2)
            .max(2);
        let _ = writeln!(
            out,
            "{:<id_width$}  {:<6}  {:<7}  observed  [note]",
            "id", "req", "verdict"
        );
        for row in &self.rows {
            let _ = write!(
                out,
                "{:<id_width$}  {:<6}  {:<7}  {}",
                row.id,
                row.requirement.as_str(),
                row.verdict.as_str(),
                one_line(&row.observed)
            );
            if !row.note.is_empty() {
                let _ = write!(out, "  [{}]", one_line(&row.note));
            }
            out.push('\n');
        }
        let count = |v: Verdict| self.rows.iter().filter(|r| r.verdict == v).count();
        let _ = writeln!(
            out,
            "{} pass, {} fail, {} note, {} skipped",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Note),
            count(Verdict::Skipped)
        );
        out
    }

    /// A Markdown table (what `docs/conformance/` holds): one line per row
    /// with its requirement, verdict, value and note.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        // One line each; `|` would end the cell and `<enable/>` would be
        // read as HTML.
        let cell = |text: &str| {
            one_line(text)
                .replace('|', "\\|")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let _ = writeln!(out, "Target: {}", cell(&self.target));
        if let Some(software) = &self.software {
            let _ = writeln!(out, "\nSoftware: {}", cell(software));
        }
        out.push_str(
            "\n| id | requirement | reference | verdict | observed | value | note |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | `{}` | {} |",
                row.id,
                row.requirement.as_str(),
                cell(&row.reference),
                row.verdict.as_str(),
                cell(&row.observed),
                cell(&row.value.to_string()),
                cell(&row.note)
            );
        }
        out
    }

    /// How this run differs from an earlier one (a committed table): rows
    /// whose verdict or value changed, rows missing on either side. Texts
    /// (observed, note) are free to differ: they carry timings.
    pub fn differences(&self, expected: &Report) -> Vec<String> {
        let mut out = Vec::new();
        for want in &expected.rows {
            match self.row(&want.id) {
                None => out.push(format!("{}: not in this run", want.id)),
                Some(got) if got.verdict != want.verdict || got.value != want.value => {
                    out.push(format!(
                        "{}: expected {} {}, got {} {} ({})",
                        want.id,
                        want.verdict.as_str(),
                        want.value,
                        got.verdict.as_str(),
                        got.value,
                        one_line(&got.observed)
                    ));
                }
                Some(_) => {}
            }
        }
        for got in &self.rows {
            if expected.row(&got.id).is_none() {
                out.push(format!("{}: not in the expected table", got.id));
            }
        }
        out
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A report holds only strings, enums and JSON values: serialising
        // it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How the CLI prints a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The aligned table.
    #[default]
    Text,
    /// The JSON of [`Report`].
    Json,
    /// A Markdown table.
    Markdown,
}

impl Format {
    /// The report in this format.
    pub fn render(self, report: &Report) -> String {
        match self {
            Format::Text => report.to_table(),
            Format::Json => report.to_json(),
            Format::Markdown => report.to_markdown(),
        }
    }
}

/// What both modes' command lines do with a finished report: print it in
/// `format` and write its JSON to `json` when given. The error is the exit
/// status to end with (2: the file could not be written).
pub fn print_report(report: &Report, format: Format, json: Option<&Path>) -> Result<(), ExitCode> {
    println!("{}", format.render(report));
    if let Some(path) = json
        && let Err(e) = std::fs::write(path, report.to_json())
    {
        eprintln!("nudge-test-app: writing {}: {e}", path.display());
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// The exit status of a run: 0 when no row failed, 1 when one did.
pub fn exit_status(report: &Report) -> ExitCode {
    if report.failed().next().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            mode: Mode::Server,
            target: "127.0.0.1:5222".into(),
            software: Some("Prosody 0.12.3".into()),
            rows: vec![
                Row::new("enable", "enable push", Requirement::Must, "XEP-0357 §5")
                    .judged(true, "result", "result"),
                Row::new(
                    "answer-cancel",
                    "answer cancel",
                    Requirement::None,
                    "docs/answers.md",
                )
                .judged(false, "disabled at\nonce", "disabled")
                .with_note("the spec is silent"),
                Row::new("disable", "disable", Requirement::Must, "XEP-0357 §6")
                    .judged(false, "error", "error"),
                Row::new(
                    "publish-hibernated",
                    "h",
                    Requirement::Should,
                    "XEP-0357 §7",
                )
                .skipped("no stream management"),
            ],
        }
    }

    #[test]
    fn judges_by_requirement() {
        let r = report();
        let verdicts: Vec<Verdict> = r.rows.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Pass,
                Verdict::Note,
                Verdict::Fail,
                Verdict::Skipped
            ]
        );
        assert_eq!(
            r.failed().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["disable"]
        );
    }

    #[test]
    fn json_round_trips_and_uses_the_spec_keywords() {
        let r = report();
        let json = r.to_json();
        assert!(json.contains("\"requirement\": \"MUST\""), "{json}");
        assert!(json.contains("\"mode\": \"server\""), "{json}");
        assert!(json.contains("\"verdict\": \"skipped\""), "{json}");
        let back: Report = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn differences_name_the_rows_that_changed() {
        let committed = report();
        assert!(report().differences(&committed).is_empty());
        let mut run = report();
        run.rows[0].observed = "result after 3 ms".into();
        run.rows[1] = Row::new("answer-cancel", "answer cancel", Requirement::None, "")
            .judged(false, "kept", "kept");
        run.rows.pop();
        let diffs = run.differences(&committed);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(
            diffs[0].starts_with("answer-cancel: expected note \"disabled\", got note \"kept\""),
            "{diffs:?}"
        );
        assert!(
            diffs[1].starts_with("publish-hibernated: not in this run"),
            "{diffs:?}"
        );
    }

    #[test]
    fn markdown_escapes_pipes_and_keeps_one_line_per_row() {
        let mut r = report();
        r.rows[0].observed = "<enable/> a | b\nc".into();
        let md = r.to_markdown();
        assert!(
            md.contains("| `enable` | MUST | XEP-0357 §5 | pass | &lt;enable/&gt; a \\| b c | `\"result\"` |  |"),
            "{md}"
        );
        assert_eq!(md.lines().filter(|l| l.starts_with("| `")).count(), 4);
    }

    #[test]
    fn table_has_a_line_per_row_and_the_counts() {
        let table = report().to_table();
        assert!(table.contains("answer-cancel"), "{table}");
        assert!(
            table.contains("disabled at once  [the spec is silent]"),
            "{table}"
        );
        assert!(
            table.contains("1 pass, 1 fail, 1 note, 1 skipped"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + 1 + 4 + 1);
    }
}
