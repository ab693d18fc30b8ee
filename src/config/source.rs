//! The user's configuration file as text, before the `config` crate sees it: reading it once,
//! a first parse that names the line and key of a syntax error or an out-of-range number, which
//! keys in it hold secrets, the warning for a file other users can read while it holds one, and
//! the scrubbing of every error text (secret values out, huge values cut short).
//!
//! It does not type-check settings (serde does, in `config`) or validate them (`Settings`).

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::SECRET_KEYS;

/// Longest value echoed in an error; a longer one is cut with its size appended.
const SHOWN_MAX: usize = 200;
/// Longest error text as a whole (a long value with spaces would pass the per-value cut).
const MESSAGE_MAX: usize = 2000;
const REDACTED: &str = "<redacted>";

/// `value` as an error may quote it: at most [`SHOWN_MAX`] bytes, then "… (N bytes)".
pub fn shown(value: &str) -> String {
    if value.len() <= SHOWN_MAX {
        return value.to_string();
    }
    let mut end = SHOWN_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
}

/// Other users (not owner, not group) may read `file` (mode & 0o004).
pub fn readable_by_others(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// The user's file, read once (what was checked is what `config` parses) and parsed once here.
pub struct ConfigText {
    pub text: String,
    /// `remote.<key>` of the secrets the file sets, e.g. `remote.password`.
    pub secret_keys: Vec<String>,
    /// The values of those secrets, for scrubbing error texts.
    pub secret_values: Vec<String>,
    /// Readable by users other than the owner and the group (mode & 0o004).
    pub readable_by_others: bool,
    /// A syntax error, or an integer TOML allows but 64 bits do not hold.
    pub problem: Option<TextError>,
}

/// A problem found in the text: the key when one can be named, and the reason.
pub struct TextError {
    pub key: Option<String>,
    pub message: String,
}

impl ConfigText {
    pub fn read(file: &Path) -> std::io::Result<ConfigText> {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let mut f = std::fs::File::open(file)?;
        // The mode of the file actually read, not of whatever the name points to later.
        let mode = f.metadata()?.permissions().mode();
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        let examined = examine(&text, file);
        Ok(ConfigText {
            text,
            secret_keys: examined.secret_keys,
            secret_values: examined.secret_values,
            readable_by_others: mode & 0o004 != 0,
            problem: examined.problem,
        })
    }
}

struct Examined {
    secret_keys: Vec<String>,
    secret_values: Vec<String>,
    problem: Option<TextError>,
}

/// Parses `text` with spans: the secrets it sets, and the first problem, with its line and key
/// (a line that sets a secret is shown with its value redacted).
fn examine(text: &str, file: &Path) -> Examined {
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(e) => {
            let lines = LineMap::new(text);
            // The file is not used, so no value can reach a later message; for the warning, a
            // line that sets a secret is enough.
            let mut secret_keys: Vec<String> = Vec::new();
            for (secret, key) in lines.secret.iter().zip(&lines.keys) {
                match key {
                    Some(key) if *secret && !secret_keys.contains(key) => {
                        secret_keys.push(key.clone())
                    }
                    _ => {}
                }
            }
            let (line, column) = e
                .span()
                .map_or((0, 0), |span| line_column(text, span.start));
            // The key, when known, is named by the caller's "invalid setting `key`".
            let mut message = format!(
                "syntax error in {} at line {line}, column {column}: {}",
                shown(&file.display().to_string()),
                e.message()
            );
            if let Some(shown_line) = lines.shown_line(line) {
                message.push_str(&format!("\n  {line:>4} | {shown_line}"));
            }
            return Examined {
                secret_keys,
                secret_values: Vec::new(),
                problem: Some(TextError {
                    key: lines.key_at(line),
                    message,
                }),
            };
        }
    };
    let (mut secret_keys, mut secret_values) = (Vec::new(), Vec::new());
    let remote = table
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == "remote")
        .map(|(_, v)| v.get_ref());
    if let Some(DeValue::Table(remote)) = remote {
        for (key, value) in remote.iter() {
            let value = scalar_text(value.get_ref());
            if SECRET_KEYS.contains(&key.get_ref().as_ref()) && !value.is_empty() {
                secret_keys.push(format!("remote.{}", key.get_ref()));
                secret_values.push(value);
            }
        }
    }
    let mut found = None;
    check_numbers(table.get_ref(), "", &mut found);
    let problem = found.map(|(key, span)| {
        let (line, _) = line_column(text, span.start);
        TextError {
            message: format!(
                "the number at line {line} of {} is out of range (integers must fit in 64 bits)",
                shown(&file.display().to_string())
            ),
            key: Some(key),
        }
    });
    Examined {
        secret_keys,
        secret_values,
        problem,
    }
}

