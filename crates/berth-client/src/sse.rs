//! A Server-Sent Events parser: bytes in, frames out.
//!
//! Hand-written because the format is small and berth needs only part of it (the
//! `text/event-stream` rules of the HTML standard: `id`, `event`, `data` fields, comments,
//! `\n`, `\r\n` or `\r` line ends, a blank line dispatches), and because the event stream has to
//! own its reconnects with `Last-Event-ID` itself rather than through a general crate's retry
//! policy.

/// One dispatched SSE frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Frame {
    /// The `id:` field, when the frame had one.
    pub id: Option<String>,
    /// The `event:` field; `None` is the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Incremental parser state: feed it chunks as they arrive, collect the frames they complete.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to that line end.
    after_cr: bool,
    /// The frame being read.
    frame: Frame,
    /// Whether any `data:` line was seen for the current frame.
    has_data: bool,
}

impl Parser {
    /// Feeds `chunk`, returning the frames it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<Frame>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            // Dispatch. A frame without data is not an event, but its `id:` still sets the
            // stream's last event id (the HTML standard's rule; berth starts a fresh stream with
            // one): it is handed out with empty data, the caller only takes the id.
            if self.has_data || self.frame.id.is_some() {
                out.push(std::mem::take(&mut self.frame));
            } else {
                self.frame = Frame::default();
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // a comment: keep-alives, pings, the cut-off note
        }
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "id" => self.frame.id = Some(value.to_owned()),
            "event" => self.frame.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // `retry:` and unknown fields: berth reconnects on its own schedule
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[&[u8]]) -> Vec<Frame> {
        let mut p = Parser::default();
        input.iter().flat_map(|c| p.feed(c)).collect()
    }

    #[test]
    fn berths_frames_parse_with_their_ids() {
        let got = frames(&[b": ping\n\nid: 7\ndata: {\"type\":\"X\"}\n\n: keep-alive\n\n"]);
        assert_eq!(
            got,
            vec![Frame {
                id: Some("7".into()),
                event: None,
                data: "{\"type\":\"X\"}".into()
            }]
        );
    }

    #[test]
    fn chunks_split_anywhere_and_every_line_end_works() {
        let text =
            b"id: 1\r\ndata: a\r\ndata: b\r\n\r\nevent: error\rdata: {}\r\rid: 3\ndata:c\n\n";
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            let got = frames(&[a, b]);
            assert_eq!(got.len(), 3, "split at {split}: {got:?}");
            assert_eq!(got[0].data, "a\nb");
            assert_eq!(got[0].id.as_deref(), Some("1"));
            assert_eq!(got[1].event.as_deref(), Some("error"));
            assert_eq!(got[1].data, "{}");
            assert_eq!(got[2].data, "c");
            assert_eq!(got[2].id.as_deref(), Some("3"));
        }
    }

    #[test]
    fn a_frame_without_data_is_dropped_unless_it_sets_the_id_and_an_unfinished_one_waits() {
        assert_eq!(frames(&[b"event: x\n\n"]), vec![]);
        assert_eq!(
            frames(&[b"id: 4\n: ping\n\n"]),
            vec![Frame {
                id: Some("4".into()),
                event: None,
                data: String::new()
            }]
        );
        assert_eq!(frames(&[b"id: 4\ndata: x\n"]), vec![]);
    }
}
