//! Offline developer tools behind `dgf audit ...` and `dgf rules ...`: audit chain verification
//! and tailing, policy explanation and table-driven policy tests.
//!
//! Every tool writes its report to a caller-supplied writer and returns an [`Outcome`]; the binary
//! maps it to the process exit code (0 success, 1 a check failed, 2 the tool could not run).

pub mod audit;
pub mod rules;

use std::path::PathBuf;

/// What a tool found (when it could run at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked out.
    Ok,
    /// A check failed (broken chain, failing policy case): exit code 1.
    Failed,
}

impl Outcome {
    /// Process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
        }
    }
}

/// Why a tool could not run. All of them exit with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A file could not be read (or the output could not be written).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (`-` for standard output).
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The audit layer refused (file unreadable, bad path).
    #[error("{0}")]
    Audit(#[from] dgf_rules::audit::AuditError),
    /// The configuration file is invalid (every problem, one per line).
    #[error("{0}")]
    Config(String),
    /// The policy in the configuration does not compile.
    #[error("{0}")]
    Policy(#[from] dgf_rules::RulesError),
    /// A test-case file is invalid.
    #[error("{}: {message}", path.display())]
    Cases {
        /// The cases file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

impl ToolError {
    /// Process exit code (always 2: the tool could not do its job).
    pub fn exit_code(&self) -> u8 {
        2
    }

    fn stdout(source: std::io::Error) -> Self {
        ToolError::Io { path: PathBuf::from("-"), source }
    }
}

/// Loads and validates a configuration file.
fn load_config(path: &std::path::Path) -> Result<dgf_config::Config, ToolError> {
    dgf_config::load(path).map_err(|e| ToolError::Config(e.to_string()))
}
