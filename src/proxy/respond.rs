//! Responses the gateway writes itself: errors in the caller's dialect, `/v1/models`, `/healthz`.
//! Imports: `error`, `registry`, Pingora's session. Not `dialect` (error bodies come from `error`),
//! `ledger` or `metrics`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::error::{Dialect, GatewayError};
use crate::registry::{Key, Snapshot};

/// Writes a complete JSON response.
pub async fn json(session: &mut Session, status: u16, body: Bytes, id: RequestId<'_>) -> Result<()> {
    answer(session, status, body, "application/json", id, &[]).await
}

/// The request's id and the caller's dialect, which says where the id goes: OpenAI's SDKs read
/// `x-request-id`, Anthropic's `request-id`, so an Anthropic caller gets both.
#[derive(Clone, Copy)]
pub struct RequestId<'a> {
    pub id: &'a str,
    pub caller: Dialect,
}

/// Writes a complete response of any content type, with `extra` headers.
pub async fn answer(
    session: &mut Session,
    status: u16,
    body: Bytes,
    content_type: &str,
    id: RequestId<'_>,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(5 + extra.len()))?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.set_content_length(body.len())?;
    if !id.id.is_empty() {
        resp.insert_header("x-request-id", id.id)?;
        if id.caller == Dialect::Anthropic {
            resp.insert_header("request-id", id.id)?;
        }
    }
    // An unread request body would be taken for the next request: close instead.
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes `err` in the caller's dialect, with its header (`GatewayError::header`) when it has one.
pub async fn error(session: &mut Session, err: &GatewayError, id: RequestId<'_>) -> Result<()> {
    let status = err.status_in(id.caller);
    let header = err.header();
    let extra: &[(&'static str, &str)] = match &header {
        Some((name, value)) => &[(*name, value.as_str())],
        None => &[],
    };
    answer(session, status, err.body_with_id(id.caller, id.id), "application/json", id, extra).await
}

/// `GET /v1/models`: the models this key may use, in the caller's list shape.
pub fn models_body(snapshot: &Snapshot, key: &Key, dialect: Dialect) -> Bytes {
    let mut names: Vec<&str> = snapshot.models.keys().map(String::as_str).filter(|m| key.allows(m)).collect();
    names.sort_unstable();
    let data: Vec<serde_json::Value> = names.iter().map(|n| model_object(n, dialect)).collect();
    let v = match dialect {
        Dialect::OpenAi => serde_json::json!({ "object": "list", "data": data }),
        Dialect::Anthropic => serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        }),
    };
    Bytes::from(v.to_string())
}

/// `GET /v1/models/{id}`: one model, in the caller's shape (`plan` checked the key may use it).
pub fn model_body(name: &str, dialect: Dialect) -> Bytes {
    Bytes::from(model_object(name, dialect).to_string())
}

/// A model as each dialect's models API describes one.
fn model_object(name: &str, dialect: Dialect) -> serde_json::Value {
    match dialect {
        Dialect::OpenAi => serde_json::json!({ "id": name, "object": "model", "created": 0, "owned_by": "cheapmodel" }),
        Dialect::Anthropic => serde_json::json!({
            "type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"
        }),
    }
}
