//! `GET /workspaces/{id}/activity?include=peer_info` (REFERENCE-2.md §2.5): each row gains
//! `peer_name` / `peer_role` of its sender's workspace, `agent_card_url`, and the `attachments`
//! its request body carries. berth builds `agent_card_url` from the platform URL rule (no `//`
//! when the configured URL ends in `/`, §9.2 #19).

use std::collections::HashMap;

use berth_core::{ActivityRecord, WorkspaceService};
use berth_domain::WorkspaceId;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ApiError;

/// Whether `include` (comma-separated flags, whitespace-trimmed) asks for `peer_info`.
pub(crate) fn wanted(include: Option<&String>) -> bool {
    include.is_some_and(|i| i.split(',').any(|f| f.trim() == "peer_info"))
}

/// Name and role of every sender workspace of `rows` that exists (removed ones included, like
/// the reference's LEFT JOIN).
pub(crate) async fn peers(
    service: &WorkspaceService,
    rows: &[ActivityRecord],
) -> Result<HashMap<Uuid, (Option<String>, Option<String>)>, ApiError> {
    let mut out = HashMap::new();
    for source in rows.iter().filter_map(|r| r.source_id) {
        if out.contains_key(&source) {
            continue;
        }
        let row = service
            .get(WorkspaceId::from(source))
            .await
            .map_err(|e| ApiError::internal("query failed", e))?;
        let info = row.map_or((None, None), |v| (Some(v.workspace.name), v.workspace.role));
        out.insert(source, info);
    }
    Ok(out)
}

/// Adds the peer fields to one listed row, each only when it has a value.
pub(crate) fn extend(
    row: &mut berth_api::activity::ActivityEntry,
    peers: &HashMap<Uuid, (Option<String>, Option<String>)>,
    platform_url: &str,
) {
    if let Some(source) = row.source_id {
        if let Some((name, role)) = peers.get(&source) {
            let present = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
            row.peer_name = present(name);
            row.peer_role = present(role);
        }
        row.agent_card_url = Some(format!("{platform_url}/registry/discover/{source}"));
    }
    let attachments = row
        .request_body
        .as_ref()
        .map(attachments)
        .unwrap_or_default();
    if !attachments.is_empty() {
        row.attachments = Some(attachments);
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The attachments of a request body: the file/image/audio parts of an A2A envelope
/// (`params.message.parts[]`), else a flat upload manifest (`uri` or `file_id` at the root).
pub(crate) fn attachments(body: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let parts = body
        .pointer("/params/message/parts")
        .and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        let Some(kind) = str_at(part, "kind").or_else(|| str_at(part, "type")) else {
            continue;
        };
        if !matches!(kind, "file" | "image" | "audio") {
            continue;
        }
        let src = part.get("file").filter(|f| f.is_object()).unwrap_or(part);
        let (uri, mime, name) = (
            str_at(src, "uri"),
            str_at(src, "mime_type"),
            str_at(src, "name"),
        );
        if uri.is_none() && name.is_none() {
            continue;
        }
        out.push(attachment(kind, uri, mime, name));
    }
    if !out.is_empty() {
        return out;
    }
    // Shape B: a flat upload manifest.
    if body.get("uri").is_some() || body.get("file_id").is_some() {
        let uri = str_at(body, "uri");
        let name = str_at(body, "name");
        let mime = str_at(body, "mimeType").or_else(|| str_at(body, "mime_type"));
        if uri.is_some() || name.is_some() {
            let kind = match mime {
                Some(m) if m.starts_with("image/") => "image",
                Some(m) if m.starts_with("audio/") => "audio",
                Some(m) if m.starts_with("video/") => "video",
                _ => "file",
            };
            out.push(attachment(kind, uri, mime, name));
        }
    }
    out
}

fn attachment(kind: &str, uri: Option<&str>, mime: Option<&str>, name: Option<&str>) -> Value {
    let mut a = Map::new();
    a.insert("kind".into(), kind.into());
    for (key, value) in [("uri", uri), ("mime_type", mime), ("name", name)] {
        if let Some(v) = value {
            a.insert(key.into(), v.into());
        }
    }
    Value::Object(a)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn envelope_parts_become_attachments() {
        let body = json!({"params": {"message": {"parts": [
            {"kind": "text", "text": "hi"},
            {"kind": "file", "file": {"uri": "s3://a", "mime_type": "text/plain", "name": "a.txt"}},
            {"type": "image", "uri": "https://x/i.png"},
            {"kind": "audio", "file": {"mime_type": "audio/ogg"}},
        ]}}});
        assert_eq!(
            attachments(&body),
            vec![
                json!({"kind": "file", "uri": "s3://a", "mime_type": "text/plain", "name": "a.txt"}),
                json!({"kind": "image", "uri": "https://x/i.png"}),
            ]
        );
    }

    #[test]
    fn a_flat_manifest_is_one_attachment_with_a_kind_from_its_mime_type() {
        let body = json!({"file_id": "f1", "name": "clip.mp4", "mimeType": "video/mp4"});
        assert_eq!(
            attachments(&body),
            vec![json!({"kind": "video", "mime_type": "video/mp4", "name": "clip.mp4"})]
        );
        assert!(attachments(&json!({"file_id": "f1"})).is_empty());
        assert!(attachments(&json!({"text": "no files"})).is_empty());
    }

    #[test]
    fn include_flags_are_trimmed() {
        assert!(wanted(Some(&" other , peer_info ".to_owned())));
        assert!(!wanted(Some(&"peer_infos".to_owned())));
        assert!(!wanted(None));
    }
}
