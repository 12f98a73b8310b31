//! dgf configuration: the TOML schema, `${ENV}` interpolation, validation that reports every
//! error at once (with file:line:column), the embedded default, and upstream URL parsing.
//!
//! ```text
//! text --toml--> spanned tree --interpolate strings--> typed sections --validate--> Config
//! ```
//! Interpolation happens on parsed string values, never on the raw text, so a secret containing
//! a quote cannot change the TOML. See `docs/configuration.md` for the user-facing reference.

#![forbid(unsafe_code)]

mod interpolate;
mod mask;
pub mod model;
mod parse;
mod password;
mod summary;
mod upstream;
mod validate;

pub use interpolate::InterpolateError;
pub use mask::{parse_mask_spec, MaskSpec};
pub use model::*;
pub use password::{parse_password, PasswordForm};
pub use upstream::{parse_upstream, MySslMode, SslMode, Upstream};
pub use validate::PROVIDERS;

use std::fmt;
use std::path::Path;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_error(self))]
pub struct ConfigError {
    /// File name as given to [`load`] / [`parse_str`].
    pub file: String,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters).
    pub column: Option<usize>,
    /// Config path, e.g. `routes[0].pool.size`; empty for syntax errors.
    pub path: String,
    /// What is wrong. Never contains a value that came from the environment.
    pub message: String,
}

fn render_error(e: &ConfigError) -> String {
    let mut out = e.file.clone();
    if let (Some(line), Some(col)) = (e.line, e.column) {
        out.push_str(&format!(":{line}:{col}"));
    }
    out.push_str(": ");
    if !e.path.is_empty() {
        out.push_str(&e.path);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}

/// All problems at once, in file order; `Display` prints one per line, like
/// `dgf.toml:12:1: routes[0].pool.size: must be >= 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_errors(&self.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn render_errors(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl ConfigErrors {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// Reads and validates the config file at `path`, interpolating from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    parse_str(&src, &file, &|name| std::env::var(name).ok())
}

/// Parses and validates config text. `file_name` only labels errors; `env` resolves `${NAME}`.
pub fn parse_str(src: &str, file_name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut parsed = parse::parse(src, file_name, env).map_err(ConfigErrors)?;
    let mut errors = std::mem::take(&mut parsed.errors);
    let semantic = validate::validate(&parsed.config, &parsed.locator, &parsed.indices, !parsed.incomplete);
    let tainted = |path: &str| {
        parsed.tainted.iter().any(|t| {
            path.strip_prefix(t.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
        })
    };
    errors.extend(semantic.into_iter().filter(|e| !tainted(&e.path)).map(|e| parsed.redact(e)));
    if errors.is_empty() {
        return Ok(parsed.config);
    }
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    Err(ConfigErrors(errors))
}

/// The embedded default config: admin on 127.0.0.1:9930, one Postgres route
/// 127.0.0.1:6432 -> 127.0.0.1:5432, user `postgres` with `trust` (loopback only).
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// The parsed [`DEFAULT_TOML`].
pub fn default_config() -> Config {
    // DEFAULT_TOML is compiled in and needs no environment or files; a unit test proves it
    // parses, so this cannot fail at run time.
    #[allow(clippy::expect_used)]
    parse_str(DEFAULT_TOML, "<default>", &|_| None).expect("embedded default config is valid")
}

#[cfg(test)]
mod tests;
