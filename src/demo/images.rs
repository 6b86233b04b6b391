//! The demo's pictures: pop-art panels drawn at start, and a nearest-neighbour `resize` for PNGs.

use std::io::Cursor;

/// A drawn picture: a 2×2 grid of colour panels, each with a disc, in the manner of a silkscreen.
pub fn pop_art_png(size: u32, palette: [[u8; 3]; 4], disc: [[u8; 3]; 4]) -> Vec<u8> {
    let half = size / 2;
    let radius = (half as f32) * 0.36;
    let mut pixels = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        for x in 0..size {
            let panel = usize::from(x >= half) + 2 * usize::from(y >= half);
            let cx = (x % half) as f32 - half as f32 / 2.0;
            let cy = (y % half) as f32 - half as f32 / 2.0;
            let distance = (cx * cx + cy * cy).sqrt();
            let dots = ((x / 6 + y / 6) % 2 == 0) && distance > radius * 1.15;
            let colour = if distance < radius {
                disc[panel]
            } else if dots {
                palette[(panel + 1) % 4]
            } else {
                palette[panel]
            };
            pixels.extend_from_slice(&colour);
        }
    }
    encode_png(size, size, png::ColorType::Rgb, &pixels).unwrap_or_default()
}

fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    pixels: &[u8],
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

/// Scales a PNG to `width` pixels wide (aspect kept), nearest neighbour. `None` if the bytes
/// are not a PNG this can read; callers then serve the original.
pub fn resize_png(bytes: &[u8], width: u32) -> Option<Vec<u8>> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().ok()?;
    let mut buffer = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buffer).ok()?;
    let channels = info.color_type.samples();
    let (src_w, src_h) = (info.width, info.height);
    let width = width.clamp(1, 4000);
    let height = ((u64::from(src_h) * u64::from(width)) / u64::from(src_w.max(1))).max(1) as u32;
    let mut out = Vec::with_capacity((width * height) as usize * channels);
    for y in 0..height {
        let sy = (u64::from(y) * u64::from(src_h) / u64::from(height)) as usize;
        let row = &buffer[sy * info.line_size..];
        for x in 0..width {
            let sx = (u64::from(x) * u64::from(src_w) / u64::from(width)) as usize;
            out.extend_from_slice(&row[sx * channels..(sx + 1) * channels]);
        }
    }
    encode_png(width, height, info.color_type, &out).ok()
}

/// Width and height of a PNG, read from its header.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let reader = png::Decoder::new(Cursor::new(bytes)).read_info().ok()?;
    let info = reader.info();
    Some((info.width, info.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_pictures_resize_to_the_asked_width() {
        let png = pop_art_png(
            64,
            [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]],
            [[0; 3]; 4],
        );
        assert_eq!(png_size(&png), Some((64, 64)));
        let small = resize_png(&png, 16).expect("resizes");
        assert_eq!(png_size(&small), Some((16, 16)));
        assert_eq!(resize_png(b"not a png", 10), None);
    }
}
