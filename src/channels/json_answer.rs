//! The JSON eligibility answer (docs/openapi.yaml, `Eligibility`), rendered from what the
//! pipeline decided.

use std::borrow::Cow;

use serde::Serialize;

use crate::dates::rfc3339_utc_ms;
use crate::eligibility::primary_insurer;
use crate::inquiry::Answer as Decision;
use crate::member::{Relation, Service};

#[derive(Serialize)]
pub struct MainInsured {
    pub national_id: String,
    pub status: &'static str,
    pub coverage_until: Option<String>,
}

#[derive(Serialize)]
pub struct ServiceAnswer {
    pub code: &'static str,
    pub covered: bool,
}

#[derive(Serialize)]
pub struct Answer<'a> {
    pub tracking_code: &'a str,
    pub national_id: String,
    pub as_of: String,
    pub eligible: bool,
    pub status: &'static str,
    pub coverage_until: Option<String>,
    pub days_remaining: Option<i32>,
    pub kind: &'static str,
    pub relation: Option<&'static str>,
    pub scheme: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_insured: Option<MainInsured>,
    pub services: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceAnswer>,
    pub special_conditions: Vec<&'a str>,
    pub primary_insurer: &'a str,
    pub name: Option<Cow<'a, str>>,
    pub data_version: u64,
    pub data_as_of: String,
}

impl<'a> Answer<'a> {
    pub fn new(decided: &'a Decision<'_>, tracking_code: &'a str) -> Answer<'a> {
        let (found, as_of) = (&decided.evaluated, decided.as_of);
        let service = decided.services.first().copied();
        let m = found.member.view();
        let d = &found.decision;
        Answer {
            tracking_code,
            national_id: m.national_id.to_string(),
            as_of: as_of.to_string(),
            eligible: d.eligible(),
            status: d.outcome.as_str(),
            coverage_until: d.coverage_until.map(|c| c.to_string()),
            days_remaining: d.days_remaining,
            kind: m.kind.as_str(),
            relation: m.relation.map(Relation::as_str),
            scheme: m.scheme.as_str(),
            main_insured: d.main.map(|(standing, until)| MainInsured {
                national_id: m.main_national_id.map(|id| id.masked()).unwrap_or_default(),
                status: standing.as_str(),
                coverage_until: until.map(|u| u.to_string()),
            }),
            services: m.services.iter().map(Service::as_str).collect(),
            service: service.map(|s| ServiceAnswer {
                code: s.as_str(),
                covered: m.services.contains(s),
            }),
            special_conditions: m.extras.special_conditions(),
            primary_insurer: primary_insurer(&m),
            name: m.name.masked(),
            data_version: m.version,
            data_as_of: rfc3339_utc_ms(decided.data_as_of_ms),
        }
    }
}
