//! Every route under `/fhir/r4/`, as FHIR clients use them: `GET metadata` (the
//! CapabilityStatement, no key, as clients read it before anything else),
//! `POST CoverageEligibilityRequest/$submit` (IHE FAIS ITI-124) and the plain
//! `POST CoverageEligibilityRequest`, both answered by [`super::CoverageEligibility`] through the channel driver; anything else is
//! an OperationOutcome, never the JSON API's error body. Clients ask for JSON as FHIR lets
//! them: `Accept` (`application/fhir+json`, `application/json`, `*/*`) or `_format`
//! (`json`, which overrides `Accept`); XML is refused with 406.

use serde_json::json;

use super::{outcome_reply, FHIR_JSON};
use crate::app::AppState;
use crate::channels::{driver, fhir};
use crate::channels::{Reply, Request};
use crate::inquiry::ApiError;

pub const METADATA_ROUTE: &str = "/fhir/r4/metadata";
pub const SUBMIT_ROUTE: &str = "/fhir/r4/CoverageEligibilityRequest/$submit";

/// The IHE FAIS operation eligd implements.
const FAIS_SUBMIT: &str =
    "https://profiles.ihe.net/ITI/FAIS/OperationDefinition/IHE.FAIS.CoverageEligibilityRequest.Submit";

/// Answers a request under `/fhir/` (`segments` after `fhir`); returns the route it is
/// counted under.
pub async fn route(state: &AppState, segments: &[&str], request: Request) -> (&'static str, Reply) {
    let negotiated = negotiate(request.query(), request.accept());
    // `$` may arrive percent-encoded.
    let last = segments.last().map(|s| s.replace("%24", "$"));
    let segments: Vec<&str> = match &last {
        Some(l) => segments[..segments.len() - 1]
            .iter()
            .copied()
            .chain([l.as_str()])
            .collect(),
        None => Vec::new(),
    };
    match segments.as_slice() {
        ["r4", "metadata"] => {
            let reply = match (request.method_is(&hyper::Method::GET), negotiated) {
                (false, _) => outcome_reply(state, &ApiError::MethodNotAllowed { allow: "GET" }),
                (true, Err(e)) => outcome_reply(state, &e),
                (true, Ok(())) => capability(state),
            };
            (METADATA_ROUTE, reply)
        }
        ["r4", "CoverageEligibilityRequest"] | ["r4", "CoverageEligibilityRequest", "$submit"] => {
            let route = if segments.len() == 3 {
                SUBMIT_ROUTE
            } else {
                fhir::ROUTE
            };
            let codec = fhir::CoverageEligibility {
                route,
                negotiated,
                today: crate::dates::Day::today(),
            };
            (route, driver::run(state, request, codec).await)
        }
        _ => ("unknown", outcome_reply(state, &ApiError::NotFound)),
    }
}

/// `Ok` when the client accepts FHIR JSON.
fn negotiate(query: Option<&str>, accept: Option<&str>) -> Result<(), ApiError> {
    const ONLY: &str =
        "this server answers FHIR JSON only (application/fhir+json); XML is not supported";
    let format = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "_format")
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    });
    if let Some(format) = format {
        // `+` arrives as a space when the client did not escape it.
        let media = format.replace(' ', "+");
        let media = media.split(';').next().unwrap_or("").trim().to_string();
        return match media.as_str() {
            "json" | "application/json" | "application/fhir+json" => Ok(()),
            // Neither the value nor the header is quoted: no error repeats what was sent.
            _ => Err(ApiError::NotAcceptable(format!("_format: {ONLY}"))),
        };
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(());
    };
    let json = accept.split(',').any(|item| {
        let media = item
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        matches!(
            media.as_str(),
            "*/*" | "application/*" | "application/json" | "application/fhir+json"
        )
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(format!("Accept: {ONLY}")))
    }
}

/// What eligd really supports, as R4 says it: FHIR 4.0.1, JSON, the eligibility request
/// (as a create that stores nothing, and as FAIS `$submit`), and how clients authenticate.
fn capability(state: &AppState) -> Reply {
    let security = if state.keys().is_some() {
        "Every request but this one needs a client key: `Authorization: Bearer eligd_<id>_<secret>` \
         (issued per client and channel; a key for the fhir or any channel). 401 without one, \
         403 for a key of another channel, 429 beyond the key's rate."
    } else {
        "This server runs without client keys (loopback only); deployed, every request but this \
         one needs `Authorization: Bearer eligd_<id>_<secret>`."
    };
    let body = json!({
        "resourceType": "CapabilityStatement",
        "id": "eligd",
        "url": "urn:eligd:capability-statement",
        "version": env!("CARGO_PKG_VERSION"),
        "name": "EligdEligibility",
        "title": "eligd: is this person covered today, and for what?",
        "status": "active",
        "experimental": false,
        "date": crate::dates::rfc3339_utc_ms(state.started_ms()),
        "publisher": "eligd",
        "description": "Eligibility (booklet credit) inquiries by national ID over HL7 FHIR R4. \
             See docs/fhir.md for the request, the mapping of every field and the deviations from IHE FAIS.",
        "kind": "instance",
        "instantiates": ["https://profiles.ihe.net/ITI/FAIS/CapabilityStatement/IHE.FAIS.ClaimsManager"],
        "software": { "name": "eligd", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "eligd eligibility service" },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Answers CoverageEligibilityRequests by national ID (patient.identifier, \
                 system urn:eligd:national-id) with a CoverageEligibilityResponse. Nothing is stored.",
            "security": { "cors": false, "description": security },
            "resource": [{
                "type": "CoverageEligibilityRequest",
                "interaction": [{
                    "code": "create",
                    "documentation": "POST [base]/CoverageEligibilityRequest answers a \
                         CoverageEligibilityResponse at once; the request is not stored."
                }],
                "operation": [{
                    "name": "submit",
                    "definition": FAIS_SUBMIT,
                    "documentation": "IHE FAIS ITI-124 Check Coverage Eligibility: POST \
                         [base]/CoverageEligibilityRequest/$submit with the resource (not a Bundle)."
                }]
            }]
        }]
    });
    Reply {
        status: 200,
        content_type: FHIR_JSON,
        body: body.to_string().into_bytes(),
        outcome: "ok",
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_what_fhir_clients_ask_for_and_xml_is_refused() {
        for (query, accept) in [
            (None, None),
            (None, Some("application/fhir+json")),
            (
                None,
                Some("application/fhir+json;fhirVersion=4.0, application/json;q=0.9"),
            ),
            (None, Some("*/*")),
            (Some("_format=json"), Some("application/fhir+xml")),
            (Some("_format=application/fhir+json"), None),
            (Some("_format=application%2Ffhir%2Bjson"), None),
            (Some("_format=application/fhir json"), None),
        ] {
            assert_eq!(negotiate(query, accept), Ok(()), "{query:?} {accept:?}");
        }
        for (query, accept) in [
            (None, Some("application/fhir+xml")),
            (None, Some("text/xml, application/xml")),
            (Some("_format=xml"), None),
            (
                Some("_format=application/fhir+xml"),
                Some("application/json"),
            ),
        ] {
            let e = negotiate(query, accept).unwrap_err();
            assert_eq!(e.status(), 406, "{query:?} {accept:?}");
            assert!(e.message().contains("JSON only"), "{}", e.message());
            assert!(
                !e.message().contains("xml"),
                "nothing sent is quoted: {}",
                e.message()
            );
        }
    }
}
