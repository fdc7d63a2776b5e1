//! The one error type that reaches `main`: a message for the user and the exit status.
//!
//! Exit statuses of joulerun itself (documented in README.md):
//! - the command's own status when it ran; 128+N when it died of signal N;
//! - 2: bad usage (flags, values, files named on the command line);
//! - 125: joulerun itself failed (no usable energy source with `--source X`, an output
//!   file that cannot be written, a corrupt baseline...);
//! - 126: the command exists but cannot be executed; 127: the command was not found.

use std::fmt;

pub const EXIT_USAGE: i32 = 2;
pub const EXIT_FAILURE: i32 = 125;
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub code: i32,
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    pub fn failure(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    pub fn with_code(message: impl Into<String>, code: i32) -> Error {
        Error {
            message: message.into(),
            code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
