//! The slices of the FHIR R4 (4.0.1) resources the FHIR channel reads and writes, as serde
//! structs. Only what eligd reads is modelled on the way in (everything optional, unknown
//! elements ignored, because real clients send much more); the way out is modelled in full
//! for what eligd writes, so every answer has the elements R4 requires (checked by the
//! integration tests against an independent R4 implementation).

use serde::{Deserialize, Serialize};

/// The identifier system of a national ID in `patient.identifier`.
pub const NATIONAL_ID_SYSTEM: &str = "urn:eligd:national-id";
/// The identifier system of the tracking code in the response's `identifier`.
pub const TRACKING_CODE_SYSTEM: &str = "urn:eligd:tracking-code";
/// The identifier system of a treatment insurance booklet number (the member's coverage).
pub const BOOKLET_SYSTEM: &str = "urn:eligd:booklet-no";
/// The code system of eligd's error codes (`member_not_found`, `invalid_national_id`, …).
pub const ERROR_SYSTEM: &str = "urn:eligd:error";
/// The identifier system of insurer codes (`sso`, `salamat`, …).
pub const INSURER_SYSTEM: &str = "urn:eligd:insurer";

/// The codes of R4's `EligibilityRequestPurpose` value set (a required binding).
pub const PURPOSES: [&str; 4] = ["auth-requirements", "benefits", "discovery", "validation"];

// ---- what a client sends ---------------------------------------------------------------

/// A CoverageEligibilityRequest, as far as eligd reads it. `resourceType` is checked on the
/// raw JSON before this is read, so a wrong resource gets its own clear error.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn {
    pub id: Option<String>,
    #[serde(default)]
    pub identifier: Vec<IdentifierIn>,
    pub purpose: Option<Vec<String>>,
    pub patient: Option<ReferenceIn>,
    pub serviced_date: Option<String>,
    #[serde(default)]
    pub item: Vec<ItemIn>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReferenceIn {
    pub reference: Option<String>,
    pub identifier: Option<IdentifierIn>,
}

#[derive(Debug, Default, Deserialize)]
pub struct IdentifierIn {
    pub system: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ItemIn {
    pub category: Option<CodeableConceptIn>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CodeableConceptIn {
    #[serde(default)]
    pub coding: Vec<CodingIn>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CodingIn {
    pub system: Option<String>,
    pub code: Option<String>,
}

// ---- what eligd answers ----------------------------------------------------------------

/// A CoverageEligibilityResponse. Field order follows the R4 element order, so answers read
/// like the specification's examples.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut {
    pub resource_type: &'static str,
    pub meta: MetaOut,
    pub identifier: Vec<IdentifierOut>,
    pub status: &'static str,
    pub purpose: Vec<&'static str>,
    pub patient: ReferenceOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serviced_date: Option<String>,
    pub created: String,
    pub request: ReferenceOut,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    pub insurer: ReferenceOut,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub insurance: Vec<InsuranceOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error: Vec<ErrorOut>,
}

/// The resource's `meta`: `lastUpdated` carries `data_as_of`, the freshness watermark of the
/// data the answer was decided from (every change written to the stream before it is
/// reflected), where any FHIR client reads it (docs/fhir.md).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaOut {
    pub last_updated: String,
}

/// A Reference: R4 lets it carry any of `reference`, `identifier` and `display`; empty
/// parts are left out (FHIR JSON forbids empty values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReferenceOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<IdentifierOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentifierOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InsuranceOut {
    /// R4 requires it (1..1): the member's coverage, named by booklet when there is one.
    pub coverage: ReferenceOut,
    pub inforce: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benefit_period: Option<PeriodOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub item: Vec<ItemOut>,
}

/// A Period with only an end: eligd knows the last covered day, not the first.
#[derive(Debug, Serialize)]
pub struct PeriodOut {
    pub end: String,
}

#[derive(Debug, Serialize)]
pub struct ItemOut {
    pub category: CodeableConceptOut,
    pub excluded: bool,
}

#[derive(Debug, Serialize)]
pub struct CodeableConceptOut {
    pub coding: Vec<CodingOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CodingOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ErrorOut {
    pub code: CodeableConceptOut,
}

/// An OperationOutcome with one issue: how every refused request is answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcomeOut {
    pub resource_type: &'static str,
    pub issue: Vec<IssueOut>,
}

#[derive(Debug, Serialize)]
pub struct IssueOut {
    pub severity: &'static str,
    /// An R4 `IssueType` code (`invalid`, `structure`, `required`, `value`, …).
    pub code: &'static str,
    /// eligd's error code, and the tracking code to quote to support.
    pub details: CodeableConceptOut,
    /// The clear text of the problem; never holds the national ID.
    pub diagnostics: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

// ---- small validators for values echoed back ---------------------------------------------

/// Whether `s` is a valid FHIR `id` (`[A-Za-z0-9\-\.]{1,64}`), so it may go into a relative
/// reference `CoverageEligibilityRequest/<id>`.
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `s` can be echoed as a FHIR `uri` (non-empty, no white space).
pub fn is_uri(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// A client string fit to echo as a FHIR `string`: trimmed, non-empty, not overlong.
pub fn echoable(s: Option<&str>) -> Option<String> {
    let s = s?.trim();
    (!s.is_empty() && s.chars().count() <= 256).then(|| s.to_string())
}
