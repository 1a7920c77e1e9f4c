//! HL7 FHIR R4 for hospital information systems: `POST /fhir/r4/CoverageEligibilityRequest`
//! takes a CoverageEligibilityRequest naming a person by national ID and answers a
//! CoverageEligibilityResponse (docs/openapi.yaml, "FHIR"). It decodes the request, hands it
//! to the inquiry pipeline like every channel, and renders the decision in FHIR's shape,
//! deciding nothing itself: `insurance[0].inforce` is FHIR's "coverage in force on the
//! serviced date" (true even when a requested service is excluded). Refused requests get an
//! OperationOutcome with the status of the error table; neither ever carries the national
//! ID in an error, nor the member's name unmasked.

use chrono::Utc;

use bytes::Bytes;

use super::driver::{self, Ask, Codec, Decoding};
use super::{Reply, Request};
use crate::app::AppState;
use crate::dates::{rfc3339_utc_ms, Day};
use crate::eligibility::{primary_insurer, Outcome};
use crate::inquiry::{Answer, ApiError, Channel, Decided, Query, Refused, Session, Target};

mod model;
mod parse;
pub mod routes;

use model::*;
#[cfg(test)]
use parse::RequestedItem;
use parse::{check_content_type, parse_request, Inquiry};

/// The media type of every answer of this channel, successes and OperationOutcomes alike.
pub const FHIR_JSON: &str = "application/fhir+json";
pub const ROUTE: &str = "/fhir/r4/CoverageEligibilityRequest";
const RESOURCE: &str = "CoverageEligibilityRequest";
const SERVICES: &str = "outpatient, inpatient, pharmacy, paraclinic, dental";

/// `POST /fhir/r4/CoverageEligibilityRequest` (and its FAIS `$submit` form, `route`):
/// admitted by the pipeline, then the method, the content type and the answer format
/// (`negotiated`, see `routes.rs`) are checked, then the body is read and decided, and the
/// answer rendered ([`coverage_eligibility`] for a body alone).
pub struct CoverageEligibility {
    pub route: &'static str,
    pub negotiated: Result<(), ApiError>,
    /// The as-of date when the request has no `servicedDate`.
    pub today: Day,
}

/// What the FHIR reading made of a request: the request read, or what it got wrong.
pub struct Read {
    inquiry: Option<Inquiry>,
    problem: Option<Problem>,
}

impl Codec for CoverageEligibility {
    type Decoded = Read;
    const CHANNEL: Channel = Channel::Fhir;
    const METHOD: hyper::Method = hyper::Method::POST;

    fn route(&self) -> &'static str {
        self.route
    }

    fn check(&self, request: &Request) -> Result<(), ApiError> {
        check_content_type(request.content_type()).map_err(ApiError::UnsupportedMediaType)?;
        self.negotiated.clone()
    }

    fn decode(&self, _: &Request, body: Option<Result<Bytes, ApiError>>) -> Decoding<Read> {
        let body = driver::body(body)?;
        Ok(self.read(&body))
    }

    fn render(&self, session: &Session<'_>, read: Read, decided: &[Decided<'_>]) -> Reply {
        match decided.first() {
            Some(decided) => render_decided(session, read, decided),
            None => Problem::from_error(&ApiError::Internal("no decision".into())).reply(""),
        }
    }

    fn refused(&self, r: &Refused) -> Reply {
        refused(r, None)
    }
}

impl CoverageEligibility {
    /// Reads a CoverageEligibilityRequest `body`: the query, or the problem (decided as a
    /// refusal, and rendered with what the request got wrong).
    fn read(&self, body: &[u8]) -> (Read, Ask) {
        match parse_request(body, self.today) {
            Ok(inquiry) => {
                let query = Query {
                    target: Ok(Target::Member(inquiry.national_id)),
                    as_of: Ok(inquiry.as_of),
                    services: Ok(inquiry.items.iter().map(|i| i.service).collect()),
                };
                let read = Read {
                    inquiry: Some(inquiry),
                    problem: None,
                };
                (read, Ask::One(query))
            }
            Err(p) => {
                let query = Query::refused(p.error());
                let read = Read {
                    inquiry: None,
                    problem: Some(p),
                };
                (read, Ask::One(query))
            }
        }
    }
}

/// An OperationOutcome for a request refused before any inquiry (an unknown FHIR route, a
/// wrong method or format on `metadata`), with the status of the error table and the
/// headers every refusal carries (`Allow` on 405).
pub fn outcome_reply(state: &AppState, error: &ApiError) -> Reply {
    let tracking = state.tracking.next();
    Problem::from_error(error)
        .reply(tracking.as_str())
        .with_pipeline_headers(Some(error), None)
}

/// A refusal as an OperationOutcome, with the status of the error table. `problem` refines
/// it with what the request got wrong, when the FHIR reading found it.
fn refused(r: &Refused, problem: Option<&Problem>) -> Reply {
    let problem = problem
        .cloned()
        .unwrap_or_else(|| Problem::from_error(&r.error));
    let body = problem.operation_outcome_bytes(r.tracking.as_str());
    super::refusal_reply(r, r.error.status(), FHIR_JSON, body)
}

/// Decides one CoverageEligibilityRequest `body` through the pipeline and renders it: a
/// CoverageEligibilityResponse (a person not found is one too, with `outcome: error`), or an
/// OperationOutcome. `today` is the as-of date when the request has no `servicedDate` (the
/// channel's tests and the fuzz target).
pub fn coverage_eligibility(session: &mut Session<'_>, body: &[u8], today: Day) -> Reply {
    let codec = CoverageEligibility {
        route: ROUTE,
        negotiated: Ok(()),
        today,
    };
    let (read, ask) = codec.read(body);
    driver::answer(session, &codec, read, ask)
}

