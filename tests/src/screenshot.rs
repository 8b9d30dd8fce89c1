//! What QMP `screendump` writes, checked without an image library.
//!
//! A PNG (what the manual shows) is checked by its signature and IHDR
//! header (width, height); a PPM (QEMU's raw `P6` dump) is decoded into
//! pixels so a test can tell a blank screen from one with text on it and
//! see that typing changed it.

use std::collections::HashMap;

/// The eight bytes every PNG file starts with (PNG spec, 5.2).
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// A screendump that is not what it should be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScreenshotError {
    #[error("not a PNG file (signature {0:02x?})")]
    NotPng(Vec<u8>),
    #[error("PNG without an IHDR chunk first")]
    NoIhdr,
    #[error("not a binary PPM (P6) screendump: {0}")]
    NotPpm(&'static str),
}

/// Width and height of a PNG, from its IHDR chunk.
pub fn png_size(bytes: &[u8]) -> Result<(u32, u32), ScreenshotError> {
    if bytes.get(..8) != Some(&PNG_SIGNATURE[..]) {
        return Err(ScreenshotError::NotPng(
            bytes.iter().take(8).copied().collect(),
        ));
    }
    // Signature, then the first chunk: length (4, = 13), type "IHDR",
    // width (4, big-endian), height (4, big-endian), ...
    let be = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    };
    match (be(8), bytes.get(12..16), be(16), be(20)) {
        (Some(13), Some(b"IHDR"), Some(w), Some(h)) => Ok((w, h)),
        _ => Err(ScreenshotError::NoIhdr),
    }
}

/// A decoded screen: 8-bit RGB pixels, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Frame {
    /// Decodes a binary PPM (`P6`, maxval 255), as QEMU's `screendump`
    /// writes it without a `format` (header `P6\n<w> <h>\n255\n`).
    pub fn from_ppm(bytes: &[u8]) -> Result<Self, ScreenshotError> {
        let mut rest = bytes
            .strip_prefix(b"P6")
            .ok_or(ScreenshotError::NotPpm("no P6 magic"))?;
        let mut fields = [0u32; 3];
        for f in &mut fields {
            let start = rest
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .ok_or(ScreenshotError::NotPpm("header cut short"))?;
            rest = &rest[start..];
            let len = rest
                .iter()
                .position(|b| !b.is_ascii_digit())
                .ok_or(ScreenshotError::NotPpm("header cut short"))?;
            *f = std::str::from_utf8(&rest[..len])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ScreenshotError::NotPpm("header field is not a number"))?;
            rest = &rest[len..];
        }
        let [width, height, maxval] = fields;
        if maxval != 255 {
            return Err(ScreenshotError::NotPpm("maxval is not 255"));
        }
        // Exactly one whitespace byte separates the header from the pixels.
        let pixels = rest
            .get(1..)
            .filter(|_| rest.first().is_some_and(u8::is_ascii_whitespace))
            .ok_or(ScreenshotError::NotPpm("no pixel data"))?;
        let len = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(3))
            .ok_or(ScreenshotError::NotPpm("size overflows"))?;
        if pixels.len() != len {
            return Err(ScreenshotError::NotPpm(
                "pixel data length is not width*height*3",
            ));
        }
        Ok(Frame {
            width,
            height,
            rgb: pixels.to_vec(),
        })
    }

    fn pixels(&self) -> impl Iterator<Item = [u8; 3]> + '_ {
        self.rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]])
    }

    /// The most common colour (the console's background).
    pub fn background(&self) -> [u8; 3] {
        let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
        for p in self.pixels() {
            *counts.entry(p).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(c, _)| c)
            .unwrap_or_default()
    }

    /// Pixels that are not the background colour: how much text is shown.
    pub fn ink(&self) -> usize {
        let bg = self.background();
        self.pixels().filter(|p| *p != bg).count()
    }

    /// Pixels that differ from `other` (every pixel if the sizes differ).
    pub fn changed_from(&self, other: &Frame) -> usize {
        if (self.width, self.height) != (other.width, other.height) {
            return self.rgb.len() / 3;
        }
        self.pixels()
            .zip(other.pixels())
            .filter(|(a, b)| a != b)
            .count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = PNG_SIGNATURE.to_vec();
        b.extend(13u32.to_be_bytes());
        b.extend(b"IHDR");
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, 2, 0, 0, 0]);
        b
    }

    #[test]
    fn png_size_comes_from_ihdr() {
        assert_eq!(png_size(&png_header(1280, 800)).unwrap(), (1280, 800));
        // (bytes, error)
        let cases: Vec<(Vec<u8>, ScreenshotError)> = vec![
            (
                b"P6\n1 1\n255\n".to_vec(),
                ScreenshotError::NotPng(b"P6\n1 1\n2".to_vec()),
            ),
            (Vec::new(), ScreenshotError::NotPng(Vec::new())),
            (PNG_SIGNATURE.to_vec(), ScreenshotError::NoIhdr),
            (
                {
                    let mut b = png_header(1, 1);
                    b[12..16].copy_from_slice(b"IDAT");
                    b
                },
                ScreenshotError::NoIhdr,
            ),
        ];
        for (bytes, err) in cases {
            assert_eq!(png_size(&bytes), Err(err));
        }
    }

    fn ppm(w: u32, h: u32, pixels: &[[u8; 3]]) -> Vec<u8> {
        let mut b = format!("P6\n{w} {h}\n255\n").into_bytes();
        for p in pixels {
            b.extend(p);
        }
        b
    }

    #[test]
    fn ppm_decodes_and_counts_ink() {
        let (k, w) = ([0, 0, 0], [170, 170, 170]);
        let blank = Frame::from_ppm(&ppm(3, 2, &[k; 6])).unwrap();
        assert_eq!((blank.width, blank.height), (3, 2));
        assert_eq!(blank.background(), k);
        assert_eq!(blank.ink(), 0);
        let text = Frame::from_ppm(&ppm(3, 2, &[k, w, k, k, w, w])).unwrap();
        assert_eq!(text.ink(), 3);
        assert_eq!(text.changed_from(&blank), 3);
        let other = Frame::from_ppm(&ppm(2, 3, &[k; 6])).unwrap();
        assert_eq!(text.changed_from(&other), 6);
    }

    #[test]
    fn malformed_ppm_is_refused_with_its_reason() {
        // (bytes, reason)
        let cases: &[(&[u8], &str)] = &[
            (b"P3\n1 1\n255\n\0\0\0", "no P6 magic"),
            (b"P6\n1 1", "header cut short"),
            (b"P6\n1 1\n65535\n\0\0\0\0\0\0", "maxval is not 255"),
            (b"P6\n1 1\n255", "header cut short"),
            (
                b"P6\n2 1\n255\n\0\0\0",
                "pixel data length is not width*height*3",
            ),
        ];
        for (bytes, why) in cases {
            assert_eq!(
                Frame::from_ppm(bytes),
                Err(ScreenshotError::NotPpm(why)),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
