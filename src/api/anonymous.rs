//! What callers that have proven nothing yet may cost (security review, findings 1 and 3).
//! Providers' receipts and webhooks, one-click links and seed 001's opened routes are read
//! before (or without) any credential: their bodies are read here, against one budget of
//! memory shared by all of them, and seed 001's opened routes answer only the configured
//! networks, each address within its own rate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::CallerLimit;
use crate::http::{ApiError, Refusal};

/// Bytes that the bodies of unproven callers may hold at once, all together.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(total_bytes: usize) -> BodyBudget {
        let total = total_bytes.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
        }
    }

    /// Takes `n` more bytes for `held`, or says the budget is spent.
    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, n: usize) -> Result<(), ApiError> {
        let n = u32::try_from(n).map_err(|_| busy())?;
        let more = self
            .bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| busy())?;
        match held {
            Some(permit) => permit.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many unauthenticated uploads at once; try again shortly",
    )
}

/// The largest body of a provider's webhook or a one-click post (Twilio and Meta send a few
/// KiB; Meta batches status updates).
pub const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// Reads `req`'s whole body, at most `limit` bytes (no drain past it: an unproven caller
/// that sends more is cut off), each chunk taken from `budget` as it arrives; the request
/// with its body in memory, and the budget it holds until dropped.
pub async fn read_within_budget(
    req: Request,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Request, Option<OwnedSemaphorePermit>), ApiError> {
    let (parts, body) = req.into_parts();
    let mut held = None;
    let bytes = crate::http::read_limited(&parts.headers, body, limit, 0, |n| {
        budget.take(&mut held, n)
    })
    .await?;
    Ok((
        Request::from_parts(parts, axum::body::Body::from(bytes)),
        held,
    ))
}

/// Who may call seed 001's opened routes without credentials, and how often.
pub struct OpenRequests {
    /// Only callers from these networks (`HERALD_PUBLIC_NETWORKS`).
    pub networks: Vec<IpNet>,
    /// Calls per client address.
    pub per_address: CallerLimit,
}

impl OpenRequests {
    /// Refuses a caller outside the networks, or over its address's rate.
    pub fn admit(&self, req: &Request) -> Result<(), Refusal> {
        let Some(address) = peer(req) else {
            return Err(ApiError::forbidden("the caller's address is unknown").into());
        };
        if !self.networks.iter().any(|net| net.contains(&address)) {
            return Err(ApiError::unauthorized(
                "missing credentials: send Authorization: Bearer <API key> (this address may not call without one)",
            )
            .into());
        }
        self.per_address
            .check(&address.to_string())
            .map_err(|wait| {
                Refusal::too_many("this address's call rate is exceeded, retry later", wait)
            })
    }
}

fn peer(req: &Request) -> Option<IpAddr> {
    let ConnectInfo(addr) = req.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(addr.ip().to_canonical())
}

/// `HERALD_PUBLIC_NETWORKS`: CIDR blocks (`10.0.0.0/8`) or single addresses.
pub fn parse_networks(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{e:?} is not a network (10.0.0.0/8) or an address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_from(addr: &str) -> Request {
        let mut req = Request::new(axum::body::Body::empty());
        req.extensions_mut()
            .insert(ConnectInfo(addr.parse::<SocketAddr>().unwrap()));
        req
    }

    #[test]
    fn only_listed_networks_may_call_each_within_its_rate() {
        let open = OpenRequests {
            networks: parse_networks(&["10.1.0.0/16".into(), "::1".into()]).unwrap(),
            per_address: CallerLimit::new(1, 2),
        };
        assert!(open.admit(&request_from("10.1.2.3:5000")).is_ok());
        assert!(open.admit(&request_from("[::1]:5000")).is_ok());
        assert!(matches!(
            open.admit(&request_from("10.2.0.1:5000")),
            Err(Refusal::Api(e)) if e.status == StatusCode::UNAUTHORIZED
        ));
        assert!(open.admit(&request_from("10.1.2.3:5001")).is_ok());
        assert!(matches!(
            open.admit(&request_from("10.1.2.3:5002")),
            Err(Refusal::TooMany { .. })
        ));
        // Another address has a rate of its own.
        assert!(open.admit(&request_from("10.1.9.9:5000")).is_ok());
        assert!(open
            .admit(&Request::new(axum::body::Body::empty()))
            .is_err());
    }

    #[test]
    fn a_network_list_names_the_entry_it_cannot_read() {
        let err = parse_networks(&["10.0.0.0/8".into(), "everyone".into()]).unwrap_err();
        assert!(err.contains("\"everyone\""), "{err}");
    }

    #[tokio::test]
    async fn bodies_past_the_shared_budget_are_refused_and_the_budget_comes_back() {
        let budget = BodyBudget::new(1000);
        let post = |n: usize| Request::new(axum::body::Body::from(vec![b'x'; n]));
        let (_, first) = read_within_budget(post(600), 2000, &budget).await.unwrap();
        let second = read_within_budget(post(600), 2000, &budget).await;
        assert_eq!(second.unwrap_err().status, StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        assert!(read_within_budget(post(600), 2000, &budget).await.is_ok());
        let too_large = read_within_budget(post(2001), 2000, &budget).await;
        assert_eq!(too_large.unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
