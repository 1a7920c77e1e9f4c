//! HL7 FHIR R4 for hospital information systems: `POST /fhir/r4/CoverageEligibilityRequest`
//! takes a CoverageEligibilityRequest naming a person by national ID and answers a
//! CoverageEligibilityResponse (CONTRACT §4 "FHIR R4"). It renders the same inquiry as the
//! JSON API (`inquiry.rs`, the rules of `eligibility.rs`) in FHIR's shape and decides
//! nothing itself. Refused requests get an OperationOutcome; neither ever carries the
//! national ID in an error, nor the member's name unmasked.

use chrono::Utc;

use super::{count_inquiry, ChannelReply};
use crate::app::AppState;
use crate::dates::Day;
use crate::eligibility::{primary_insurer, Outcome};
use crate::http::ApiError;
use crate::index::IndexView;
use crate::inquiry::{self, Found};

#[path = "fhir_model.rs"]
mod model;
#[path = "fhir_parse.rs"]
mod parse;

use model::*;
#[cfg(test)]
use parse::RequestedItem;
use parse::{check_content_type, parse_request, Inquiry};

/// The media type of every answer of this channel, successes and OperationOutcomes alike.
pub const FHIR_JSON: &str = "application/fhir+json";
const CHANNEL: &str = "fhir";
const RESOURCE: &str = "CoverageEligibilityRequest";
const SERVICES: &str = "outpatient, inpatient, pharmacy, paraclinic, dental";

/// Answers one `POST /fhir/r4/CoverageEligibilityRequest`. `body` is the request body, or
/// why the router could not read it (too large, unreadable); `today` is the as-of date when
/// the request has no `servicedDate`.
///
/// `ChannelReply.outcome` is one of: an inquiry status (`Outcome::as_str`),
/// `member_not_found`, `invalid_national_id`, `invalid_date`, `invalid_service`,
/// `invalid_request`, `not_ready`, `unsupported_media_type`, `payload_too_large`,
/// `internal_error`. A request read far enough to be an inquiry (every outcome but the
/// last three and an unreadable body) is also counted in `eligd_inquiries_total`.
pub fn coverage_eligibility(
    state: &AppState,
    content_type: Option<&str>,
    body: Result<&[u8], &ApiError>,
    today: Day,
) -> ChannelReply {
    let tracking = state.tracking.next();
    let tracking = tracking.as_str();
    if let Err(message) = check_content_type(content_type) {
        let problem = Problem::new(415, "not-supported", "unsupported_media_type", message);
        return problem.reply(tracking);
    }
    let body = match body {
        Ok(body) => body,
        Err(ApiError::PayloadTooLarge { limit }) => {
            let message = format!("request bodies are limited to {limit} bytes");
            return Problem::new(413, "too-long", "payload_too_large", message).reply(tracking);
        }
        Err(_) => {
            let message = "the request body could not be read".to_string();
            return Problem::new(400, "structure", "invalid_request", message).reply(tracking);
        }
    };
    let inquiry = match parse_request(body, today) {
        Ok(inquiry) => inquiry,
        Err(problem) => {
            count_inquiry(state, CHANNEL, problem.outcome);
            return problem.reply(tracking);
        }
    };
    let Some(index) = state.index() else {
        count_inquiry(state, CHANNEL, "not_ready");
        let message = "not ready: the index is still loading; retry shortly".to_string();
        return Problem::new(503, "transient", "not_ready", message).reply(tracking);
    };
    let index = index.view();
    let found = look_up(&index, &inquiry);
    let outcome = found
        .as_ref()
        .map_or("member_not_found", |f| f.decision.outcome.as_str());
    count_inquiry(state, CHANNEL, outcome);
    let response = render(&inquiry, found.as_ref(), tracking, now_fhir());
    match serde_json::to_vec(&response) {
        Ok(body) => ChannelReply {
            status: 200,
            content_type: FHIR_JSON,
            body,
            outcome,
        },
        Err(e) => {
            tracing::error!(error = %e, "could not render a CoverageEligibilityResponse");
            let message = "the answer could not be rendered".to_string();
            Problem::new(500, "exception", "internal_error", message).reply(tracking)
        }
    }
}

/// Why a request is refused: the HTTP status, the R4 `IssueType`, the outcome label it is
/// counted under, the clear text, and where in the request (a FHIRPath) when known.
#[derive(Debug, PartialEq, Eq)]
struct Problem {
    pub status: u16,
    pub issue: &'static str,
    pub outcome: &'static str,
    pub message: String,
    pub expression: Option<String>,
}

impl Problem {
    fn new(status: u16, issue: &'static str, outcome: &'static str, message: String) -> Problem {
        Problem {
            status,
            issue,
            outcome,
            message,
            expression: None,
        }
    }

    /// A 400 about one element of the request (`at` is relative to the resource).
    fn at(issue: &'static str, outcome: &'static str, at: &str, message: String) -> Problem {
        Problem {
            expression: Some(format!("{RESOURCE}.{at}")),
            ..Problem::new(400, issue, outcome, message)
        }
    }

    /// The OperationOutcome this problem is answered with.
    fn operation_outcome(&self, tracking: &str) -> OperationOutcomeOut {
        OperationOutcomeOut {
            resource_type: "OperationOutcome",
            issue: vec![IssueOut {
                severity: "error",
                code: self.issue,
                details: CodeableConceptOut {
                    coding: vec![CodingOut {
                        system: Some(ERROR_SYSTEM.to_string()),
                        code: self.outcome,
                        display: None,
                    }],
                    text: Some(format!("tracking code {tracking}")),
                },
                diagnostics: self.message.clone(),
                expression: self.expression.iter().cloned().collect(),
            }],
        }
    }

