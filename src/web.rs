//! The page for people (docs/contract.md §4): `GET /` and the files of the installable app, all
//! embedded in the binary (web/), loaded from nowhere else, under a strict
//! Content-Security-Policy. The page asks `POST /v1/public/credit` (channels/public.rs).
//! `--no-public-page` removes both.

use std::io::Write;
use std::sync::LazyLock;

use flate2::write::GzEncoder;
use flate2::Compression;
use hyper::header::{
    GetAll, HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING,
    CACHE_CONTROL as CACHE_CONTROL_HEADER, CONTENT_ENCODING, ETAG, IF_NONE_MATCH, VARY,
};
use sha2::{Digest, Sha256};

use crate::channels::Reply;

/// Only this server's own files; no inline script or style; the camera's stream may play.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     media-src 'self' blob: mediastream:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The files, by path: content type and bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "/page.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/page.js"),
    ),
    (
        "/code128.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/code128.js"),
    ),
    (
        "/page.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/page.css"),
    ),
    (
        "/sw.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/sw.js"),
    ),
    (
        "/manifest.webmanifest",
        "application/manifest+json",
        include_bytes!("../web/manifest.webmanifest"),
    ),
    (
        "/icon-192.png",
        "image/png",
        include_bytes!("../web/icon-192.png"),
    ),
    (
        "/icon-512.png",
        "image/png",
        include_bytes!("../web/icon-512.png"),
    ),
];

/// How the page's files may be cached: stored, but checked with the server before each use
/// (`If-None-Match` answered 304 without a body while the file is the same), so a new
/// version shows at once and an unchanged file costs a round trip, not its bytes.
const CACHE_CONTROL: &str = "no-cache";

/// A file as served: its bytes, its gzip encoding when that is smaller (text), and a strong
/// ETag for each (the gzip one differs: another representation, another validator).
struct Prepared {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: HeaderValue,
    gzip: Option<(Vec<u8>, HeaderValue)>,
}

/// The files prepared once, on first use: hashed and, text, compressed.
static PREPARED: LazyLock<Vec<Prepared>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(path, content_type, body)| {
            let hash = Sha256::digest(body);
            let tag: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
            let etag = |suffix: &str| {
                HeaderValue::from_str(&format!("\"{tag}{suffix}\"")).expect("hex is a valid header")
            };
            // Text only: images are compressed already.
            let packed = (!content_type.starts_with("image/"))
                .then(|| gzip(body))
                .filter(|packed| packed.len() < body.len())
                .map(|packed| (packed, etag("-gz")));
            Prepared {
                path,
                content_type,
                body,
                etag: etag(""),
                gzip: packed,
            }
        })
        .collect()
});

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(body).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// The route pattern each file is counted under (closed set: the paths themselves).
pub fn route(path: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(p, _, _)| *p)
}

/// The file at `path` (a path [`route`] knows), gzipped when the request accepts it, or 304
/// without a body when its `If-None-Match` names the ETag it would get.
pub fn file(path: &str, request: &HeaderMap) -> Reply {
    let Some(file) = PREPARED.iter().find(|f| f.path == path) else {
        return Reply::text(String::new(), "not_found");
    };
    let gzipped = file
        .gzip
        .as_ref()
        .filter(|_| accepts_gzip(request.get_all(ACCEPT_ENCODING)));
    let etag = gzipped.map_or(&file.etag, |(_, etag)| etag);
    let mut headers = vec![
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CSP),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
        (
            CACHE_CONTROL_HEADER,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (ETAG, etag.clone()),
    ];
    if file.gzip.is_some() {
        headers.push((VARY, HeaderValue::from_static("Accept-Encoding")));
    }
    if not_modified(request.get_all(IF_NONE_MATCH), etag) {
        return Reply {
            status: 304,
            content_type: "",
            body: Vec::new(),
            outcome: "not_modified",
            headers,
        };
    }
    let body = match gzipped {
        Some((packed, _)) => {
            headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
            packed.clone()
        }
        None => file.body.to_vec(),
    };
    Reply {
        status: 200,
        content_type: file.content_type,
        body,
        outcome: "ok",
        headers,
    }
}

