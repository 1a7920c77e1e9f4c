//! The entitlement rules of docs/domain.md, as a pure function: a member, their main insured
//! (looked up by the caller for dependents), the as-of date and an optional service in; a
//! decision out. No I/O and no clock, so every rule and boundary is tested in a table.

use crate::dates::Day;
use crate::member::view::MemberView;
use crate::member::{Kind, Service, Status};

/// The inquiry's outcome (`status` in the answer). Only `Active` is eligible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Active,
    Expired,
    Suspended,
    Deceased,
    MainInsuredInactive,
    MainInsuredNotFound,
    ServiceNotCovered,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Active,
        Outcome::Expired,
        Outcome::Suspended,
        Outcome::Deceased,
        Outcome::MainInsuredInactive,
        Outcome::MainInsuredNotFound,
        Outcome::ServiceNotCovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Active => "active",
            Outcome::Expired => "expired",
            Outcome::Suspended => "suspended",
            Outcome::Deceased => "deceased",
            Outcome::MainInsuredInactive => "main_insured_inactive",
            Outcome::MainInsuredNotFound => "main_insured_not_found",
            Outcome::ServiceNotCovered => "service_not_covered",
        }
    }
}

/// The main insured person's own standing on the as-of date (rules 2–3 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MainStanding {
    Active,
    Expired,
    Suspended,
    Deceased,
    NotFound,
}

impl MainStanding {
    pub fn as_str(self) -> &'static str {
        match self {
            MainStanding::Active => "active",
            MainStanding::Expired => "expired",
            MainStanding::Suspended => "suspended",
            MainStanding::Deceased => "deceased",
            MainStanding::NotFound => "not_found",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The effective last covered day (a dependent's is capped by the main insured's);
    /// `None` when open-ended.
    pub coverage_until: Option<Day>,
    /// `coverage_until − as_of` in days: 0 on the last covered day, negative once expired.
    pub days_remaining: Option<i32>,
    /// For dependents: the main insured's standing and coverage end.
    pub main: Option<(MainStanding, Option<Day>)>,
    /// Whether the asked service is covered, when one was asked.
    pub service_covered: Option<bool>,
}

impl Decision {
    pub fn eligible(&self) -> bool {
        self.outcome == Outcome::Active
    }

    /// Whether the coverage is in force on the date asked, whatever services were asked
    /// about (FHIR's `inforce`): every rule but the service rule passed.
    pub fn in_force(&self) -> bool {
        matches!(self.outcome, Outcome::Active | Outcome::ServiceNotCovered)
    }
}

/// Rules 2–3 for one person on its own: deceased, suspended, then expired.
fn own_standing(member: &MemberView<'_>, as_of: Day) -> MainStanding {
    match member.status {
        Status::Deceased => MainStanding::Deceased,
        Status::Suspended => MainStanding::Suspended,
        Status::Active => match member.coverage_until {
            Some(end) if end < as_of => MainStanding::Expired,
            _ => MainStanding::Active,
        },
    }
}

fn earlier(a: Option<Day>, b: Option<Day>) -> Option<Day> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Decides whether `member` is entitled on `as_of`, for `service` when given. `main` is the
/// member's main insured as found in the index (only read for dependents; `None` when the
/// main insured is unknown or deleted).
pub fn evaluate(
    member: &MemberView<'_>,
    main: Option<&MemberView<'_>>,
    as_of: Day,
    service: Option<Service>,
) -> Decision {
    let own = own_standing(member, as_of);
    let (main_info, coverage_until) = if member.kind == Kind::Dependent {
        let main_info = match main {
            Some(m) => (own_standing(m, as_of), m.coverage_until),
            None => (MainStanding::NotFound, None),
        };
        (Some(main_info), earlier(member.coverage_until, main_info.1))
    } else {
        (None, member.coverage_until)
    };
    let service_covered = service.map(|s| member.services.contains(s));

    let outcome = match own {
        MainStanding::Deceased => Outcome::Deceased,
        MainStanding::Suspended => Outcome::Suspended,
        MainStanding::Expired => Outcome::Expired,
        _ => match main_info.map(|(standing, _)| standing) {
            Some(MainStanding::NotFound) => Outcome::MainInsuredNotFound,
            Some(MainStanding::Active) | None => {
                if service_covered == Some(false) {
                    Outcome::ServiceNotCovered
                } else {
                    Outcome::Active
                }
            }
            Some(_) => Outcome::MainInsuredInactive,
        },
    };
    Decision {
        outcome,
        coverage_until,
        days_remaining: coverage_until.map(|end| end.0 - as_of.0),
        main: main_info,
        service_covered,
    }
}

/// The insurer that pays first: another fund marked primary, else the organisation (`sso`).
pub fn primary_insurer<'a>(member: &MemberView<'a>) -> &'a str {
    member.extras.primary_insurer().unwrap_or("sso")
}

#[cfg(test)]
mod tests;
