//! Grayscale images out: a grid of small images (digits, reconstructions, samples) tiled into
//! one picture and written as an 8-bit grayscale PNG, so an example's output can be looked at.
//!
//! The PNG encoder is the format's minimum — signature, `IHDR`, one `IDAT` of zlib-compressed
//! scanlines (filter 0), `IEND`, each chunk with its CRC-32 — built on `flate2`, which Kiln
//! already uses to read gzipped datasets (its zlib stream and its CRC-32 are the ones PNG
//! specifies), so no image crate is needed.

use crate::error::{invalid, Error, Result};
use std::io::Write;
use std::path::Path;

/// An 8-bit grayscale image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gray {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width · height` intensities, 0 black to 255 white.
    pub pixels: Vec<u8>,
}

/// Tile `images` (each `h · w` values, 0 black to 1 white; values outside are clamped, NaN is
/// black) into `rows` × `cols` cells separated and surrounded by `gap` pixels of mid-gray, row
/// by row. Fewer images than cells leave the rest blank.
pub fn grid(images: &[&[f32]], h: usize, w: usize, cols: usize, gap: usize) -> Result<Gray> {
    if h == 0 || w == 0 || cols == 0 {
        return invalid("image::grid", format!("cells of {h}×{w} in {cols} columns"));
    }
    if let Some((i, im)) = images.iter().enumerate().find(|(_, im)| im.len() != h * w) {
        return invalid(
            "image::grid",
            format!("image {i} has {} values, not {h}×{w} = {}", im.len(), h * w),
        );
    }
    let rows = images.len().div_ceil(cols).max(1);
    let width = cols * (w + gap) + gap;
    let height = rows * (h + gap) + gap;
    let mut pixels = vec![128u8; width * height];
    for (k, im) in images.iter().enumerate() {
        let (top, left) = (gap + (k / cols) * (h + gap), gap + (k % cols) * (w + gap));
        for y in 0..h {
            for x in 0..w {
                let v = im[y * w + x];
                let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                pixels[(top + y) * width + left + x] = (v * 255.0).round() as u8;
            }
        }
    }
    Ok(Gray { width, height, pixels })
}

impl Gray {
    /// The image as PNG bytes (8-bit grayscale, no interlace).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        if self.width == 0 || self.height == 0 || self.pixels.len() != self.width * self.height {
            return invalid(
                "Gray::to_png",
                format!("{} pixels for {}×{}", self.pixels.len(), self.width, self.height),
            );
        }
        let (w, h) = (u32::try_from(self.width), u32::try_from(self.height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return invalid("Gray::to_png", "dimensions beyond 2³² pixels");
        };
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        // Bit depth 8, colour type 0 (grayscale), deflate, adaptive filtering, no interlace.
        ihdr.extend([8, 0, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        // Each scanline is preceded by its filter type, 0 (none).
        let mut raw = Vec::with_capacity((self.width + 1) * self.height);
        for row in self.pixels.chunks(self.width) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let io = |e: std::io::Error| Error::Io(format!("compressing a PNG: {e}"));
        z.write_all(&raw).map_err(io)?;
        chunk(&mut out, b"IDAT", &z.finish().map_err(io)?);
        chunk(&mut out, b"IEND", &[]);
        Ok(out)
    }

    /// The image enlarged `k` times in each direction (nearest neighbour: every pixel becomes a
    /// `k` × `k` block), so that 28×28 digits are big enough to look at.
    pub fn scaled(&self, k: usize) -> Gray {
        let k = k.max(1);
        let width = self.width * k;
        let pixels = (0..self.height * k)
            .flat_map(|y| (0..width).map(move |x| (y / k) * self.width + x / k))
            .map(|i| self.pixels[i])
            .collect();
        Gray {
            width,
            height: self.height * k,
            pixels,
        }
    }

    /// Write the image to `path` as a PNG.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let bytes = self.to_png()?;
        std::fs::write(path, bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }
}

/// Append one PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Read back what `to_png` writes, checking every chunk's CRC: `(width, height, pixels)`.
    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (mut at, mut ihdr, mut idat, mut ended) = (8, None, Vec::new(), false);
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            let mut crc = flate2::Crc::new();
            crc.update(&png[at + 4..at + 8 + len]);
            let stored = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc.sum(), stored, "CRC of {:?}", std::str::from_utf8(kind));
            match kind {
                b"IHDR" => ihdr = Some(data.to_vec()),
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => ended = true,
                k => panic!("unexpected chunk {k:?}"),
            }
            at += 12 + len;
        }
        assert!(ended, "IEND is last");
        let ihdr = ihdr.expect("an IHDR");
        let w = u32::from_be_bytes(ihdr[0..4].try_into().unwrap());
        let h = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
        assert_eq!(&ihdr[8..], &[8, 0, 0, 0, 0]);
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(raw.len(), (w as usize + 1) * h as usize);
        let mut pixels = Vec::new();
        for line in raw.chunks(w as usize + 1) {
            assert_eq!(line[0], 0, "filter type 0");
            pixels.extend_from_slice(&line[1..]);
        }
        (w, h, pixels)
    }

    #[test]
    fn a_grid_round_trips_through_png() {
        let a = [0.0, 0.5, 1.0, 2.0, -1.0, f32::NAN];
        let b = [1.0; 6];
        let g = grid(&[&a, &b, &a], 2, 3, 2, 1).unwrap();
        assert_eq!((g.width, g.height), (2 * 4 + 1, 2 * 3 + 1));
        // The first cell starts at (1, 1); values clamp and round; NaN is black.
        assert_eq!(&g.pixels[g.width + 1..g.width + 4], &[0, 128, 255]);
        assert_eq!(&g.pixels[2 * g.width + 1..2 * g.width + 4], &[255, 0, 0]);
        // The cell after the last image stays gap-gray.
        assert_eq!(g.pixels[4 * g.width + 5], 128);
        let (w, h, pixels) = decode(&g.to_png().unwrap());
        assert_eq!((w as usize, h as usize, pixels), (g.width, g.height, g.pixels.clone()));
        let big = g.scaled(3);
        assert_eq!((big.width, big.height), (3 * g.width, 3 * g.height));
        for (y, x) in [(0, 0), (4, 7), (g.height - 1, g.width - 1)] {
            for (dy, dx) in [(0, 0), (2, 2), (1, 0)] {
                assert_eq!(
                    big.pixels[(3 * y + dy) * big.width + 3 * x + dx],
                    g.pixels[y * g.width + x]
                );
            }
        }
        assert!(grid(&[&a], 2, 2, 2, 1).is_err(), "wrong image size");
        assert!(grid(&[&a], 2, 3, 0, 1).is_err(), "no columns");
    }

    #[test]
    fn the_chunk_crc_is_png_s() {
        // The CRC of an empty IEND chunk is fixed by the PNG specification: ae 42 60 82.
        let mut out = Vec::new();
        chunk(&mut out, b"IEND", &[]);
        assert_eq!(out, [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]);
    }
}