/// The text of a scalar as the secret would be sent; empty for tables and arrays.
fn scalar_text(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => i.as_str().to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) | DeValue::Table(_) => String::new(),
    }
}

/// The first integer that does not fit in an `i64`, as (dotted key, span). The `config` crate
/// reports these without key or line ("number too large to fit in target type").
fn check_numbers(table: &DeTable<'_>, prefix: &str, found: &mut Option<(String, Range<usize>)>) {
    for (key, value) in table.iter() {
        if found.is_some() {
            return;
        }
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        check_value(value.get_ref(), value.span(), path, found);
    }
}

fn check_value(
    value: &DeValue<'_>,
    span: Range<usize>,
    path: String,
    found: &mut Option<(String, Range<usize>)>,
) {
    match value {
        DeValue::Integer(i) if i64::from_str_radix(i.as_str(), i.radix()).is_err() => {
            *found = Some((path, span));
        }
        DeValue::Table(t) => check_numbers(t, &path, found),
        DeValue::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                if found.is_none() {
                    check_value(item.get_ref(), item.span(), format!("{path}[{n}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A line-by-line reading of a file that may not parse: which key each line sets (after
/// `[section]` headers, through multi-line strings) and which lines may hold a secret.
struct LineMap<'a> {
    lines: Vec<&'a str>,
    keys: Vec<Option<String>>,
    secret: Vec<bool>,
    /// The key of a multi-line string still open at the end: an error there is reported past
    /// the last line.
    open_at_end: Option<String>,
}

impl<'a> LineMap<'a> {
    fn new(text: &'a str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut keys = Vec::with_capacity(lines.len());
        let mut secret = Vec::with_capacity(lines.len());
        let mut section = String::new();
        // Inside a multi-line string: its closing delimiter, key and secrecy.
        let mut open: Option<(&str, Option<String>, bool)> = None;
        for line in &lines {
            if let Some((delimiter, key, is_secret)) = &open {
                keys.push(key.clone());
                secret.push(*is_secret);
                if line.contains(delimiter) {
                    open = None;
                }
                continue;
            }
            let trimmed = line.trim();
            // Broad on purpose: a line that merely mentions a secret key is treated as one.
            let is_secret =
                !trimmed.starts_with('#') && SECRET_KEYS.iter().any(|k| trimmed.contains(k));
            secret.push(is_secret);
            if trimmed.starts_with('[') {
                section = trimmed
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                keys.push(None);
                continue;
            }
            let Some((lhs, rhs)) = trimmed.split_once('=') else {
                keys.push(None);
                continue;
            };
            if trimmed.starts_with('#') {
                keys.push(None);
                continue;
            }
            let name = lhs.trim().trim_matches('"').trim_matches('\'');
            let key = if section.is_empty() {
                name.to_string()
            } else {
                format!("{section}.{name}")
            };
            keys.push(Some(key.clone()));
            let rhs = rhs.trim_start();
            for delimiter in ["\"\"\"", "'''"] {
                if rhs.starts_with(delimiter) && rhs.matches(delimiter).count() == 1 {
                    open = Some((delimiter, Some(key.clone()), is_secret));
                }
            }
        }
        LineMap {
            lines,
            keys,
            secret,
            open_at_end: open.and_then(|(_, key, _)| key),
        }
    }

    fn key_at(&self, line: usize) -> Option<String> {
        match self.keys.get(line.checked_sub(1)?) {
            Some(key) => key.clone(),
            None => self.open_at_end.clone(),
        }
    }

    /// The line as an error may show it: a secret's value redacted, a long line cut.
    fn shown_line(&self, line: usize) -> Option<String> {
        let i = line.checked_sub(1)?;
        let text = *self.lines.get(i)?;
        if !self.secret[i] {
            return Some(shown(text));
        }
        Some(match text.split_once('=') {
            Some((lhs, _)) if self.keys[i].is_some() => {
                format!("{}= {REDACTED}", shown(lhs))
            }
            _ => REDACTED.to_string(),
        })
    }
}

/// Cleans every configuration error text: secret values (from the file and from `DROPSLOT_*`
/// variables) replaced, over-long values cut to [`SHOWN_MAX`] bytes.
#[derive(Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// Starts with the secrets set through the environment (`DROPSLOT_REMOTE__PASSWORD`, ...).
    pub fn from_env() -> Self {
        let secrets = std::env::vars()
            .filter(|(name, _)| {
                let name = name.to_ascii_lowercase();
                name.starts_with("dropslot_") && SECRET_KEYS.iter().any(|k| name.ends_with(k))
            })
            .map(|(_, value)| value)
            .filter(|v| !v.is_empty())
            .collect();
        Scrubber { secrets }
    }

    pub fn add(&mut self, values: &[String]) {
        self.secrets
            .extend(values.iter().filter(|v| !v.is_empty()).cloned());
    }

    pub fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        // Longest first, so a secret containing another is replaced whole.
        let mut secrets: Vec<&String> = self.secrets.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            text = text.replace(secret.as_str(), REDACTED);
        }
        let text = cut_long_words(&text);
        if text.len() > MESSAGE_MAX {
            shown_to(&text, MESSAGE_MAX)
        } else {
            text
        }
    }
}

fn shown_to(text: &str, max: usize) -> String {
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Every run of characters between spaces and quotes longer than [`SHOWN_MAX`] is cut: such a
/// run is a value being echoed (a 10 MB path, say), not prose.
fn cut_long_words(text: &str) -> String {
    // `…` too, so a value already cut by [`shown`] is left alone.
    let is_break = |c: char| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '…');
    let mut out = String::with_capacity(text.len().min(MESSAGE_MAX * 2));
    let mut word_start = None;
    for (i, c) in text.char_indices() {
        if is_break(c) {
            if let Some(start) = word_start.take() {
                out.push_str(&shown(&text[start..i]));
            }
            out.push(c);
        } else if word_start.is_none() {
            word_start = Some(i);
        }
    }
    if let Some(start) = word_start {
        out.push_str(&shown(&text[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_in(text: &str) -> Result<(), TextError> {
        match examine(text, Path::new("c.toml")).problem {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    #[test]
    fn a_syntax_error_on_a_secret_line_names_the_key_and_hides_the_value() {
        let err = problem_in("[remote]\nkind = \"webdav\"\npassword = \"hunter2-secret\nx = 1\n")
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("remote.password"));
        assert!(err.message.contains("line 3"), "{}", err.message);
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert!(err.message.contains(REDACTED), "{}", err.message);
    }

    #[test]
    fn a_syntax_error_inside_a_multi_line_secret_hides_every_line_of_it() {
        let err =
            problem_in("[remote]\npassword = \"\"\"\nhunter2\\q-secret\n\"\"\"\n").unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert_eq!(err.key.as_deref(), Some("remote.password"));
        // Unterminated: the error is past the last line.
        let err = problem_in("[remote]\npassword = \"\"\"\nhunter2-secret\n").unwrap_err();
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert_eq!(err.key.as_deref(), Some("remote.password"));
    }

    #[test]
    fn a_syntax_error_elsewhere_shows_its_line() {
        let err = problem_in("[upload]\nslots = 4 4\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upload.slots"));
        assert!(err.message.contains("slots = 4 4"), "{}", err.message);
    }

    #[test]
    fn out_of_range_integers_name_the_key_and_line() {
        let err = problem_in("[upload]\n\nslots = 99999999999999999999\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upload.slots"));
        assert!(err.message.contains("line 3"), "{}", err.message);
        assert!(problem_in("[upload]\nslots = 9223372036854775807\n").is_ok());
    }

    #[test]
    fn secrets_are_found_in_sections_and_dotted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "remote.password = \"p4ss\"\n[upload]\nslots = 2\n# password = \"comment\"\n",
        )
        .unwrap();
        let read = ConfigText::read(&file).unwrap();
        assert_eq!(read.secret_keys, ["remote.password"]);
        assert_eq!(read.secret_values, ["p4ss"]);
        std::fs::write(&file, "[remote]\nsecret_access_key = \"s3\n").unwrap();
        let read = ConfigText::read(&file).unwrap();
        assert_eq!(read.secret_keys, ["remote.secret_access_key"]);
        std::fs::write(&file, "[remote]\n# password = \"x\"\n").unwrap();
        assert!(ConfigText::read(&file).unwrap().secret_keys.is_empty());
    }

    #[test]
    fn scrubbing_replaces_secrets_and_cuts_long_values() {
        let mut s = Scrubber::default();
        s.add(&["hunter2".to_string()]);
        let long = "a".repeat(10_000_000);
        let cleaned = s.clean(&format!("bad `{long}` and hunter2 and {long}"));
        assert!(!cleaned.contains("hunter2"));
        assert!(cleaned.len() < 1000, "{} bytes", cleaned.len());
        assert!(cleaned.contains("(10000000 bytes)"), "{cleaned}");
        assert_eq!(s.clean("short `value`"), "short `value`");
    }
}
