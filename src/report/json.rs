//! The JSON summary (schema in docs/output-formats.md).

use std::io::Write;

use super::Summary;

pub fn write(summary: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, summary)?;
    out.write_all(b"\n")?;
    out.flush()
}
