//! Reading a CoverageEligibilityRequest for the FHIR channel: the content type, the JSON,
//! and the few elements eligd needs, each checked with a problem that names the element
//! (a FHIRPath) and never echoes the national ID. Kept apart from rendering so that every
//! way to get a request wrong is tested on its own.

use super::model::*;
use super::{Problem, RESOURCE, SERVICES};
use crate::dates::Day;
use crate::member::Service;
use crate::national_id::{IdError, NationalId};

/// A request as eligd understood it: who, as of when, for which services, and what to echo.
#[derive(Debug)]
pub(super) struct Inquiry {
    pub national_id: NationalId,
    /// The identifier value as the client wrote it (any digit script), echoed in `patient`.
    pub patient_value: String,
    pub patient_reference: Option<String>,
    pub as_of: Day,
    /// `servicedDate` when the request had one (echoed).
    pub serviced_date: Option<Day>,
    pub purposes: Vec<&'static str>,
    pub items: Vec<RequestedItem>,
    /// How the answer's `request` names the request.
    pub request: ReferenceOut,
}

/// One requested service, with the coding system the client named it under (echoed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RequestedItem {
    pub service: Service,
    pub system: Option<String>,
}

/// Accepts `application/fhir+json` and `application/json`, with an optional UTF-8 charset
/// and an optional R4 `fhirVersion`; other parameters are ignored.
pub(super) fn check_content_type(content_type: Option<&str>) -> Result<(), String> {
    const WANTED: &str = "send the request as application/fhir+json (or application/json) in UTF-8";
    let content_type = content_type.ok_or_else(|| format!("no Content-Type; {WANTED}"))?;
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if media != "application/fhir+json" && media != "application/json" {
        return Err(format!("unsupported Content-Type; {WANTED}"));
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_ascii_lowercase();
        match name.as_str() {
            "charset" if value != "utf-8" && value != "utf8" => {
                return Err(format!("unsupported charset; {WANTED}"))
            }
            "fhirversion" if !value.starts_with("4.0") => {
                return Err("this endpoint speaks FHIR R4 (fhirVersion 4.0)".to_string())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads a request body into an [`Inquiry`], or the first problem found in it.
pub(super) fn parse_request(body: &[u8], today: Day) -> Result<Inquiry, Problem> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        let message = format!("the body is empty; send a {RESOURCE}");
        return Err(Problem::new("structure", "invalid_request", message));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| json_problem(&e))?;
    check_resource_type(&value)?;
    let request: RequestIn = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde's message names the offending value (which may be a national ID): keep
        // only what was expected, which comes from the model.
        let expected = inner
            .split_once(", expected ")
            .map(|(_, expected)| expected.split(" at line ").next().unwrap_or(expected))
            .unwrap_or("another type");
        Problem::at(
            "structure",
            "invalid_request",
            &path,
            format!("{path} has the wrong type: expected {expected}"),
        )
    })?;
    let (national_id, patient_value, patient_reference) = patient(&request)?;
    let serviced_date = match request.serviced_date.as_deref() {
        Some(d) => Some(Day::parse_iso(d).map_err(|_| {
            Problem::at(
                "value",
                "invalid_date",
                "servicedDate",
                "servicedDate must be YYYY-MM-DD, a real day between 1900-01-01 and 2199-12-31"
                    .to_string(),
            )
        })?),
        None => None,
    };
    Ok(Inquiry {
        national_id,
        patient_value,
        patient_reference,
        as_of: serviced_date.unwrap_or(today),
        serviced_date,
        purposes: purposes(request.purpose.as_deref())?,
        items: items(&request)?,
        request: request_reference(&request)?,
    })
}

fn json_problem(e: &serde_json::Error) -> Problem {
    let message = match e.classify() {
        serde_json::error::Category::Eof => "the body ends before its JSON does".to_string(),
        _ => format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    };
    Problem::new("structure", "invalid_request", message)
}

fn check_resource_type(value: &serde_json::Value) -> Result<(), Problem> {
    let Some(object) = value.as_object() else {
        let message = format!("the body must be a JSON object, a FHIR {RESOURCE}");
        return Err(Problem::new("structure", "invalid_request", message));
    };
    match object.get("resourceType").and_then(|t| t.as_str()) {
        Some(RESOURCE) => Ok(()),
        None => Err(Problem::at(
            "required",
            "invalid_request",
            "resourceType",
            format!("resourceType is required and must be {RESOURCE}"),
        )),
        Some(other) => {
            // Echo a resource type only when it looks like one (never free text).
            let named = if (1..=64).contains(&other.len())
                && other.bytes().all(|b| b.is_ascii_alphabetic())
            {
                format!(" {other}")
            } else {
                String::new()
            };
            Err(Problem::new(
                "not-supported",
                "invalid_request",
                format!("this endpoint takes a {RESOURCE}, not the resource{named}"),
            ))
        }
    }
}

