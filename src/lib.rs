pub mod dates;
pub mod demo;
pub mod eligibility;
pub mod index;
pub mod jalali;
pub mod member;
pub mod national_id;
