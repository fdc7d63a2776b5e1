//! `joulerun --basepower`: measure idle power and store it as the baseline.

use crate::cli::RunArgs;
use crate::error::{Error, Result};

pub fn calibrate(_args: &RunArgs) -> Result<i32> {
    Err(Error::failure("--basepower is not wired yet"))
}
