//! Every reference to a document points into this repository, at a file and
//! a section that exist. Needs nothing but Rust; runs in plain `cargo test`.
//!
//! Scanned: src/, tests/, fuzz/, bench/, scripts/, nixos/, systemd/,
//! README.md and docs/ (text files; build output and fuzz corpora left out).
//! Checked there:
//! - a path `docs/<name>.md`, anywhere (a comment, a string, a link), must
//!   be a file; `docs/x.md#anchor` must be one of its headings' anchors, as
//!   GitHub makes them;
//! - a section cited after a Markdown file, `docs/protocols.md §4.3` or a
//!   chain `§4.3, §4.4 and §10.4` (also `§1 to §6`, `§1–§6`), must be a
//!   numbered heading of that file (`### 4.3 …`, `## 8. …`);
//! - a `§` must belong to such a citation, or to `RFC <n>` or `issue <n>`.
//!   Only inside docs/ may a bare `§4.4` stand alone: it means the file
//!   itself;
//! - relative Markdown links (`[x](path#anchor)`) must lead to a file, and
//!   to a heading there;
//! - the developer notes kept outside the repository are never cited: a
//!   clone has none of them. Those are the names in `OUTSIDE` and the
//!   directory `../shared`, except the two inputs `tests/nixos_module.rs` looks up
//!   there with fallbacks (`SHARED_INPUTS`), which are not documents.
//!
//! Comment continuation lines are joined before scanning, so a citation
//! may break across lines. This file and `scripts/rewrite-doc-refs` name
//! the outside notes on purpose (to refuse them, to rewrite them) and are
//! not scanned.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

const SCANNED: &[&str] = &[
    "src",
    "tests",
    "fuzz",
    "bench",
    "scripts",
    "nixos",
    "systemd",
    "README.md",
    "docs",
];
/// Directory names never entered: build output, fuzz inputs (bytes, not
/// prose), version control.
const SKIPPED_DIRS: &[&str] = &["target", "corpus", "artifacts", ".git"];
const NOT_SCANNED: &[&str] = &["tests/doc_references.rs", "scripts/rewrite-doc-refs"];
/// Developer notes that live beside the repository, never in it.
const OUTSIDE: &[&str] = &["design.md", "style.md", "nix-protocols.md"];
const SHARED: &str = "../shared";
const SHARED_INPUTS: &[&str] = &["../shared/nixpkgs-lib", "../shared/nixos-upstream"];

/// What can be cited in one Markdown file.
#[derive(Debug, Default)]
struct Doc {
    /// `4.3` for `### 4.3 Title`, `8` for `## 8. Title`.
    sections: HashSet<String>,
    /// GitHub's anchors of every heading.
    anchors: HashSet<String>,
}

impl Doc {
    fn parse(markdown: &str) -> Doc {
        let mut doc = Doc::default();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut fenced = false;
        for line in markdown.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            let hashes = line.bytes().take_while(|&b| b == b'#').count();
            if fenced || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
                continue;
            }
            let title = line[hashes..].trim();
            if let Some(number) = section_number(title.split_whitespace().next().unwrap_or("")) {
                doc.sections.insert(number);
            }
            let slug = slug(title);
            let n = seen.entry(slug.clone()).or_insert(0);
            doc.anchors.insert(match *n {
                0 => slug.clone(),
                k => format!("{slug}-{k}"),
            });
            *n += 1;
        }
        doc
    }
}

/// `4.3` from `4.3` or `4.3.`; `None` unless digits and dots.
fn section_number(word: &str) -> Option<String> {
    let number = word.strip_suffix('.').unwrap_or(word);
    let ok = !number.is_empty()
        && number
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| number.to_owned())
}

