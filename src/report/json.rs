//! The JSON summary (schema in docs/output-formats.md).

use std::io::Write;

use super::Summary;

/// The summary as pretty-printed JSON with a final newline.
pub fn to_bytes(summary: &Summary) -> std::io::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?;
    v.push(b'\n');
    Ok(v)
}

pub fn write(summary: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(&to_bytes(summary)?)?;
    out.flush()
}
