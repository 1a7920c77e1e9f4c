//! The inquiry pipeline: every inquiry on every channel (a JSON lookup by national ID or by
//! booklet, each item of a batch, FHIR, USSD, SMS) goes through here, in this order:
//!
//! 1. **authenticate** the client key, and check it may use this channel ([`admit`]);
//! 2. **rate limit**: take the request's cost from the key's bucket ([`Session::charge`]), then,
//!    on USSD and SMS, one from the phone number's allowance;
//! 3. **parse** what the channel decoded ([`Query`]);
//! 4. **look up** the person (by national ID or booklet) in one consistent view of the index;
//! 5. **evaluate** the rules of `eligibility.rs`;
//! 6. give the answer a **tracking code**;
//! 7. **audit** it (no record, no answer: 503 `audit_unavailable` when the record cannot be
//!    kept);
//! 8. **count** it (`eligd_inquiries_total`, `eligd_client_inquiries_total`);
//!
//! and the channel then renders the result ([`Decided`] or [`Refused`]) in its own form,
//! deciding nothing. A refusal at any step is audited and counted the same way, with the
//! audit subject when a national ID was parsed. The statuses live in one table
//! ([`errors`]).

pub mod errors;
mod evaluate;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use errors::{ApiError, Limited, CODES};
pub use evaluate::{by_national_id, evaluate_found, Evaluated};

use crate::app::AppState;
use crate::audit::Record;
use crate::auth::{Key, KeyChannel};
use crate::dates::Day;
use crate::index::IndexView;
use crate::limits::{Allowance, PhoneKey, PhoneLimits, Taken};
use crate::member::{Booklet, Service};
use crate::national_id::NationalId;
use crate::tracking::TrackingCode;

/// The channels, as keys name them and metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The JSON API.
    Http,
    Fhir,
    Ussd,
    Sms,
    /// The page for people (`POST /v1/public/credit`): no key, limited per client address.
    Web,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            other => other.key_channel().as_str(),
        }
    }

    /// The key channel a key needs for this channel (the web channel takes no key; it is
    /// never asked).
    pub fn key_channel(self) -> KeyChannel {
        match self {
            Channel::Http | Channel::Web => KeyChannel::Http,
            Channel::Fhir => KeyChannel::Fhir,
            Channel::Ussd => KeyChannel::Ussd,
            Channel::Sms => KeyChannel::Sms,
        }
    }

    /// The HTTP status a refusal is answered with on this channel: the error table's. The
    /// text channels answer their gateway 200 with a message for the person (a gateway shows
    /// an HTTP error as a cryptic failure), except when the request is not one a gateway of
    /// ours would send: no valid key for this channel, or the wrong method.
    pub fn http_status(self, error: &ApiError) -> u16 {
        match (self, error) {
            (
                Channel::Ussd | Channel::Sms,
                ApiError::Unauthorized(_)
                | ApiError::Forbidden { .. }
                | ApiError::MethodNotAllowed { .. },
            ) => error.status(),
            (Channel::Ussd | Channel::Sms, _) => 200,
            _ => error.status(),
        }
    }
}

/// Who is asking: the key's client, when keys are configured.
fn client_of(key: Option<&Arc<Key>>) -> Option<&'static str> {
    key.map(|k| k.client)
}

/// A request refused before (or instead of) a decision, already audited and counted.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub tracking: TrackingCode,
    /// The key's bucket after this request, for the `RateLimit` headers.
    pub allowance: Option<Allowance>,
}

/// What a person is looked up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Member(NationalId),
    Booklet(Booklet),
}

/// An inquiry as a channel decoded it, each part parsed or refused on its own (the first
/// refusal, in this order, is the answer).
pub struct Query {
    pub target: Result<Target, ApiError>,
    pub as_of: Result<Day, ApiError>,
    /// The services asked about (none, one, or several for FHIR). The first one not covered
    /// decides `service_not_covered`.
    pub services: Result<Vec<Service>, ApiError>,
}

