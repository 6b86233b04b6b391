//! Headers that carry a URL: `Location`, `Content-Location` and `Link`.

use http::HeaderMap;
use http::header::{self, HeaderValue};

use super::CdnUrlSigner;

/// Signs CDN URLs in `Location`, `Content-Location` and `Link` (`<url>; rel=…`).
pub fn rewrite_url_headers(headers: &mut HeaderMap, signer: &CdnUrlSigner) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let signed = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| signer.sign(v.trim()))
            .and_then(|s| HeaderValue::try_from(s.as_str()).ok());
        if let Some(value) = signed {
            headers.insert(name, value);
        }
    }
    let links: Vec<HeaderValue> = headers
        .get_all(header::LINK)
        .iter()
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| sign_link_header(text, signer))
                .and_then(|s| HeaderValue::try_from(s).ok())
                .unwrap_or_else(|| value.clone())
        })
        .collect();
    if !links.is_empty() {
        headers.remove(header::LINK);
        for link in links {
            headers.append(header::LINK, link);
        }
    }
}

fn sign_link_header(text: &str, signer: &CdnUrlSigner) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 256);
    let mut changed = false;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        out.push_str(&rest[..=open]);
        let url = &rest[open + 1..open + close];
        match signer.sign(url) {
            Some(signed) => {
                out.push_str(&signed);
                changed = true;
            }
            None => out.push_str(url),
        }
        rest = &rest[open + close..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::{H, cdn, signer};

    #[test]
    fn url_headers_are_signed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::try_from(cdn(H)).expect("value"),
        );
        headers.insert(
            header::LINK,
            HeaderValue::try_from(format!(
                "<{}>; rel=preload; as=image, </app.css>; rel=preload",
                cdn(H)
            ))
            .expect("value"),
        );
        rewrite_url_headers(&mut headers, &signer());
        assert!(
            headers[header::LOCATION]
                .to_str()
                .expect("ascii")
                .contains("policy=")
        );
        let link = headers[header::LINK].to_str().expect("ascii");
        assert!(
            link.contains("policy=") && link.ends_with("</app.css>; rel=preload"),
            "{link}"
        );
    }
}
