//! Image thumbnails: decode (with limits, so a small file that claims huge dimensions cannot
//! exhaust memory), shrink to fit a square of `max_px`, encode as JPEG. CPU-bound: callers run
//! it on a blocking thread, one or two at a time.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageReader, Limits};

/// The largest width or height decoded.
const MAX_DIMENSION: u32 = 12_000;
/// The most memory one decode may allocate.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// JPEG quality of thumbnails.
const QUALITY: u8 = 80;

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("the image could not be decoded: {0}")]
    Decode(#[from] image::ImageError),
    #[error("the image could not be read: {0}")]
    Io(#[from] std::io::Error),
}

/// A JPEG thumbnail of `bytes` whose longer side is at most `max_px` (images already smaller
/// keep their size).
pub fn make_thumbnail(bytes: &[u8], max_px: u32) -> Result<Vec<u8>, ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode()?;
    let small = if image.width() > max_px || image.height() > max_px {
        image.thumbnail(max_px, max_px)
    } else {
        image
    };
    // JPEG has no alpha: flatten to RGB.
    let rgb = DynamicImage::ImageRgb8(small.to_rgb8());
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY).encode_image(&rgb)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
        });
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(img)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode png");
        out
    }

    #[test]
    fn thumbnails_fit_the_box() {
        let thumb = make_thumbnail(&png(1000, 500), 100).expect("thumbnail");
        let decoded = image::load_from_memory(&thumb).expect("jpeg");
        assert_eq!((decoded.width(), decoded.height()), (100, 50));
        assert_eq!(&thumb[..2], &[0xFF, 0xD8]);
        let small = make_thumbnail(&png(40, 30), 100).expect("thumbnail");
        let decoded = image::load_from_memory(&small).expect("jpeg");
        assert_eq!((decoded.width(), decoded.height()), (40, 30));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(make_thumbnail(b"not an image at all", 100).is_err());
        let mut truncated = png(200, 200);
        truncated.truncate(60);
        assert!(make_thumbnail(&truncated, 100).is_err());
    }
}