impl Query {
    /// A query by national ID, as typed (any digit script, the card's dashes, spaces and
    /// invisible marks, 8–9 digits).
    pub fn national_id(raw: &str, as_of: Day) -> Query {
        Query {
            target: parse_national_id(raw),
            as_of: Ok(as_of),
            services: Ok(Vec::new()),
        }
    }

    /// A query refused while decoding (the channel's own structure errors); the target's
    /// refusal is the answer, so the other parts are never read.
    pub fn refused(error: ApiError) -> Query {
        Query {
            target: Err(error),
            as_of: Ok(Day(0)),
            services: Ok(Vec::new()),
        }
    }

    /// A target with the `date` and `service` options (absent `date`: `today()`, read only
    /// then).
    pub fn with_options(
        target: Result<Target, ApiError>,
        date: Option<&str>,
        service: Option<&str>,
        today: impl FnOnce() -> Day,
    ) -> Query {
        Query {
            target,
            as_of: parse_date(date, today),
            services: parse_services(service),
        }
    }
}

/// The as-of date of an inquiry: `YYYY-MM-DD`, or `today()` when absent (the clock is read
/// only then).
pub fn parse_date(date: Option<&str>, today: impl FnOnce() -> Day) -> Result<Day, ApiError> {
    match date {
        Some(d) => Day::parse_iso(d).map_err(|_| ApiError::InvalidDate),
        None => Ok(today()),
    }
}

/// The service asked about, if any.
pub fn parse_services(service: Option<&str>) -> Result<Vec<Service>, ApiError> {
    match service {
        Some(s) => Service::parse(s)
            .map(|s| vec![s])
            .ok_or_else(|| ApiError::InvalidService(s.chars().take(40).collect())),
        None => Ok(Vec::new()),
    }
}

pub fn parse_national_id(raw: &str) -> Result<Target, ApiError> {
    NationalId::parse_typed(raw)
        .map(Target::Member)
        .map_err(ApiError::InvalidNationalId)
}

pub fn parse_booklet(raw: &str) -> Result<Target, ApiError> {
    Booklet::parse(raw.trim())
        .map(Target::Booklet)
        .ok_or_else(|| ApiError::InvalidRequest("a booklet number is 1 to 18 digits".into()))
}

/// A decision: the member, the rules' verdict, and what was asked.
pub struct Answer<'v> {
    pub evaluated: Evaluated<'v>,
    pub as_of: Day,
    pub services: Vec<Service>,
    /// The index's freshness watermark when the request was admitted (Unix ms).
    pub data_as_of_ms: u64,
}

/// The result of one inquiry, already audited and counted.
pub struct Decided<'v> {
    pub tracking: TrackingCode,
    pub result: Result<Answer<'v>, ApiError>,
}

impl Decided<'_> {
    /// The outcome it is counted under: the decision's status, or the refusal's code.
    pub fn outcome(&self) -> &'static str {
        match &self.result {
            Ok(answer) => answer.evaluated.decision.outcome.as_str(),
            Err(e) => e.code(),
        }
    }
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("channel", &self.channel)
            .field("route", &self.route)
            .field("client", &self.key.as_ref().map(|k| k.client))
            .finish()
    }
}

/// An admitted request: its key (when keys are configured) and one view of the index that
/// every lookup of the request uses.
pub struct Session<'s> {
    state: &'s AppState,
    channel: Channel,
    route: &'static str,
    started: Instant,
    /// The wall clock when the request was admitted (key expiry, the audit record's time).
    arrived: SystemTime,
    key: Option<Arc<Key>>,
    allowance: Option<Allowance>,
    index: Option<IndexView>,
    /// Read before the view is taken, so the view reflects at least what it promises.
    data_as_of_ms: u64,
}

/// Where and when a request arrived, and the person it names when that is known before its
/// body is read (a national ID in the path): a refusal at admission is audited under it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival<'a> {
    pub channel: Channel,
    pub route: &'static str,
    pub authorization: Option<&'a [u8]>,
    pub started: Instant,
    pub subject: Option<NationalId>,
}