/// The national ID in `patient.identifier`, its value as written, and `patient.reference`.
fn patient(request: &RequestIn) -> Result<(NationalId, String, Option<String>), Problem> {
    let what = format!("a reference with an identifier of system {NATIONAL_ID_SYSTEM}");
    let Some(patient) = &request.patient else {
        let message = format!("patient is required: {what}");
        return Err(Problem::at(
            "required",
            "invalid_request",
            "patient",
            message,
        ));
    };
    let Some(identifier) = &patient.identifier else {
        let message =
            format!("patient.identifier is required ({what}); Patient references are not resolved");
        return Err(Problem::at(
            "required",
            "invalid_request",
            "patient.identifier",
            message,
        ));
    };
    if identifier.system.as_deref() != Some(NATIONAL_ID_SYSTEM) {
        let message = format!("patient.identifier.system must be {NATIONAL_ID_SYSTEM}");
        return Err(Problem::at(
            "value",
            "invalid_request",
            "patient.identifier.system",
            message,
        ));
    }
    let raw = identifier.value.as_deref().unwrap_or("");
    let id = NationalId::parse_typed(raw).map_err(|e| {
        let issue = if e == IdError::Empty {
            "required"
        } else {
            "value"
        };
        Problem::national_id(issue, e)
    })?;
    let reference = echoable(patient.reference.as_deref());
    Ok((id, raw.trim().to_string(), reference))
}

/// The purposes to echo: R4 requires at least one, from a fixed value set; a request
/// without any is read as `validation` (is the coverage in force?).
fn purposes(purpose: Option<&[String]>) -> Result<Vec<&'static str>, Problem> {
    let Some(purpose) = purpose else {
        return Ok(vec!["validation"]);
    };
    if purpose.is_empty() {
        let message = format!("purpose must hold at least one of {}", PURPOSES.join(", "));
        return Err(Problem::at(
            "required",
            "invalid_request",
            "purpose",
            message,
        ));
    }
    purpose
        .iter()
        .enumerate()
        .map(|(i, p)| {
            PURPOSES
                .iter()
                .copied()
                .find(|known| known == p)
                .ok_or_else(|| {
                    Problem::at(
                        "code-invalid",
                        "invalid_request",
                        &format!("purpose[{i}]"),
                        format!("purpose[{i}] must be one of {}", PURPOSES.join(", ")),
                    )
                })
        })
        .collect()
}

/// One requested service per `item`, named by the first coding of its category whose code
/// is a service of docs/records.md.
fn items(request: &RequestIn) -> Result<Vec<RequestedItem>, Problem> {
    request
        .item
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("item[{i}].category");
            let Some(category) = &item.category else {
                let message = format!("{at} is required: a coding whose code is one of {SERVICES}");
                return Err(Problem::at("required", "invalid_service", &at, message));
            };
            category
                .coding
                .iter()
                .find_map(|c| {
                    let service = Service::parse(c.code.as_deref()?.trim())?;
                    let system = c.system.clone().filter(|s| is_uri(s));
                    Some(RequestedItem { service, system })
                })
                .ok_or_else(|| {
                    let message = format!("{at} names no known service; services are {SERVICES}");
                    Problem::at("code-invalid", "invalid_service", &at, message)
                })
        })
        .collect()
}

/// How the answer's `request` names the request: by `id` (a relative reference) and/or by
/// its first usable business identifier; a request with neither is named in words.
fn request_reference(request: &RequestIn) -> Result<ReferenceOut, Problem> {
    let reference = match request.id.as_deref() {
        Some(id) if is_fhir_id(id) => Some(format!("{RESOURCE}/{id}")),
        Some(_) => {
            let message = "id must be a FHIR id: 1 to 64 of A-Z a-z 0-9 - .".to_string();
            return Err(Problem::at("value", "invalid_request", "id", message));
        }
        None => None,
    };
    let identifier = request.identifier.iter().find_map(|i| {
        Some(IdentifierOut {
            value: echoable(i.value.as_deref())?,
            system: i.system.clone().filter(|s| is_uri(s)),
        })
    });
    let display = (reference.is_none() && identifier.is_none())
        .then(|| format!("{RESOURCE} without id or identifier"));
    Ok(ReferenceOut {
        reference,
        identifier,
        display,
    })
}