/// GitHub's heading anchor: lower case, spaces to `-`, and every character
/// but letters, digits, `-` and `_` dropped.
fn slug(title: &str) -> String {
    title
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The files references can lead to.
trait Repo {
    /// The Markdown file at `path` (relative to the repository), parsed.
    fn doc(&self, path: &str) -> Option<&Doc>;
    fn exists(&self, path: &str) -> bool;
}

struct Checkout {
    root: PathBuf,
    docs: RefCell<HashMap<String, Option<&'static Doc>>>,
}

impl Repo for Checkout {
    fn doc(&self, path: &str) -> Option<&Doc> {
        *self
            .docs
            .borrow_mut()
            .entry(path.to_owned())
            .or_insert_with(|| {
                let text = fs::read_to_string(self.root.join(path)).ok()?;
                // Leaked: a handful of small files, for the life of a test.
                Some(&*Box::leak(Box::new(Doc::parse(&text))))
            })
    }

    fn exists(&self, path: &str) -> bool {
        self.root.join(path).exists()
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Problem {
    file: String,
    line: usize,
    what: String,
}

/// A file's text with comment continuations joined: each line without its
/// indentation and comment leader, lines joined by one space.
struct Joined {
    text: String,
    /// Byte offset in `text` where each line starts.
    starts: Vec<usize>,
}

impl Joined {
    fn new(raw: &str) -> Joined {
        let mut text = String::with_capacity(raw.len());
        let mut starts = Vec::new();
        for line in raw.lines() {
            if !starts.is_empty() {
                text.push(' ');
            }
            starts.push(text.len());
            text.push_str(strip_leader(line));
        }
        Joined { text, starts }
    }

    /// 1-based line of byte `at`.
    fn line(&self, at: usize) -> usize {
        self.starts.partition_point(|&s| s <= at)
    }
}

fn strip_leader(line: &str) -> &str {
    let t = line.trim_start();
    let rest = if let Some(rest) = t.strip_prefix("//") {
        rest.strip_prefix(['!', '/']).unwrap_or(rest)
    } else if t.starts_with('#') {
        t.trim_start_matches('#')
    } else {
        t.strip_prefix('*').unwrap_or(t)
    };
    rest.trim()
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

fn is_anchor_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

/// `a/b/../c` → `a/c`; `None` when it climbs out of the repository.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn parent_dir(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// One scan of one file.
struct Scan<'a> {
    file: &'a str,
    repo: &'a dyn Repo,
    joined: Joined,
    /// Byte offsets of the `§` signs that belong to a citation.
    cited: HashSet<usize>,
    problems: Vec<Problem>,
}

impl Scan<'_> {
    fn report(&mut self, at: usize, what: String) {
        let line = self.joined.line(at);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            what,
        });
    }

    /// The `§` chain that starts at `at` (after a head): the sections and
    /// where each `§` is. Separators: spaces, `,`, `;`, `–`, `-`, and the
    /// words `and`, `or`, `to`; a closing backtick or quote right after the
    /// head is skipped too.
    fn chain(&mut self, mut at: usize) -> Vec<(usize, String)> {
        let text = &self.joined.text;
        let mut out = Vec::new();
        if text[at..].starts_with(['`', '"']) {
            at += 1;
        }
        loop {
            let mut p = at;
            loop {
                let rest = &text[p..];
                if let Some(c) = rest
                    .chars()
                    .next()
                    .filter(|c| c.is_whitespace() || matches!(c, ',' | ';' | '–' | '-'))
                {
                    p += c.len_utf8();
                } else if let Some(word) = ["and ", "or ", "to "]
                    .iter()
                    .find(|w| rest.starts_with(**w))
                {
                    p += word.len();
                } else {
                    break;
                }
            }
            let Some(after) = text[p..].strip_prefix('§') else {
                return out;
            };
            let digits = after
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b'.')
                .count();
            let number = after[..digits].trim_end_matches('.');
            if section_number(number).is_none() {
                return out;
            }
            out.push((p, number.to_owned()));
            self.cited.insert(p);
            at = p + '§'.len_utf8() + number.len();
        }
    }

    /// `.md` paths (`docs/…` must exist), their anchors and cited sections.
    fn markdown_paths(&mut self) {
        let bytes = self.joined.text.as_bytes().to_vec();
        let mut i = 0;
        while i < bytes.len() {
            if !is_path_byte(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_path_byte(bytes[i]) {
                i += 1;
            }
            let run = self.joined.text[start..i].trim_end_matches('.').to_owned();
            let end = start + run.len();
            if !run.ends_with(".md") || self.in_url(start) {
                continue;
            }
            let (mut anchor, mut after) = (None, end);
            if end == i && bytes.get(end) == Some(&b'#') {
                let len = bytes[end + 1..]
                    .iter()
                    .take_while(|&&b| is_anchor_byte(b))
                    .count();
                anchor = Some(self.joined.text[end + 1..end + 1 + len].to_owned());
                after = end + 1 + len;
            }
            let sections = self.chain(after);
            self.check_target(start, &run, anchor.as_deref(), &sections);
        }
    }

    /// Whether the word around `at` is a URL (its files are not ours).
    fn in_url(&self, at: usize) -> bool {
        let text = &self.joined.text;
        let from = text[..at]
            .rfind(|c: char| c.is_whitespace() || matches!(c, '(' | '<' | '"' | '`'))
            .map_or(0, |p| p + 1);
        text[from..]
            .split_whitespace()
            .next()
            .is_some_and(|word| word.contains("://"))
    }

    fn check_target(
        &mut self,
        at: usize,
        run: &str,
        anchor: Option<&str>,
        sections: &[(usize, String)],
    ) {
        let named = run.rsplit('/').next().unwrap_or(run);
        let outside = OUTSIDE.contains(&named) && !run.contains("docs/");
        if outside {
            // Reported, with its sections, by `outside_notes`.
            return;
        }
        // `docs/…` is the repository's docs directory wherever it is
        // written (`$REPO/docs/x.md`, `repo().join("docs/x.md")`).
        let in_docs = run
            .match_indices("docs/")
            .find(|(p, _)| *p == 0 || run.as_bytes()[p - 1] == b'/')
            .map(|(p, _)| &run[p..]);
        let path = match in_docs {
            Some(p) => normalize(p),
            // Relative to the repository, else to the citing file.
            None => [run.to_owned(), format!("{}/{run}", parent_dir(self.file))]
                .iter()
                .filter_map(|p| normalize(p))
                .find(|p| self.repo.exists(p)),
        };
        let Some(path) = path else {
            if !sections.is_empty() {
                self.report(
                    at,
                    format!("cites a section of {run}, which is not in the repository"),
                );
            }
            return;
        };
        let Some(doc) = self.repo.doc(&path) else {
            if in_docs.is_some() || !sections.is_empty() || anchor.is_some() {
                self.report(at, format!("{path} does not exist"));
            }
            return;
        };
        let missing: Vec<String> = sections
            .iter()
            .filter(|(_, n)| !doc.sections.contains(n))
            .map(|(_, n)| n.clone())
            .collect();
        let bad_anchor = anchor
            .filter(|a| !doc.anchors.contains(*a))
            .map(str::to_owned);
        for n in missing {
            self.report(at, format!("{path} has no section §{n}"));
        }
        if let Some(a) = bad_anchor {
            self.report(at, format!("{path} has no heading with the anchor #{a}"));
        }
    }

    /// `RFC <n> §…` and `issue <n> §…`: other documents, whose sections
    /// are not ours to check.
    fn other_citations(&mut self) {
        for head in ["RFC ", "issue ", "Issue "] {
            let starts: Vec<usize> = self
                .joined
                .text
                .match_indices(head)
                .map(|(p, _)| p + head.len())
                .collect();
            for p in starts {
                let digits = self.joined.text[p..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count();
                if digits > 0 {
                    self.chain(p + digits);
                }
            }
        }
    }

    /// In docs/, a bare `§` cites the file itself; elsewhere it names no
    /// document at all.
    fn bare_sections(&mut self) {
        let repo = self.repo;
        let own = self
            .file
            .starts_with("docs/")
            .then(|| repo.doc(self.file))
            .flatten();
        let bare: Vec<usize> = self
            .joined
            .text
            .match_indices('§')
            .map(|(p, _)| p)
            .filter(|p| !self.cited.contains(p))
            .collect();
        for p in bare {
            if self.cited.contains(&p) {
                // Part of an earlier bare chain: `§4.4 and §4.5`.
                continue;
            }
            let sections = self.chain(p);
            match own {
                Some(doc) => {
                    for (at, n) in sections {
                        if !doc.sections.contains(&n) {
                            self.report(at, format!("{} has no section §{n}", self.file));
                        }
                    }
                }
                None => self.report(
                    p,
                    "a § that names no document: write `docs/<file>.md §N` (or `RFC <n> §N`)"
                        .to_owned(),
                ),
            }
        }
    }

    /// The notes outside the repository, and `../shared`.
    fn outside_notes(&mut self) {
        let mut found = Vec::new();
        for name in OUTSIDE {
            for (p, _) in self.joined.text.match_indices(name) {
                let before = self.joined.text[..p].bytes().last();
                // `docs/style.md` is ours; `mystyle.md` is another name.
                if !before.is_some_and(is_path_byte) {
                    found.push((p, format!("cites {name}, which is not in the repository")));
                }
            }
        }
        for (p, _) in self.joined.text.match_indices(SHARED) {
            let rest = &self.joined.text[p..];
            if !SHARED_INPUTS.iter().any(|input| rest.starts_with(input)) {
                found.push((p, format!("cites {SHARED}, which a clone does not have")));
            }
        }
        for (p, what) in found {
            self.report(p, what);
        }
    }

    /// Relative Markdown links, `[text](path#anchor)`.
    fn markdown_links(&mut self, raw: &str) {
        for (n, line) in raw.lines().enumerate() {
            for (p, _) in line.match_indices("](") {
                let target = &line[p + 2..];
                let Some(end) = target.find([')', ' ']) else {
                    continue;
                };
                let target = &target[..end];
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((path, anchor)) => (path, Some(anchor)),
                    None => (target, None),
                };
                let resolved = if path.is_empty() {
                    Some(self.file.to_owned())
                } else {
                    normalize(&format!("{}/{path}", parent_dir(self.file)))
                };
                let what = match resolved {
                    Some(r) if !self.repo.exists(&r) => {
                        Some(format!("link to {r}, which does not exist"))
                    }
                    Some(r) => match (anchor, r.ends_with(".md")) {
                        (Some(a), true)
                            if !self.repo.doc(&r).is_some_and(|d| d.anchors.contains(a)) =>
                        {
                            Some(format!("{r} has no heading with the anchor #{a}"))
                        }
                        _ => None,
                    },
                    None => Some(format!("link to {target}, outside the repository")),
                };
                if let Some(what) = what {
                    self.problems.push(Problem {
                        file: self.file.to_owned(),
                        line: n + 1,
                        what,
                    });
                }
            }
        }
    }
}

