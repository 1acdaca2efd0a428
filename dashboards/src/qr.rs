//! QR codes drawn by the server as SVG (the TOTP enrolment code: the secret never leaves the server
//! for a third-party renderer, and the page needs no script). One `<path>` of unit squares, a four-module
//! quiet zone, colours as attributes (the CSP allows no inline style).

use qrcodegen::{QrCode, QrCodeEcc};

use crate::{Error, Result};

/// Modules of quiet zone around the code (the standard's minimum).
const QUIET: i32 = 4;

/// `text` as a QR code (error correction M), an SVG `pixels` wide, labelled `label` for screen readers.
pub fn svg(text: &str, pixels: u32, label: &str) -> Result<String> {
    let code = QrCode::encode_text(text, QrCodeEcc::Medium).map_err(|e| {
        Error::Qr(format!(
            "{} characters do not fit a QR code: {e:?}",
            text.len()
        ))
    })?;
    let size = code.size();
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if code.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + QUIET, y + QUIET));
            }
        }
    }
    let side = size + 2 * QUIET;
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" width=\"{pixels}\" \
         height=\"{pixels}\" shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"{}\">\
         <rect width=\"{side}\" height=\"{side}\" fill=\"#ffffff\"/>\
         <path d=\"{path}\" fill=\"#000000\"/></svg>",
        escape(label)
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read our SVG back into pixels (its path of unit squares, 4 pixels per module) and decode them
    /// with another library.
    fn decode(svg: &str) -> String {
        let view = svg
            .split("viewBox=\"0 0 ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .expect("viewBox");
        let d = svg
            .split("<path d=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("path");
        let mut dark = vec![false; view * view];
        for square in d.split('M').filter(|s| !s.is_empty()) {
            let (x, rest) = square.split_once(',').expect("x,y");
            let y = rest.split('h').next().expect("y");
            let (x, y): (usize, usize) = (x.parse().expect("x"), y.parse().expect("y"));
            dark[y * view + x] = true;
        }
        const SCALE: usize = 4;
        let side = view * SCALE;
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
            if dark[(y / SCALE) * view + x / SCALE] {
                0
            } else {
                255
            }
        });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one code in the picture");
        grids[0].decode().expect("decodes").1
    }

    #[test]
    fn the_code_reads_back_as_its_text_and_the_svg_has_no_style_or_script() {
        let uri = crate::totp::Totp::generate().uri("Kartoteka", "olga@example.org");
        let svg = svg(&uri, 240, "QR-код для приложения \"Authenticator\"").expect("svg");
        assert_eq!(decode(&svg), uri);
        assert!(!svg.contains("style") && !svg.contains("<script"), "{svg}");
        assert!(svg.contains("aria-label=\"QR-код для приложения &quot;Authenticator&quot;\""));
        assert!(
            super::svg(&"x".repeat(5000), 240, "").is_err(),
            "too long for a QR code"
        );
    }
}
