//! Cursor pagination of `GET /workspaces`: `?limit=N&cursor=C`, the next page's cursor in the
//! `X-Next-Cursor` header (absent on the last page).

use berth_api::workspaces::Workspace;
use futures_util::Stream;

use crate::{Client, Error, Result};

/// One page of `GET /workspaces?limit=`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The workspaces of this page, oldest first.
    pub items: Vec<Workspace<'static>>,
    /// The cursor of the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

impl Client {
    /// One page of at most `limit` (1 to 1000) workspaces, after `cursor` (from the previous
    /// page's [`Page::next_cursor`]; `None` for the first page).
    pub async fn list_workspaces_page(&self, limit: u32, cursor: Option<&str>) -> Result<Page> {
        let mut path = format!("/workspaces?limit={limit}");
        if let Some(c) = cursor {
            path.push_str("&cursor=");
            path.push_str(&crate::path_segment(c));
        }
        let req = self
            .request(reqwest::Method::GET, &path)
            .timeout(self.timeout);
        let resp = Self::check(req.send().await.map_err(Error::Transport)?).await?;
        let next_cursor = resp
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(Error::Transport)?;
        let items = serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            what: "GET /workspaces".into(),
            source,
        })?;
        Ok(Page { items, next_cursor })
    }

    /// Every workspace, fetched `page_size` (1 to 1000) at a time as the stream is read. The
    /// first error ends the stream.
    pub fn workspaces(
        &self,
        page_size: u32,
    ) -> impl Stream<Item = Result<Workspace<'static>>> + Send + 'static {
        use futures_util::StreamExt as _;
        enum State {
            Next(Option<String>),
            Done,
        }
        let client = self.clone();
        futures_util::stream::unfold(State::Next(None), move |state| {
            let client = client.clone();
            async move {
                let State::Next(cursor) = state else {
                    return None;
                };
                match client
                    .list_workspaces_page(page_size, cursor.as_deref())
                    .await
                {
                    Ok(page) => {
                        let next = match page.next_cursor {
                            Some(c) => State::Next(Some(c)),
                            None => State::Done,
                        };
                        let items: Vec<Result<Workspace<'static>>> =
                            page.items.into_iter().map(Ok).collect();
                        Some((futures_util::stream::iter(items), next))
                    }
                    Err(e) => Some((futures_util::stream::iter(vec![Err(e)]), State::Done)),
                }
            }
        })
        .flatten()
    }
}
