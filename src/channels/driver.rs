//! One driver for every inquiry route. Each runs the same steps, in the same order, here (as
//! mini-redis's `Handler::run` runs every command): admission (the key's bucket or the
//! address's allowance, the key, its channel), the method, the channel's own checks before
//! the body, the body, decoding, the pipeline's decisions, and the closing headers
//! (`Retry-After`, `WWW-Authenticate`, `Allow`, the RateLimit fields).
//!
//! A channel only decodes its request into an [`Ask`] (plain data: what to look up, on which
//! date, for which services, for which phone) and renders what the pipeline decided or
//! refused, through its [`Codec`]. The pipeline never calls back into a channel.

use bytes::Bytes;
use hyper::Method;

use super::{Reply, Request};
use crate::app::AppState;
use crate::dates::Day;
use crate::inquiry::{self, ApiError, Channel, Decided, Query, Refused, Session, Target};
use crate::member::Service;

/// What a decoded request asks the pipeline.
pub enum Ask {
    /// Nothing to decide: a screen that reveals nothing (a USSD menu, prompt, or a callback
    /// no gateway sends).
    Nothing,
    /// One inquiry.
    One(Query),
    /// One inquiry for a phone (USSD, SMS): the phone's allowance pays first (`None`: the
    /// gateway sent no number; such requests share one allowance).
    ForPhone(Option<String>, Query),
    /// A batch: each target its own inquiry (own tracking code, own audit line), all on one
    /// date for the same services. The request pays for every target first (admission paid
    /// one); then the options, or an index not loaded yet, refuse it whole.
    Batch {
        targets: Vec<Result<Target, ApiError>>,
        options: Result<(Day, Vec<Service>), ApiError>,
    },
}

/// What a codec's decoding gives: what it keeps to render, and what it asks; `Err` refuses
/// the request before the index.
pub type Decoding<D> = Result<(D, Ask), ApiError>;

/// The body a POST route's codec was given (the driver reads it before decoding).
pub fn body(body: Option<Result<Bytes, ApiError>>) -> Result<Bytes, ApiError> {
    body.unwrap_or_else(|| Err(ApiError::Internal("no body read".into())))
}

/// A channel, as the driver runs it.
pub trait Codec {
    /// What the channel keeps of its request to render the answer.
    type Decoded;
    /// The pipeline's channel (keys, labels, the audit log).
    const CHANNEL: Channel;
    /// The one method the route takes (HEAD counts as GET); a POST route's body is read.
    const METHOD: Method;

    /// The route pattern the request is counted and audited under.
    fn route(&self) -> &'static str;

    /// Checks on the request before its body is read (FHIR: content type, `Accept`).
    fn check(&self, _request: &Request) -> Result<(), ApiError> {
        Ok(())
    }

    /// Reads the request (`body`: the body, for a POST route). `Err` refuses it before the
    /// index.
    fn decode(
        &self,
        request: &Request,
        body: Option<Result<Bytes, ApiError>>,
    ) -> Decoding<Self::Decoded>;

    /// Renders the decisions: one per inquiry asked, in order (none for [`Ask::Nothing`]).
    fn render(
        &self,
        session: &Session<'_>,
        decoded: Self::Decoded,
        decided: &[Decided<'_>],
    ) -> Reply;

    /// Renders a refusal before the index.
    fn refused(&self, refused: &Refused) -> Reply;
}

/// Runs one inquiry request through `codec`: every step but decoding and rendering.
pub async fn run<C: Codec>(state: &AppState, mut request: Request, codec: C) -> Reply {
    let mut session = match inquiry::begin(state, request.arrival(C::CHANNEL, codec.route())) {
        Ok(session) => session,
        Err(r) => return codec.refused(&r),
    };
    if !request.method_is(&C::METHOD) {
        let allow = if C::METHOD == Method::GET {
            "GET"
        } else {
            "POST"
        };
        return codec.refused(&session.refuse(ApiError::MethodNotAllowed { allow }));
    }
    if let Err(e) = codec.check(&request) {
        return codec.refused(&session.refuse(e));
    }
    let body = if C::METHOD == Method::POST {
        Some(request.read_body().await)
    } else {
        None
    };
    match codec.decode(&request, body) {
        Ok((decoded, ask)) => answer(&mut session, &codec, decoded, ask),
        Err(e) => codec.refused(&session.refuse(e)),
    }
}

/// The pipeline's decisions for what a request asks, rendered by `codec` with the closing
/// headers (also how the channels' tests and fuzz targets run a decoded request).
pub fn answer<C: Codec>(
    session: &mut Session<'_>,
    codec: &C,
    decoded: C::Decoded,
    ask: Ask,
) -> Reply {
    let decided = match ask {
        Ask::Nothing => return codec.render(session, decoded, &[]),
        Ask::One(query) => session.decide(query),
        Ask::ForPhone(phone, query) => session.decide_for_phone(phone.as_deref(), query),
        Ask::Batch { targets, options } => {
            if let Err(r) = session.charge_rest(targets.len().max(1) as u32) {
                return codec.refused(&r);
            }
            let (as_of, services) = match options {
                Ok(options) => options,
                Err(e) => return codec.refused(&session.refuse(e)),
            };
            if !session.has_index() {
                let error = ApiError::NotReady("the index is still loading");
                return codec.refused(&session.refuse(error));
            }
            let decided: Vec<Decided<'_>> = targets
                .into_iter()
                .map(|target| {
                    session.decide(Query {
                        target,
                        as_of: Ok(as_of),
                        services: Ok(services.clone()),
                    })
                })
                .collect();
            return codec
                .render(session, decoded, &decided)
                .with_pipeline_headers(None, session.allowance());
        }
    };
    codec
        .render(session, decoded, std::slice::from_ref(&decided))
        .with_pipeline_headers(decided.result.as_ref().err(), session.allowance())
}
