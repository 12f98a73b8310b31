//! TOML text -> spanned tree -> `${ENV}` interpolation -> typed sections, collecting every
//! syntax, interpolation, unknown-key and type error with its line and column.
//!
//! Each top-level section and each element of `users`, `routes`, `labels` and `rules` is
//! deserialised on its own, so one bad route does not hide the errors of the next one. Unknown
//! keys are collected with `serde_ignored` (the model does not use `deny_unknown_fields`, which
//! would stop at the first one).

use crate::interpolate::interpolate;
use crate::model::Config;
use crate::ConfigError;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

const SECTIONS: &str = "server, admin, log, tls, users, routes, labels, rules, audit, guards, masking";

/// Maps config paths (`routes[0].pool.size`) to positions in the source, and makes errors.
pub(crate) struct Locator {
    file: String,
    line_starts: Vec<usize>,
    text: String,
    /// Path -> byte offset of its key (or of the value, for array elements).
    offsets: HashMap<String, usize>,
    /// (path, value span) of every value, to find the path of a type error from its span.
    values: Vec<(String, Range<usize>)>,
}

impl Locator {
    fn new(file: &str, text: &str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { file: file.to_owned(), line_starts, text: text.to_owned(), offsets: HashMap::new(), values: Vec::new() }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    /// An error at a byte offset.
    pub(crate) fn at_offset(&self, offset: Option<usize>, path: &str, message: String) -> ConfigError {
        let (line, column) = match offset.map(|o| self.position(o)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        ConfigError { file: self.file.clone(), line, column, path: path.to_owned(), message }
    }

    /// An error at `path`, located at the path or its nearest ancestor present in the file.
    pub(crate) fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let mut probe = path;
        let offset = loop {
            if let Some(&o) = self.offsets.get(probe) {
                break Some(o);
            }
            match probe.rfind(['.', '[']) {
                Some(cut) => probe = &probe[..cut],
                None => break None,
            }
        };
        self.at_offset(offset, path, message.into())
    }

    /// The innermost path under `within` whose value span contains `span`; `within` if none.
    fn path_of(&self, span: &Range<usize>, within: &str) -> String {
        self.values
            .iter()
            .filter(|(p, v)| v.start <= span.start && span.end <= v.end && p.starts_with(within))
            .min_by_key(|(p, v)| (v.end - v.start, std::cmp::Reverse(p.len())))
            .map_or_else(|| within.to_owned(), |(p, _)| p.clone())
    }
}

/// Original position of each deserialised list element (elements that failed are skipped).
#[derive(Default)]
pub(crate) struct Indices {
    pub users: Vec<usize>,
    pub routes: Vec<usize>,
    pub labels: Vec<usize>,
    pub rules: Vec<usize>,
}

/// Everything the parse step found.
pub(crate) struct Parsed {
    pub config: Config,
    pub locator: Locator,
    pub indices: Indices,
    pub errors: Vec<ConfigError>,
    /// Some section or element failed to deserialise: `config` is incomplete.
    pub incomplete: bool,
    /// Paths whose string could not be interpolated: validation errors under them are noise.
    pub tainted: HashSet<String>,
    /// Strings that received an environment variable's value.
    secrets: Vec<Secret>,
}

/// A string value that holds (part of) an environment variable's value.
struct Secret {
    path: String,
    span: Range<usize>,
    value: String,
}

impl Parsed {
    /// Hides env-provided values that a validation message about their own path might echo.
    pub(crate) fn redact(&self, mut e: ConfigError) -> ConfigError {
        for s in self.secrets.iter().filter(|s| s.path == e.path && !s.value.is_empty()) {
            e.message = e.message.replace(&s.value, "***");
        }
        e
    }
}

/// Parses `src`. `Err` holds syntax errors (nothing else can be trusted then).
pub(crate) fn parse(src: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, Vec<ConfigError>> {
    let mut locator = Locator::new(file, src);
    let (root, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|e| locator.at_offset(e.span().map(|s| s.start), "", e.message().to_owned()))
            .collect());
    }
    let mut walk =
        Walk { env, locator: &mut locator, errors: Vec::new(), tainted: HashSet::new(), secrets: Vec::new() };
    let mut root = root.into_inner();
    for (key, value) in root.iter_mut() {
        walk.visit(key.get_ref().to_string(), Some(key.span()), value);
    }
    let Walk { errors, tainted, secrets, .. } = walk;
    let mut sections = Sections { locator: &locator, secrets: &secrets, errors, incomplete: false };
    let mut config = Config::default();
    let mut indices = Indices::default();
    for (key, value) in root {
        let name = key.get_ref().to_string();
        match name.as_str() {
            "server" => config.server = sections.one(value, &name).unwrap_or_default(),
            "admin" => config.admin = sections.one(value, &name).unwrap_or_default(),
            "log" => config.log = sections.one(value, &name).unwrap_or_default(),
            "tls" => config.tls = sections.one(value, &name),
            "audit" => config.audit = sections.one(value, &name),
            "guards" => config.guards = sections.one(value, &name).unwrap_or_default(),
            "masking" => config.masking = sections.one(value, &name).unwrap_or_default(),
            "users" => (config.users, indices.users) = sections.list(value, &name),
            "routes" => (config.routes, indices.routes) = sections.list(value, &name),
            "labels" => (config.labels, indices.labels) = sections.list(value, &name),
            "rules" => (config.rules, indices.rules) = sections.list(value, &name),
            _ => sections.errors.push(locator.at_offset(
                Some(key.span().start),
                &name,
                format!("unknown section `{name}` (expected one of {SECTIONS})"),
            )),
        }
    }
    let Sections { errors, incomplete, .. } = sections;
    Ok(Parsed { config, locator, indices, errors, incomplete, tainted, secrets })
}

