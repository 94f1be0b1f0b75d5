//! Event streams: a workspace's Server-Sent Events with `Last-Event-ID` resume, and the whole
//! log followed by polling `GET /events?after=`.
//!
//! **One workspace** ([`Client::events`]): `GET /workspaces/{id}/events/stream`. Each frame's
//! `id:` is the event's sequence number; when the connection drops (a network error, a server
//! restart, or the server cutting off a reader that fell behind, which it announces with an
//! `event: error` frame naming the last id it wrote) the stream reconnects with `Last-Event-ID`
//! set to the last sequence number it yielded, and the server replays everything after it from
//! its log: no event is lost or repeated across reconnects. It gives up, yielding one error and
//! ending, when the server refuses the stream (an [`Error::Api`], e.g. 404 for a removed
//! workspace) or after [`RECONNECT_ATTEMPTS`] connection attempts in a row that got no answer;
//! reconnects back off from 0.25 s to 5 s while connections keep ending without an event. A
//! fresh stream starts from the server's position in the log (its first frame carries only an
//! id), so a drop even before the first event resumes without a gap.
//!
//! **Every workspace** ([`Client::follow_all_events`]): berth has no server-wide SSE route; its
//! server-wide live feed is the `/ws` WebSocket, which has no resume. This client polls the
//! event log instead, `GET /events?after=<seq>` every [`POLL_INTERVAL`]: simple, resumable from
//! any sequence number, and only one request per interval when nothing happens.

use std::collections::VecDeque;
use std::time::Duration;

use berth_api::events::{Event, LiveFrame};
use berth_domain::WorkspaceId;
use futures_util::Stream;

use crate::sse::{Frame, Parser};
use crate::{Client, Error, Result};

/// Failed reconnects in a row after which [`Client::events`] gives up.
pub const RECONNECT_ATTEMPTS: u32 = 8;
/// The interval of [`Client::follow_all_events`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// One event of a workspace's live stream: the SSE frame's `data` and its `id:` line.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// The event's sequence number in the log (the SSE `id:`), what a resume starts after.
    pub seq: i64,
    /// The frame's body.
    pub event: LiveFrame,
}

/// The state of one SSE stream between polls.
struct SseState {
    client: Client,
    id: WorkspaceId,
    last_seq: Option<i64>,
    response: Option<reqwest::Response>,
    parser: Parser,
    ready: VecDeque<StreamEvent>,
    /// Connection attempts in a row that failed (no answer): the stream gives up at
    /// [`RECONNECT_ATTEMPTS`].
    connect_failures: u32,
    /// Connections in a row that ended without an event (dropped, cut off): they only slow
    /// the reconnects down, so a quiet stream with an occasional drop follows for ever.
    idle_drops: u32,
    done: bool,
}

impl SseState {
    async fn connect(&mut self) -> Result<()> {
        let mut req = self
            .client
            .request(
                reqwest::Method::GET,
                &format!("/workspaces/{}/events/stream", self.id),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(seq) = self.last_seq {
            req = req.header("last-event-id", seq.to_string());
        }
        let resp = req.send().await.map_err(Error::Transport)?;
        let resp = Client::check(resp).await?;
        self.response = Some(resp);
        self.parser = Parser::default();
        Ok(())
    }

    /// Handles one parsed frame: an event to yield, or the server's cut-off notice.
    fn take(&mut self, frame: Frame) -> Result<()> {
        if frame.event.as_deref() == Some("error") {
            // The server cut this reader off (or could not read its log): reconnect and resume
            // after the last event yielded.
            self.response = None;
            self.idle_drops += 1;
            return Ok(());
        }
        let seq = frame
            .id
            .as_deref()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| Error::Stream(format!("an event without a numeric id: {frame:?}")))?;
        if frame.data.is_empty() {
            // An id-only frame: a fresh stream's position in the log, resumed from after a
            // drop before the first event (never moving backwards).
            if self.last_seq.is_none_or(|last| seq > last) {
                self.last_seq = Some(seq);
            }
            return Ok(());
        }
        if self.last_seq.is_some_and(|last| seq <= last) {
            return Ok(()); // seen already
        }
        let event: LiveFrame =
            serde_json::from_str(&frame.data).map_err(|source| Error::Decode {
                what: "the event stream".into(),
                source,
            })?;
        self.last_seq = Some(seq);
        self.idle_drops = 0;
        self.ready.push_back(StreamEvent { seq, event });
        Ok(())
    }