/// One decision in FHIR's shape.
fn render_decided(session: &Session<'_>, read: Read, decided: &Decided<'_>) -> Reply {
    let Read { inquiry, problem } = read;
    let tracking = decided.tracking.as_str();
    let outcome = decided.outcome();
    let answer = match (&decided.result, &inquiry) {
        (Ok(answer), Some(inquiry)) => Some(render(
            inquiry,
            Some(answer),
            tracking,
            (now_fhir(), answer.data_as_of_ms),
        )),
        (Err(ApiError::MemberNotFound), Some(inquiry)) => Some(render(
            inquiry,
            None,
            tracking,
            (now_fhir(), session.data_as_of_ms()),
        )),
        _ => None,
    };
    match (answer, &decided.result) {
        (Some(response), _) => match serde_json::to_vec(&response) {
            Ok(body) => Reply {
                status: 200,
                content_type: FHIR_JSON,
                body,
                outcome,
                headers: Vec::new(),
            },
            Err(e) => {
                tracing::error!(error = %e, tracking_code = tracking, "could not render a CoverageEligibilityResponse");
                let p = Problem::from_error(&ApiError::Internal(e.to_string()));
                p.reply(tracking)
            }
        },
        (None, Err(error)) => {
            let p = problem
                .filter(|p| p.outcome == error.code())
                .unwrap_or_else(|| Problem::from_error(error));
            p.reply(tracking)
        }
        (None, Ok(_)) => {
            Problem::from_error(&ApiError::Internal("no request read".into())).reply(tracking)
        }
    }
}

/// Why a request is refused: the error of the table, the R4 `IssueType` (one per code, or a
/// finer one the request reading found), the clear text, and where in the request (a
/// FHIRPath) when known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    pub status: u16,
    pub issue: &'static str,
    pub outcome: &'static str,
    pub message: String,
    pub expression: Option<String>,
    error: ApiError,
}

/// The R4 `IssueType` of each code of the error table.
fn issue_type(error: &ApiError) -> &'static str {
    match error {
        ApiError::InvalidNationalId(_) | ApiError::InvalidDate => "value",
        ApiError::InvalidService(_) => "code-invalid",
        ApiError::InvalidRequest(_) => "invalid",
        ApiError::Unauthorized(_) => "login",
        ApiError::Forbidden { .. } => "forbidden",
        ApiError::MemberNotFound | ApiError::BookletNotFound | ApiError::NotFound => "not-found",
        ApiError::MethodNotAllowed { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::NotAcceptable(_) => "not-supported",
        ApiError::PayloadTooLarge { .. } => "too-long",
        ApiError::RateLimited(_) => "throttled",
        ApiError::Internal(_) => "exception",
        ApiError::NotReady(_) | ApiError::AuditUnavailable => "transient",
    }
}

impl Problem {
    /// A problem the request reading found (`outcome`: the code it is refused with).
    fn new(issue: &'static str, outcome: &'static str, message: String) -> Problem {
        let error = match outcome {
            "invalid_date" => ApiError::InvalidDate,
            "invalid_service" => ApiError::InvalidService(message.clone()),
            _ => ApiError::InvalidRequest(message.clone()),
        };
        Problem {
            status: error.status(),
            issue,
            outcome: error.code(),
            message,
            expression: None,
            error,
        }
    }

    /// A 400 about one element of the request (`at` is relative to the resource).
    fn at(issue: &'static str, outcome: &'static str, at: &str, message: String) -> Problem {
        Problem {
            expression: Some(format!("{RESOURCE}.{at}")),
            ..Problem::new(issue, outcome, message)
        }
    }

    /// A national ID that does not parse, at `patient.identifier.value`.
    fn national_id(issue: &'static str, e: crate::national_id::IdError) -> Problem {
        let error = ApiError::InvalidNationalId(e);
        Problem {
            status: error.status(),
            issue,
            outcome: error.code(),
            message: error.message(),
            expression: Some(format!("{RESOURCE}.patient.identifier.value")),
            error,
        }
    }

    /// Any refusal of the pipeline, with the issue type of its code.
    fn from_error(error: &ApiError) -> Problem {
        Problem {
            status: error.status(),
            issue: issue_type(error),
            outcome: error.code(),
            message: error.message(),
            expression: None,
            error: error.clone(),
        }
    }

    fn error(&self) -> ApiError {
        self.error.clone()
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

    fn operation_outcome_bytes(&self, tracking: &str) -> Vec<u8> {
        serde_json::to_vec(&self.operation_outcome(tracking)).unwrap_or_else(|_| {
            br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#
                .to_vec()
        })
    }

    fn reply(&self, tracking: &str) -> Reply {
        Reply {
            status: self.status,
            content_type: FHIR_JSON,
            body: self.operation_outcome_bytes(tracking),
            outcome: self.outcome,
            headers: Vec::new(),
        }
    }
}

/// The CoverageEligibilityResponse for an inquiry and what it found (`None`: not found),
/// created at `created` from data as of `data_as_of_ms`.
fn render(
    inquiry: &Inquiry,
    found: Option<&Answer<'_>>,
    tracking: &str,
    (created, data_as_of_ms): (String, u64),
) -> ResponseOut {
    let view = found.map(|f| f.evaluated.member.view());
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
            let decision = &found.evaluated.decision;
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
                inforce: decision.in_force(),
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
        meta: MetaOut {
            last_updated: rfc3339_utc_ms(data_as_of_ms),
        },
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
mod tests;