/// Whether `Accept-Encoding` allows gzip: named (or `*`) with a weight above 0, and not
/// refused by name.
fn accepts_gzip(values: GetAll<'_, HeaderValue>) -> bool {
    let mut star = false;
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for coding in value.split(',') {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let weight = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| v.trim().parse::<f32>().ok())?
                })
                .unwrap_or(1.0);
            if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                return weight > 0.0;
            }
            if name == "*" {
                star = weight > 0.0;
            }
        }
    }
    star
}

/// Whether `If-None-Match` names `etag` (or is `*`): weak comparison, as RFC 9110 §13.1.2 asks.
fn not_modified(values: GetAll<'_, HeaderValue>, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    values.into_iter().any(|value| {
        value.as_bytes().split(|b| *b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_policy_and_loads_only_from_here() {
        for (path, _, body) in FILES {
            let reply = file(path, &HeaderMap::new());
            assert_eq!(reply.status, 200);
            assert!(reply
                .headers
                .iter()
                .any(|(n, v)| n == "content-security-policy" && v == CSP));
            let text = String::from_utf8_lossy(body);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} loads from outside"
            );
        }
        let html = String::from_utf8_lossy(FILES[0].2);
        assert!(html.contains("lang=\"fa\" dir=\"rtl\""));
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "no inline script or style"
        );
        assert!(
            html.contains("<meta name=\"description\""),
            "a meta description"
        );
    }

    fn request(headers: &[(&'static str, &str)]) -> HeaderMap {
        headers
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_static(n),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn text_is_gzipped_when_accepted_and_each_encoding_has_its_own_etag() {
        let plain = file("/page.js", &HeaderMap::new());
        assert_eq!(plain.body, FILES[1].2);
        assert_eq!(header(&plain, "content-encoding"), None);
        assert_eq!(header(&plain, "cache-control"), Some("no-cache"));
        assert_eq!(header(&plain, "vary"), Some("Accept-Encoding"));
        let packed = file("/page.js", &request(&[("accept-encoding", "gzip, br")]));
        assert_eq!(header(&packed, "content-encoding"), Some("gzip"));
        assert!(packed.body.len() < plain.body.len() / 2, "compressed");
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed.body[..]),
            &mut unpacked,
        )
        .unwrap();
        assert_eq!(unpacked, plain.body);
        let (a, b) = (
            header(&plain, "etag").unwrap(),
            header(&packed, "etag").unwrap(),
        );
        assert!(a.starts_with('"') && !a.starts_with("W/"), "strong: {a}");
        assert_ne!(a, b);
        // Refused by weight, or only other codings: as it is.
        for refused in ["gzip;q=0", "br", "identity", "*;q=0", "gzip; q=0.0, *"] {
            let reply = file("/page.js", &request(&[("accept-encoding", refused)]));
            assert_eq!(header(&reply, "content-encoding"), None, "{refused}");
        }
        assert!(
            file("/page.js", &request(&[("accept-encoding", "*")]))
                .body
                .len()
                < plain.body.len()
        );
        // Images are not compressed again, and need no Vary.
        let icon = file("/icon-192.png", &request(&[("accept-encoding", "gzip")]));
        assert_eq!(header(&icon, "content-encoding"), None);
        assert_eq!(header(&icon, "vary"), None);
        assert!(header(&icon, "etag").is_some());
    }

    #[test]
    fn if_none_match_with_the_etag_is_answered_304_without_a_body() {
        let first = file("/", &request(&[("accept-encoding", "gzip")]));
        let etag = header(&first, "etag").unwrap().to_string();
        for sent in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let again = file(
                "/",
                &request(&[("accept-encoding", "gzip"), ("if-none-match", &sent)]),
            );
            assert_eq!(again.status, 304, "{sent}");
            assert!(again.body.is_empty());
            assert_eq!(header(&again, "etag"), Some(etag.as_str()));
            assert_eq!(header(&again, "content-encoding"), None);
        }
        // The gzip ETag does not stand for the uncompressed file, nor an unknown one for any.
        let plain = file("/", &request(&[("if-none-match", &etag)]));
        assert_eq!((plain.status, plain.body.len()), (200, FILES[0].2.len()));
        let other = file("/", &request(&[("if-none-match", "\"0123\"")]));
        assert_eq!(other.status, 200);
    }
}
