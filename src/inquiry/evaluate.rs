//! Looking a person up and applying the rules: find the member, find the main insured of a
//! dependent, evaluate (the pure rules of `eligibility.rs`). Used by the pipeline, and by
//! tools and benchmarks that look up without a request.

use crate::dates::Day;
use crate::eligibility::{evaluate, Decision};
use crate::index::{IndexView, MemberRef};
use crate::member::{Kind, Service};
use crate::national_id::NationalId;

/// A member and the decision about them.
pub struct Evaluated<'a> {
    pub member: MemberRef<'a>,
    pub decision: Decision,
}

/// Evaluates a member already found (by ID or by booklet).
pub fn evaluate_found<'a>(
    index: &'a IndexView,
    member: MemberRef<'a>,
    as_of: Day,
    service: Option<Service>,
) -> Evaluated<'a> {
    let view = member.view();
    let main = match (view.kind, view.main_national_id) {
        (Kind::Dependent, Some(main_id)) => index.get(main_id),
        _ => None,
    };
    let main_view = main.as_ref().map(MemberRef::view);
    let decision = evaluate(&view, main_view.as_ref(), as_of, service);
    Evaluated { member, decision }
}

/// Looks a person up by national ID; `None` when unknown.
pub fn by_national_id(
    index: &IndexView,
    id: NationalId,
    as_of: Day,
    service: Option<Service>,
) -> Option<Evaluated<'_>> {
    index
        .get(id)
        .map(|member| evaluate_found(index, member, as_of, service))
}