/// Walks the tree once: interpolates strings, records where every path is.
struct Walk<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    locator: &'a mut Locator,
    errors: Vec<ConfigError>,
    tainted: HashSet<String>,
    secrets: Vec<Secret>,
}

impl Walk<'_> {
    fn visit(&mut self, path: String, key_span: Option<Range<usize>>, value: &mut Spanned<DeValue<'_>>) {
        let span = value.span();
        let at = key_span.map_or(span.start, |k| k.start);
        self.locator.offsets.entry(path.clone()).or_insert(at);
        self.locator.values.push((path.clone(), span.clone()));
        match value.get_mut() {
            DeValue::String(s) => match interpolate(s, self.env) {
                Ok(done) => {
                    if done.used_env {
                        let value = done.text.clone();
                        self.secrets.push(Secret { path: path.clone(), span, value });
                    }
                    if done.text != **s {
                        *s = done.text.into();
                    }
                }
                Err(errs) => {
                    for e in errs {
                        self.errors.push(self.locator.at_offset(Some(span.start), &path, e.to_string()));
                    }
                    self.tainted.insert(path);
                }
            },
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.visit(format!("{path}[{i}]"), None, item);
                }
            }
            DeValue::Table(table) => {
                for (k, v) in table.iter_mut() {
                    self.visit(format!("{path}.{}", k.get_ref()), Some(k.span()), v);
                }
            }
            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
        }
    }
}

/// Deserialises sections and list elements one at a time.
struct Sections<'a> {
    locator: &'a Locator,
    secrets: &'a [Secret],
    errors: Vec<ConfigError>,
    incomplete: bool,
}

impl Sections<'_> {
    fn one<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>, path: &str) -> Option<T> {
        let mut unknown = Vec::new();
        let result = serde_ignored::deserialize(ValueDeserializer::from(value), |p| {
            let mut full = path.to_owned();
            push_path(&p, &mut full);
            unknown.push(full);
        });
        for key in unknown {
            let name = key.rsplit(['.', '[']).next().unwrap_or(&key).to_owned();
            self.errors.push(self.locator.error(&key, format!("unknown key `{name}`")));
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.incomplete = true;
                let span = e.span();
                let at = span.as_ref().map_or_else(|| path.to_owned(), |s| self.locator.path_of(s, path));
                let message = friendly(&self.hide_secrets(e.message(), span.as_ref()));
                self.errors.push(self.locator.at_offset(span.map(|s| s.start), &at, message));
                None
            }
        }
    }

    fn list<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>, path: &str) -> (Vec<T>, Vec<usize>) {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.incomplete = true;
            self.errors.push(self.locator.at_offset(
                Some(span.start),
                path,
                format!("must be an array of tables: write [[{path}]] sections"),
            ));
            return (Vec::new(), Vec::new());
        };
        let mut out = Vec::new();
        let mut indices = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if let Some(v) = self.one(item, &format!("{path}[{i}]")) {
                out.push(v);
                indices.push(i);
            }
        }
        (out, indices)
    }

    /// serde quotes the offending value in its messages; never show one that came from the
    /// environment.
    fn hide_secrets(&self, message: &str, span: Option<&Range<usize>>) -> String {
        let mut message = message.to_owned();
        for Secret { span: s, value, .. } in self.secrets {
            let hit = span.is_some_and(|e| s.start <= e.start && e.end <= s.end);
            if hit && !value.is_empty() {
                message = message.replace(&format!("{value:?}"), "\"***\"").replace(&format!("`{value}`"), "`***`");
            }
        }
        message
    }
}

/// Rewrites serde's Rust type names into words a config author knows.
fn friendly(message: &str) -> String {
    let mut m = message.to_owned();
    for int in ["usize", "u64", "u32", "u16", "u8"] {
        m = m.replace(&format!("expected {int}"), "expected a whole number >= 0");
    }
    if let Some(cut) = m.find("expected struct ") {
        m.truncate(cut);
        m.push_str("expected a table");
    }
    m
}

/// Appends a `serde_ignored` path in our `a.b[0].c` notation.
fn push_path(p: &serde_ignored::Path<'_>, out: &mut String) {
    use serde_ignored::Path;
    match p {
        Path::Root => {}
        Path::Seq { parent, index } => {
            push_path(parent, out);
            out.push_str(&format!("[{index}]"));
        }
        Path::Map { parent, key } => {
            push_path(parent, out);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            push_path(parent, out)
        }
    }
}
