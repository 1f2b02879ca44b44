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
pub async fn json(session: &mut Session, status: u16, body: Bytes, request_id: &str) -> Result<()> {
    json_with(session, status, body, request_id, &[]).await
}

/// Writes a complete response of any content type.
pub async fn answer(
    session: &mut Session,
    status: u16,
    body: Bytes,
    content_type: &str,
    request_id: &str,
    extra: &[(&str, &str)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    for (k, v) in extra {
        resp.insert_header(k.to_string(), *v)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.set_content_length(body.len())?;
    resp.insert_header("x-request-id", request_id)?;
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Writes a complete JSON response with extra headers.
pub async fn json_with(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.set_content_length(body.len())?;
    if !request_id.is_empty() {
        resp.insert_header("x-request-id", request_id)?;
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

/// Writes `err` in `dialect` (with `retry-after` when it has one). Anthropic's SDKs take the id
/// of a failed request from `request-id` (OpenAI's from `x-request-id`), so both carry it.
pub async fn error(session: &mut Session, dialect: Dialect, err: &GatewayError, request_id: &str) -> Result<()> {
    let status = err.status_in(dialect);
    let retry_after = err.retry_after().map(|s| s.to_string());
    let mut extra: Vec<(&'static str, &str)> = Vec::with_capacity(2);
    if let Some(secs) = &retry_after {
        extra.push(("retry-after", secs));
    }
    if dialect == Dialect::Anthropic && !request_id.is_empty() {
        extra.push(("request-id", request_id));
    }
    json_with(session, status, err.body(dialect), request_id, &extra).await
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
