//! The page for people (docs/contract.md §4): `GET /` and the files of the installable app, all
//! embedded in the binary (web/), loaded from nowhere else, under a strict
//! Content-Security-Policy. The page asks `POST /v1/public/credit` (channels/public.rs).
//! `--no-public-page` removes both.

use hyper::header::{HeaderName, HeaderValue};

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

/// The route pattern each file is counted under (closed set: the paths themselves).
pub fn route(path: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(p, _, _)| *p)
}

/// The file at `path` (a path [`route`] knows).
pub fn file(path: &str) -> Reply {
    let Some((_, content_type, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return Reply::text(String::new(), "not_found");
    };
    Reply {
        status: 200,
        content_type,
        body: body.to_vec(),
        outcome: "ok",
        headers: vec![
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
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_the_policy_and_loads_only_from_here() {
        for (path, _, body) in FILES {
            let reply = file(path);
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
    }
}
