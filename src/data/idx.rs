//! The IDX file format (LeCun's MNIST distribution format), gzipped or raw.
//!
//! Layout: a big-endian u32 magic `0x0000_08_NN` (0x08 = unsigned bytes, NN = number of
//! dimensions), one big-endian u32 per dimension, then the data. Every header field and the
//! data length are checked, so a corrupt or truncated file is an error naming the file.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data.
    pub data: Vec<u8>,
}

/// Read an IDX file; `.gz` content is recognised by its magic bytes, not its name.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::Io(format!("{}: corrupt gzip data: {e}", path.display())))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// Parse IDX bytes.
pub fn parse_idx(b: &[u8]) -> std::result::Result<IdxArray, String> {
    if b.len() < 4 {
        return Err(format!("{} bytes is too short for an IDX header", b.len()));
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(format!(
            "bad magic {:02x}{:02x}{:02x}{:02x}: not an IDX file",
            b[0], b[1], b[2], b[3]
        ));
    }
    if b[2] != 0x08 {
        return Err(format!(
            "element type 0x{:02x} is not supported (only 0x08, unsigned bytes)",
            b[2]
        ));
    }
    let nd = b[3] as usize;
    if nd == 0 || b.len() < 4 + 4 * nd {
        return Err(format!(
            "header declares {nd} dimensions but the file has {} bytes",
            b.len()
        ));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("dimensions overflow")?;
    let body = &b[4 + 4 * nd..];
    if body.len() != n {
        return Err(format!(
            "dimensions {dims:?} need {n} data bytes but the file has {} (truncated or corrupt)",
            body.len()
        ));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut ok = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        ok.extend([1, 2, 3, 4, 5, 6]);
        assert_eq!(
            parse_idx(&ok).unwrap(),
            IdxArray {
                dims: vec![2, 3],
                data: vec![1, 2, 3, 4, 5, 6]
            }
        );
        assert!(parse_idx(&ok[..ok.len() - 1]).unwrap_err().contains("truncated"));
        let mut bad = ok.clone();
        bad[0] = 7;
        assert!(parse_idx(&bad).unwrap_err().contains("magic"));
        let mut wrong_type = ok.clone();
        wrong_type[2] = 0x0d;
        assert!(parse_idx(&wrong_type).is_err());
        assert!(parse_idx(&[0, 0, 8]).is_err());
        assert!(parse_idx(&[0, 0, 8, 3, 0, 0]).is_err());
    }
}