    fn reply(&self, tracking: &str) -> ChannelReply {
        let body = serde_json::to_vec(&self.operation_outcome(tracking)).unwrap_or_else(|_| {
            br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#
                .to_vec()
        });
        ChannelReply {
            status: self.status,
            content_type: FHIR_JSON,
            body,
            outcome: self.outcome,
        }
    }
}

/// The inquiry's answer, as the JSON API would give it: for one requested service exactly
/// `?service=`; for several, a service not covered makes the answer `service_not_covered`
/// (rule 5 of DOMAIN.md, for the first such service).
fn look_up<'a>(index: &'a IndexView, inquiry: &Inquiry) -> Option<Found<'a>> {
    let found = inquiry::by_national_id(index, inquiry.national_id, inquiry.as_of, None)?;
    let covered = found.member.view().services;
    match inquiry.items.iter().find(|i| !covered.contains(i.service)) {
        Some(item) => Some(inquiry::evaluate_found(
            index,
            found.member,
            inquiry.as_of,
            Some(item.service),
        )),
        None => Some(found),
    }
}

/// The CoverageEligibilityResponse for an inquiry and what it found (`None`: not found).
fn render(
    inquiry: &Inquiry,
    found: Option<&Found<'_>>,
    tracking: &str,
    created: String,
) -> ResponseOut {
    let view = found.map(|f| f.member.view());
    let patient = ReferenceOut {
        reference: inquiry.patient_reference.clone(),
        identifier: Some(IdentifierOut {
            system: Some(NATIONAL_ID_SYSTEM.to_string()),
            value: inquiry.patient_value.clone(),
        }),
        display: view
            .and_then(|v| v.name.masked())
            .map(|n| n.into_owned())
            .filter(|n| !n.is_empty()),
    };
    let insurer = view.as_ref().map_or("sso", primary_insurer);
    let (outcome, disposition, insurance, error) = match (found, view) {
        (Some(found), Some(view)) => {
            let decision = &found.decision;
            let coverage = ReferenceOut {
                reference: None,
                identifier: view.booklet_no.map(|b| IdentifierOut {
                    system: Some(BOOKLET_SYSTEM.to_string()),
                    value: b.to_string(),
                }),
                display: Some(format!(
                    "{} treatment insurance ({})",
                    view.scheme.as_str(),
                    view.kind.as_str()
                )),
            };
            let item = inquiry
                .items
                .iter()
                .map(|i| ItemOut {
                    category: CodeableConceptOut {
                        coding: vec![CodingOut {
                            system: i.system.clone(),
                            code: i.service.as_str(),
                            display: None,
                        }],
                        text: None,
                    },
                    excluded: !view.services.contains(i.service),
                })
                .collect();
            let insurance = InsuranceOut {
                coverage,
                inforce: decision.eligible(),
                benefit_period: decision.coverage_until.map(|end| PeriodOut {
                    end: end.to_string(),
                }),
                item,
            };
            (
                "complete",
                disposition(decision.outcome),
                vec![insurance],
                vec![],
            )
        }
        _ => {
            let error = ErrorOut {
                code: CodeableConceptOut {
                    coding: vec![CodingOut {
                        system: Some(ERROR_SYSTEM.to_string()),
                        code: "member_not_found",
                        display: Some("Member not found"),
                    }],
                    text: Some("no member has this national ID".to_string()),
                },
            };
            let text = "Not found: no member has this national ID.".to_string();
            ("error", text, vec![], vec![error])
        }
    };
    ResponseOut {
        resource_type: "CoverageEligibilityResponse",
        identifier: vec![IdentifierOut {
            system: Some(TRACKING_CODE_SYSTEM.to_string()),
            value: tracking.to_string(),
        }],
        status: "active",
        purpose: inquiry.purposes.clone(),
        patient,
        serviced_date: inquiry.serviced_date.map(|d| d.to_string()),
        created,
        request: inquiry.request.clone(),
        outcome,
        disposition: Some(disposition),
        insurer: ReferenceOut {
            reference: None,
            identifier: Some(IdentifierOut {
                system: Some(INSURER_SYSTEM.to_string()),
                value: insurer.to_string(),
            }),
            display: Some(insurer.to_string()),
        },
        insurance,
        error,
    }
}

/// A short text of the inquiry status for people reading the answer; the status code
/// itself is in parentheses for machines.
fn disposition(outcome: Outcome) -> String {
    let text = match outcome {
        Outcome::Active => "Eligible: the coverage is in force",
        Outcome::Expired => "Not eligible: the coverage has ended",
        Outcome::Suspended => "Not eligible: the coverage is suspended",
        Outcome::Deceased => "Not eligible: the person is recorded as deceased",
        Outcome::MainInsuredInactive => {
            "Not eligible: the main insured person's coverage is not in force"
        }
        Outcome::MainInsuredNotFound => "Not eligible: the main insured person is not on record",
        Outcome::ServiceNotCovered => "Not eligible: a requested service is not covered",
    };
    format!("{text} (status {}).", outcome.as_str())
}

/// Now as a FHIR `dateTime` (seconds, with the offset R4 requires), in Tehran's zone.
fn now_fhir() -> String {
    Utc::now()
        .with_timezone(&chrono_tz::Asia::Tehran)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
#[path = "fhir_tests.rs"]
mod tests;