/// Every problem with the references in `file` (relative to the
/// repository), whose text is `raw`.
fn check_file(file: &str, raw: &str, repo: &dyn Repo) -> Vec<Problem> {
    let mut scan = Scan {
        file,
        repo,
        joined: Joined::new(raw),
        cited: HashSet::new(),
        problems: Vec::new(),
    };
    scan.outside_notes();
    scan.markdown_paths();
    scan.other_citations();
    scan.bare_sections();
    if file.ends_with(".md") {
        scan.markdown_links(raw);
    }
    let unique: BTreeSet<Problem> = scan.problems.into_iter().collect();
    unique.into_iter().collect()
}

/// The text files under `rel` (a file or a directory), as repository paths.
fn text_files(root: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let path = root.join(rel);
    if path.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .map(|e| e.expect("directory entry").file_name())
            .collect();
        entries.sort();
        for name in entries {
            let name = name.to_string_lossy();
            if !SKIPPED_DIRS.contains(&name.as_ref()) {
                text_files(root, &format!("{rel}/{name}"), out);
            }
        }
    } else if !NOT_SCANNED.contains(&rel) {
        // Not UTF-8, or NUL bytes: not prose (golden NARs, say).
        if let Ok(text) = fs::read_to_string(&path) {
            if !text.contains('\0') {
                out.push((rel.to_owned(), text));
            }
        }
    }
}

