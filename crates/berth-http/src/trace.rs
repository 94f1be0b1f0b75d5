//! The request span of the trace layer, with credentials taken out of the URI: `GET /ws` takes a
//! token as `?token=` (browsers cannot set `Authorization` on a WebSocket upgrade), and nothing
//! secret may reach a log line (DECISIONS.md §2.8).

use axum::http::{Request, Uri};

/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &["token", "access_token"];

/// `uri` with the value of every credential query parameter replaced by `[redacted]`.
pub(crate) fn redacted_uri(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            let decoded = percent_decoded_lowercase(name);
            if SECRET_PARAMS.contains(&decoded.as_str()) {
                format!("{name}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// A query parameter name, percent-decoded (so `%74oken` is `token` too) and lowercased.
fn percent_decoded_lowercase(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| char::from(c).to_digit(16);
        if b == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// The span of one request: method, redacted URI and version, at DEBUG like tower-http's default.
pub(crate) fn make_span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %redacted_uri(req.uri()),
        version = ?req.version(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redacted_uri(&s.parse().unwrap())
    }

    #[test]
    fn credential_parameters_are_redacted_and_the_rest_kept() {
        assert_eq!(r("/ws"), "/ws");
        assert_eq!(r("/ws?token=s3cret"), "/ws?token=[redacted]");
        assert_eq!(
            r("/ws?a=1&TOKEN=s3cret&b=2&access_token=x"),
            "/ws?a=1&TOKEN=[redacted]&b=2&access_token=[redacted]"
        );
        assert_eq!(r("/ws?%74oken=s3cret"), "/ws?%74oken=[redacted]");
        assert_eq!(r("/ws?token"), "/ws?token=[redacted]");
        assert_eq!(r("/events?after=3&limit=5"), "/events?after=3&limit=5");
        assert_eq!(r("/ws?tok%"), "/ws?tok%");
    }
}