impl<'a> Arrival<'a> {
    /// A request without a key, arriving now (tools and tests).
    pub fn anonymous(channel: Channel, route: &'static str) -> Arrival<'static> {
        Arrival {
            channel,
            route,
            authorization: None,
            started: Instant::now(),
            subject: None,
        }
    }
}

/// Step 1: authenticates the `Authorization` header (when `--api-keys` is configured) and
/// checks the key may use the channel. Refusals are audited and counted here.
pub fn admit<'s>(state: &'s AppState, arrival: Arrival<'_>) -> Result<Session<'s>, Refused> {
    let Arrival {
        channel,
        route,
        authorization,
        started,
        subject,
    } = arrival;
    let mut session = Session {
        state,
        channel,
        route,
        started,
        arrived: SystemTime::now(),
        key: None,
        allowance: None,
        index: None,
        data_as_of_ms: 0,
    };
    // The public web channel takes no key: it is limited per client address instead.
    if let Some(store) = state.keys().filter(|_| channel != Channel::Web) {
        let key = store
            .keys()
            .authenticate(authorization, unix_ms(session.arrived))
            .map_err(|why| session.refuse(ApiError::Unauthorized(why), subject))?;
        let key_channel = key.channel;
        session.key = Some(key);
        if !key_channel.allows(channel.key_channel()) {
            return Err(session.refuse(
                ApiError::Forbidden {
                    key_channel: key_channel.as_str(),
                },
                subject,
            ));
        }
    }
    if let Some(index) = state.index_for_request().as_ref() {
        session.data_as_of_ms = index.data_as_of_ms();
        session.index = Some(index.view());
    }
    Ok(session)
}

/// A session for tests of a channel's rendering: no key, no audit, admitted.
#[cfg(test)]
pub(crate) fn test_session<'s>(
    state: &'s AppState,
    channel: Channel,
    route: &'static str,
) -> Session<'s> {
    begin(state, Arrival::anonymous(channel, route))
        .unwrap_or_else(|r| panic!("refused: {:?}", r.error))
}

/// Steps 1 and 2 for a request of known cost (every route but the batch).
pub fn begin<'s>(state: &'s AppState, arrival: Arrival<'_>) -> Result<Session<'s>, Refused> {
    let mut session = admit(state, arrival)?;
    session.charge_for(1, arrival.subject)?;
    Ok(session)
}

impl<'s> Session<'s> {
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Whether an index is loaded (a batch is refused whole while none is).
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// The freshness watermark every answer of this request carries (Unix ms; CONTRACT §4).
    pub fn data_as_of_ms(&self) -> u64 {
        self.data_as_of_ms
    }

    /// The key's bucket after this request (for the `RateLimit` headers).
    pub fn allowance(&self) -> Option<Allowance> {
        self.allowance
    }

    /// Step 2: takes `cost` inquiries from the key's bucket (a batch costs its size).
    pub fn charge(&mut self, cost: u32) -> Result<(), Refused> {
        self.charge_for(cost, None)
    }