#[test]
fn every_doc_reference_resolves() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = Checkout {
        root: root.clone(),
        docs: RefCell::new(HashMap::new()),
    };
    let mut files = Vec::new();
    for rel in SCANNED {
        text_files(&root, rel, &mut files);
    }
    assert!(
        files.iter().any(|(f, _)| f == "src/lib.rs") && files.len() > 50,
        "the scan found {} files: not this repository?",
        files.len()
    );
    let problems: Vec<String> = files
        .iter()
        .flat_map(|(file, text)| check_file(file, text, &repo))
        .map(|p| format!("{}:{}: {}", p.file, p.line, p.what))
        .collect();
    assert!(
        problems.is_empty(),
        "{} reference(s) that a clone cannot follow (scripts/rewrite-doc-refs rewrites the \
         old notes' citations):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker itself, on made-up files: it must catch what it is for.
mod checker {
    use super::*;

    struct Fake(HashMap<&'static str, Doc>);

    impl Repo for Fake {
        fn doc(&self, path: &str) -> Option<&Doc> {
            self.0.get(path)
        }
        fn exists(&self, path: &str) -> bool {
            self.0.contains_key(path) || path == "LICENSE"
        }
    }

    fn fake() -> Fake {
        let protocols =
            "# P\n## 1. One\n### 1.2 Two words\n## 10. Ten\n```sh\n## 7. not a heading\n```\n";
        Fake(HashMap::from([
            ("docs/p.md", Doc::parse(protocols)),
            (
                "docs/s.md",
                Doc::parse("## Shape\n### 8. Fail, don't desync\n"),
            ),
            ("README.md", Doc::parse("## Quick start\n## Quick start\n")),
        ]))
    }

    fn problems(file: &str, text: &str) -> Vec<String> {
        check_file(file, text, &fake())
            .into_iter()
            .map(|p| format!("{}: {}", p.line, p.what))
            .collect()
    }

    #[test]
    fn headings_give_sections_and_anchors() {
        let d = Doc::parse(
            "## 4.3 What nix-serve writes, and what we write\n## `--flag`\n## 8. Fail\n",
        );
        assert!(d.sections.contains("4.3") && d.sections.contains("8"));
        assert!(d
            .anchors
            .contains("43-what-nix-serve-writes-and-what-we-write"));
        assert!(d.anchors.contains("--flag") && d.anchors.contains("8-fail"));
        assert!(fake().0["README.md"].anchors.contains("quick-start-1"));
        assert!(!fake().0["docs/p.md"].sections.contains("7"), "fenced");
    }

    #[test]
    fn good_references_pass() {
        let text = "//! See (`docs/p.md` §1.2, §10 and §1) and docs/s.md §8.\n\
                    /// RFC 9110 §15,\n/// RFC 9112 §3, §6.1; issue 14 §2; (`docs/p.md`\n\
                    //! §1–§10). `$REPO/docs/p.md#1-one` https://x.org/docs/q.md";
        assert_eq!(problems("src/a.rs", text), Vec::<String>::new());
        let md = "[a](docs/p.md#12-two-words) [b](#quick-start) [c](LICENSE) §9";
        assert_eq!(
            problems("README.md", md),
            ["1: a § that names no document: write `docs/<file>.md §N` (or `RFC <n> §N`)"]
        );
        assert_eq!(
            problems("docs/p.md", "see §1.2 and [x](s.md#8-fail-dont-desync)"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_references_fail_with_file_and_line() {
        let text = "ok\n// docs/p.md §1.3 and docs/gone.md, docs/p.md#nope\n// see §4.4 alone\n";
        assert_eq!(
            problems("src/a.rs", text),
            [
                "2: docs/gone.md does not exist",
                "2: docs/p.md has no heading with the anchor #nope",
                "2: docs/p.md has no section §1.3",
                "3: a § that names no document: write `docs/<file>.md §N` (or `RFC <n> §N`)",
            ]
        );
        assert_eq!(
            problems("docs/p.md", "§2"),
            ["1: docs/p.md has no section §2"]
        );
        assert_eq!(
            problems("README.md", "[x](docs/p.md#two) [y](nope.md)"),
            [
                "1: docs/p.md has no heading with the anchor #two",
                "1: link to nope.md, which does not exist",
            ]
        );
    }

    #[test]
    fn notes_outside_the_repository_fail() {
        let text = "// (`nix-protocols.md` §4.4) style.md 8, design.md \"Life cycle\"\n\
                    // ../shared/lab and ../shared/nixpkgs-lib; docs/s.md §8, mystyle.md";
        assert_eq!(
            problems("src/a.rs", text),
            [
                "1: cites design.md, which is not in the repository",
                "1: cites nix-protocols.md, which is not in the repository",
                "1: cites style.md, which is not in the repository",
                "2: cites ../shared, which a clone does not have",
            ]
        );
    }
}
