//! The event stream (SSE) with `Last-Event-ID` resume, the event log and the all-workspaces
//! follower.

use std::time::Duration;

use berth_client::{DeleteOptions, StreamEvent};
use futures_util::{Stream, StreamExt as _};
use serde_json::json;

use crate::both_stores;
use crate::harness::Berth;

both_stores!(
    the_stream_replays_and_resumes_after_the_last_event_id,
    following_every_workspace_sees_new_events,
);

/// The next event of `stream`, within 20 s.
async fn next(
    stream: &mut (impl Stream<Item = berth_client::Result<StreamEvent>> + Unpin),
) -> StreamEvent {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
        .expect("an event")
}

/// Records an `ACTIVITY_LOGGED` event for `id`.
async fn activity(b: &Berth, id: berth_domain::WorkspaceId, summary: &str) {
    b.client
        .raw(
            berth_client::Method::POST,
            &format!("/workspaces/{id}/activity"),
            Some(&json!({"activity_type": "agent_log", "summary": summary})),
        )
        .await
        .expect("activity");
}

async fn the_stream_replays_and_resumes_after_the_last_event_id(b: &Berth) {
    let id = b.external("watched").await;
    // The log holds the create's events; a replay from 0 yields them in order.
    let log = b
        .client
        .event_log(Some(id), Some(0), None)
        .await
        .expect("log");
    assert!(!log.is_empty(), "a create records events");
    let mut stream = Box::pin(b.client.events_after(id, Some(0)));
    let mut replayed = Vec::new();
    for _ in &log {
        replayed.push(next(&mut stream).await);
    }
    assert_eq!(
        replayed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        log.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert_eq!(replayed[0].event.event_type, log[0].event_type);

    // Then live: the same connection carries new events as they are recorded.
    activity(b, id, "first").await;
    let first = next(&mut stream).await;
    assert_eq!(first.event.event_type, "ACTIVITY_LOGGED");
    assert!(first.seq > replayed.last().expect("replayed").seq);
    activity(b, id, "second").await;
    let second = next(&mut stream).await;
    assert!(second.seq > first.seq);
    drop(stream);

    // Resume after the first: exactly what came after it.
    let mut resumed = Box::pin(b.client.events_after(id, Some(first.seq)));
    let again = next(&mut resumed).await;
    assert_eq!(again, second, "Last-Event-ID resumes right after it");
    drop(resumed);

    // A removed workspace's stream is refused: the stream yields that error once and ends.
    b.client
        .delete_workspace(id, DeleteOptions::default())
        .await
        .expect("delete");
    let mut gone = Box::pin(b.client.events(id));
    let err = tokio::time::timeout(Duration::from_secs(20), gone.next())
        .await
        .expect("an answer")
        .expect("one item")
        .expect_err("a removed workspace has no stream");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert!(
        gone.next().await.is_none(),
        "the stream ends after the refusal"
    );
}

/// A dropped connection and a cut-off stream are both resumed with `Last-Event-ID`: a fake
/// SSE server writes the first event and closes the connection, then writes the second and
/// the server's cut-off frame (`event: error`) on a connection it keeps open, then the third.
#[tokio::test]
async fn drops_and_cut_offs_resume_with_the_last_event_id() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let frame = |seq: i64| {
        format!(
            "id: {seq}\ndata: {}\n\n",
            json!({"type": "ACTIVITY_LOGGED", "timestamp": 1_700_000_000_000_i64 + seq, "data": {"n": seq}})
        )
    };
    let cut = format!(
        ": cut off: queue_full\nevent: error\ndata: {}\n\n",
        json!({"error": "subscriber queue full", "last_event_id": 2})
    );
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let (seen, mut requests) = tokio::sync::mpsc::unbounded_channel::<String>();
    let server = tokio::spawn(async move {
        let bodies = [
            format!(": ping\n\n{}", frame(1)),
            format!("{}{cut}", frame(2)),
            frame(3),
        ];
        let mut open = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.expect("read");
            let _ = seen.send(String::from_utf8_lossy(&buf[..n]).to_lowercase());
            sock.write_all(head.as_bytes()).await.expect("write");
            sock.write_all(body.as_bytes()).await.expect("write");
            if i > 0 {
                // Kept open: only the cut-off frame may make the client reconnect.
                open.push(sock);
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(open);
    });
    let client = berth_client::Client::new(&base)
        .expect("client")
        .with_token("t");
    let id = berth_domain::WorkspaceId::new_v4();
    let mut stream = Box::pin(client.events(id));
    let seqs = [
        next(&mut stream).await.seq,
        next(&mut stream).await.seq,
        next(&mut stream).await.seq,
    ];
    assert_eq!(seqs, [1, 2, 3]);
    let first = requests.recv().await.expect("first request");
    let second = requests.recv().await.expect("second request");
    let third = requests.recv().await.expect("third request");
    server.abort();
    assert!(
        first.starts_with(&format!("get /workspaces/{id}/events/stream ")),
        "{first}"
    );
    assert!(!first.contains("last-event-id"), "{first}");
    assert!(first.contains("authorization: bearer t"), "{first}");
    assert!(second.contains("last-event-id: 1\r\n"), "{second}");
    assert!(third.contains("last-event-id: 2\r\n"), "{third}");
}

/// A connection that drops before its first event resumes from the position the server sent in
/// its first, id-only frame: the reconnect carries that id (before, it went live-only and lost
/// what happened in between).
#[tokio::test]
async fn a_drop_before_the_first_event_resumes_from_the_streams_start() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let event = format!(
        "id: 8\ndata: {}\n\n",
        json!({"type": "ACTIVITY_LOGGED", "timestamp": 1_700_000_000_008_i64, "data": {}})
    );
    let (seen, mut requests) = tokio::sync::mpsc::unbounded_channel::<String>();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        for body in ["id: 7\n: ping\n\n".to_owned(), event] {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.expect("read");
            let _ = seen.send(String::from_utf8_lossy(&buf[..n]).to_lowercase());
            sock.write_all(head.as_bytes()).await.expect("write");
            sock.write_all(body.as_bytes()).await.expect("write");
            open.push(sock);
            if open.len() == 1 {
                open.clear(); // the first connection drops before any event
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let client = berth_client::Client::new(&base)
        .expect("client")
        .with_token("t");
    let mut stream = Box::pin(client.events(berth_domain::WorkspaceId::new_v4()));
    assert_eq!(next(&mut stream).await.seq, 8);
    let first = requests.recv().await.expect("first request");
    let second = requests.recv().await.expect("second request");
    server.abort();
    assert!(!first.contains("last-event-id"), "{first}");
    assert!(second.contains("last-event-id: 7\r\n"), "{second}");
}

async fn following_every_workspace_sees_new_events(b: &Berth) {
    let before = b.external("old").await;
    let mut all = Box::pin(b.client.follow_all_events(None));
    // The follower starts after the newest event: the old workspace's events are not replayed.
    let poll_started = tokio::time::timeout(Duration::from_millis(300), all.next()).await;
    assert!(poll_started.is_err(), "nothing new yet: {poll_started:?}");
    let id = b.external("new").await;
    let e = tokio::time::timeout(Duration::from_secs(20), all.next())
        .await
        .expect("an event")
        .expect("the stream goes on")
        .expect("an event");
    assert_eq!(e.workspace_id, Some(id));
    assert_ne!(e.workspace_id, Some(before));
}