    fn charge_for(&mut self, cost: u32, subject: Option<NationalId>) -> Result<(), Refused> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let limited = match key.bucket.take(cost) {
            Taken::Allowed(allowance) => {
                self.allowance = Some(allowance);
                return Ok(());
            }
            Taken::Refused {
                allowance,
                retry_after_secs,
            } => {
                self.allowance = Some(allowance);
                Limited::Key { retry_after_secs }
            }
            Taken::TooLarge { allowance } => {
                self.allowance = Some(allowance);
                Limited::AboveBurst {
                    cost,
                    burst: key.bucket.burst(),
                }
            }
        };
        Err(self.refuse(ApiError::RateLimited(limited), subject))
    }

    /// Refuses the request (a decoding error of the channel, a wrong method): audited and
    /// counted like every inquiry, with the subject when an ID was parsed.
    pub fn refuse(&self, error: ApiError, subject: Option<NationalId>) -> Refused {
        let tracking = self.state.tracking.next_at(self.arrived);
        let error = self
            .finish(tracking, Err(&error), subject)
            .err()
            .unwrap_or(error);
        Refused {
            error,
            tracking,
            allowance: self.allowance,
        }
    }

    /// Steps 3–8 for a channel without phone numbers.
    pub fn decide(&self, parse: impl FnOnce() -> Query) -> Decided<'_> {
        self.decide_inner(None, parse)
    }

    /// Steps 3–8 for USSD and SMS, after taking one from the phone's allowance (`None`: the
    /// gateway sent no number; such requests share one allowance).
    pub fn decide_for_phone(
        &self,
        phone: Option<&str>,
        parse: impl FnOnce() -> Query,
    ) -> Decided<'_> {
        let key = PhoneKey::from_phone(phone.unwrap_or(""));
        self.decide_inner(Some((&self.state.phone_limits, key)), parse)
    }

    /// Steps 3–8 for the public web channel, after taking one from the client address's
    /// allowance.
    pub fn decide_for_address(
        &self,
        address: std::net::IpAddr,
        parse: impl FnOnce() -> Query,
    ) -> Decided<'_> {
        let key = PhoneKey::from_ip(address);
        self.decide_inner(Some((&self.state.address_limits, key)), parse)
    }

    fn decide_inner(
        &self,
        limit: Option<(&PhoneLimits, PhoneKey)>,
        parse: impl FnOnce() -> Query,
    ) -> Decided<'_> {
        let mut subject = None;
        let result = (|| {
            if let Some((limits, key)) = limit {
                limits.take_key(key).map_err(|retry_after_secs| {
                    ApiError::RateLimited(Limited::Phone { retry_after_secs })
                })?;
            }
            let query = parse();
            let target = query.target?;
            if let Target::Member(id) = target {
                subject = Some(id);
            }
            let as_of = query.as_of?;
            let services = query.services?;
            let index = self
                .index
                .as_ref()
                .ok_or(ApiError::NotReady("the index is still loading"))?;
            let member = match target {
                Target::Member(id) => index.get(id).ok_or(ApiError::MemberNotFound)?,
                Target::Booklet(b) => index.get_by_booklet(b).ok_or(ApiError::BookletNotFound)?,
            };
            subject = Some(member.view().national_id);
            let covered = member.view().services;
            let asked = services.iter().copied().find(|s| !covered.contains(*s));
            let service = asked.or_else(|| services.first().copied());
            let evaluated = evaluate_found(index, member, as_of, service);
            Ok(Answer {
                evaluated,
                as_of,
                services,
                data_as_of_ms: self.data_as_of_ms,
            })
        })();
        let tracking = self.state.tracking.next_at(self.arrived);
        let recorded = match &result {
            Ok(answer) => self.finish(
                tracking,
                Ok(answer.evaluated.decision.outcome.as_str()),
                subject,
            ),
            Err(e) => self.finish(tracking, Err(e), subject),
        };
        let result: Result<Answer<'_>, ApiError> = match recorded {
            Ok(()) => result,
            Err(unavailable) => Err(unavailable),
        };
        Decided { tracking, result }
    }

    /// Steps 7 and 8: the audit record and the counts. `Err` when the audit log cannot
    /// take the record: then that refusal, not the decision, is the answer (and counted).
    fn finish(
        &self,
        tracking: TrackingCode,
        outcome: Result<&'static str, &ApiError>,
        subject: Option<NationalId>,
    ) -> Result<(), ApiError> {
        let (label, status) = match outcome {
            Ok(label) => (label, 200),
            Err(e) => (e.code(), self.channel.http_status(e)),
        };
        let mut counted = label;
        let mut result = Ok(());
        if let Some(audit) = self.state.audit() {
            let record = Record {
                time: self.arrived,
                tracking,
                client: client_of(self.key.as_ref()),
                channel: self.channel.as_str(),
                route: self.route,
                outcome: label,
                status,
                latency: self.started.elapsed(),
                person: subject,
            };
            if audit.record(record).is_err() {
                counted = ApiError::AuditUnavailable.code();
                result = Err(ApiError::AuditUnavailable);
            }
        }
        self.count(counted);
        result
    }

    fn count(&self, outcome: &'static str) {
        let metrics = &self.state.metrics;
        metrics.count_inquiry(self.channel.as_str(), outcome);
        match (&self.key, self.state.keys()) {
            (Some(key), _) => key.counters.inc(outcome),
            (None, Some(_)) => metrics.access.unauthenticated.inc(outcome),
            (None, None) => {}
        }
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