    fn into_stream(self) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|e| (e, s)) })
    }

    async fn next(&mut self) -> Option<Result<StreamEvent>> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            let Some(resp) = self.response.as_mut() else {
                let tries = self.connect_failures + self.idle_drops;
                if tries > 0 {
                    // 0.25 s, 0.5 s, 1 s, … up to 5 s between attempts.
                    let backoff = Duration::from_millis(250 << tries.min(5).saturating_sub(1));
                    tokio::time::sleep(backoff.min(Duration::from_secs(5))).await;
                }
                match self.connect().await {
                    Ok(()) => self.connect_failures = 0,
                    Err(e @ Error::Api { .. }) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    Err(e) => {
                        self.connect_failures += 1;
                        if self.connect_failures >= RECONNECT_ATTEMPTS {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                continue;
            };
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    for frame in self.parser.feed(&bytes) {
                        if let Err(e) = self.take(frame) {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                // The server ended the stream, or the connection broke: resume.
                Ok(None) | Err(_) => {
                    self.response = None;
                    self.idle_drops += 1;
                }
            }
        }
    }
}

impl Client {
    /// The live events of workspace `id` as a stream, from now on. See the [module
    /// docs](crate::events) for how it reconnects.
    pub fn events(
        &self,
        id: WorkspaceId,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        self.events_after(id, None)
    }

    /// Like [`Client::events`], but first replays every event of the workspace after sequence
    /// number `last_event_id` from the log (`Last-Event-ID`); `None` starts with live events.
    pub fn events_after(
        &self,
        id: WorkspaceId,
        last_event_id: Option<i64>,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        self.sse_state(id, last_event_id).into_stream()
    }

    /// Like [`Client::events_after`], but connected when it returns: the server has subscribed
    /// this stream to the workspace's events, so it sees every event recorded from now on,
    /// including those of an action taken right after (the lazily connected streams of
    /// [`Client::events`] connect when first polled). A refused stream is the error here.
    pub async fn subscribe(
        &self,
        id: WorkspaceId,
        last_event_id: Option<i64>,
    ) -> Result<impl Stream<Item = Result<StreamEvent>> + Send + 'static> {
        let mut state = self.sse_state(id, last_event_id);
        state.connect().await?;
        Ok(state.into_stream())
    }

    fn sse_state(&self, id: WorkspaceId, last_event_id: Option<i64>) -> SseState {
        SseState {
            client: self.clone(),
            id,
            last_seq: last_event_id,
            response: None,
            parser: Parser::default(),
            ready: VecDeque::new(),
            connect_failures: 0,
            idle_drops: 0,
            done: false,
        }
    }

    /// Every event of every workspace from sequence number `after` on (`None`: from the newest
    /// event now), polling `GET /events?after=` (see the [module docs](crate::events)). Ends
    /// only with an error.
    pub fn follow_all_events(
        &self,
        after: Option<i64>,
    ) -> impl Stream<Item = Result<Event>> + Send + 'static {
        struct Poll {
            client: Client,
            after: Option<i64>,
            ready: VecDeque<Event>,
            done: bool,
        }
        let state = Poll {
            client: self.clone(),
            after,
            ready: VecDeque::new(),
            done: false,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(e) = s.ready.pop_front() {
                    return Some((Ok(e), s));
                }
                if s.done {
                    return None;
                }
                let Some(after) = s.after else {
                    // Start after the newest event there is now.
                    match s.client.event_log(None, None, Some(1)).await {
                        Ok(newest) => s.after = Some(newest.first().map_or(0, |e| e.seq)),
                        Err(e) => {
                            s.done = true;
                            return Some((Err(e), s));
                        }
                    }
                    continue;
                };
                match s.client.event_log(None, Some(after), Some(1000)).await {
                    Ok(page) if page.is_empty() => tokio::time::sleep(POLL_INTERVAL).await,
                    Ok(page) => {
                        s.after = page.last().map(|e| e.seq).or(s.after);
                        s.ready.extend(page);
                    }
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })
    }
}
