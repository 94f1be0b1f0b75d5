//! Inside a workspace: files (as bytes), one-shot commands and the terminal's diagnosis. The
//! terminal itself is a WebSocket (`GET /workspaces/{id}/terminal`, subprotocol
//! `berth.terminal.v1`); [`Client::terminal_url`] gives its address for a WebSocket client.

use std::time::Duration;

use berth_api::inside::{
    ExecBody, ExecResult, FileEntry, FileSaved, FilesQuery, FilesReplaced, ReplaceFiles,
    TerminalDiagnosis,
};
use berth_domain::WorkspaceId;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::{Client, Error, Result, path_segment};

/// `a/b c.md` as a URL path (`a/b%20c.md`): each component encoded, the slashes kept.
fn file_path(path: &str) -> String {
    path.split('/')
        .map(path_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// `?root=…` for the file routes (none: the server's default, `/configs`).
fn root_query(root: Option<&str>) -> String {
    root.map(|r| format!("?root={}", path_segment(r)))
        .unwrap_or_default()
}

impl Client {
    /// `GET /workspaces/{id}/files`: the entries under `path` of `root` (default `/configs`),
    /// `depth` levels deep (default 1).
    pub async fn list_files(&self, id: WorkspaceId, query: &FilesQuery) -> Result<Vec<FileEntry>> {
        let q = crate::routes::query_string(query);
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/files{q}"),
            None::<&()>,
        )
        .await
    }

    /// `GET /workspaces/{id}/files/{path}` as `application/octet-stream`: the file's exact bytes.
    pub async fn read_file(
        &self,
        id: WorkspaceId,
        path: &str,
        root: Option<&str>,
    ) -> Result<Vec<u8>> {
        let route = format!(
            "/workspaces/{id}/files/{}{}",
            file_path(path),
            root_query(root)
        );
        let req = self
            .request(Method::GET, &route)
            .timeout(self.timeout)
            .header(ACCEPT, "application/octet-stream");
        let resp = req.send().await.map_err(Error::Transport)?;
        let resp = Self::check(resp).await?;
        Ok(resp.bytes().await.map_err(Error::Transport)?.to_vec())
    }

    /// `PUT /workspaces/{id}/files/{path}` with the bytes as `application/octet-stream`
    /// (atomically replaced; under `/configs` kept across restarts and restarting a running
    /// workspace).
    pub async fn write_file(
        &self,
        id: WorkspaceId,
        path: &str,
        root: Option<&str>,
        content: Vec<u8>,
    ) -> Result<FileSaved> {
        let route = format!(
            "/workspaces/{id}/files/{}{}",
            file_path(path),
            root_query(root)
        );
        let what = format!("PUT {route}");
        let req = self
            .request(Method::PUT, &route)
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(content);
        self.send(&what, req).await
    }

    /// `DELETE /workspaces/{id}/files/{path}`: a file, a link, or a directory with everything
    /// in it.
    pub async fn delete_file(
        &self,
        id: WorkspaceId,
        path: &str,
        root: Option<&str>,
    ) -> Result<FileSaved> {
        self.call(
            Method::DELETE,
            &format!(
                "/workspaces/{id}/files/{}{}",
                file_path(path),
                root_query(root)
            ),
            None::<&()>,
        )
        .await
    }

    /// `PUT /workspaces/{id}/files`: writes every file of `files` (an overlay).
    pub async fn replace_files(
        &self,
        id: WorkspaceId,
        root: Option<&str>,
        files: &ReplaceFiles,
    ) -> Result<FilesReplaced> {
        self.call(
            Method::PUT,
            &format!("/workspaces/{id}/files{}", root_query(root)),
            Some(files),
        )
        .await
    }

    /// `POST /workspaces/{id}/exec`: runs one command to completion (or its timeout). The
    /// request waits as long as the command may run (`timeout_secs`, else five minutes) plus
    /// the client's own timeout.
    pub async fn exec(&self, id: WorkspaceId, body: &ExecBody) -> Result<ExecResult> {
        let route = format!("/workspaces/{id}/exec");
        let what = format!("POST {route}");
        let runs = Duration::from_secs(body.timeout_secs.unwrap_or(300));
        let req = self
            .request(Method::POST, &route)
            .timeout(self.timeout + runs)
            .json(body);
        self.send(&what, req).await
    }

    /// `GET /workspaces/{id}/terminal/diagnose`.
    pub async fn terminal_diagnose(&self, id: WorkspaceId) -> Result<TerminalDiagnosis> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/terminal/diagnose"),
            None::<&()>,
        )
        .await
    }

    /// The `ws://` (or `wss://`) address of the workspace's terminal, `rows` × `cols` to start
    /// with. Send the bearer as `Authorization` (or, from a browser, append `&token=`), and offer
    /// the `berth.terminal.v1` subprotocol for resize and exit messages.
    pub fn terminal_url(&self, id: WorkspaceId, rows: u16, cols: u16) -> String {
        let base = self.base_url().trim_end_matches('/');
        let ws = base
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
            .or_else(|| {
                base.strip_prefix("http://")
                    .map(|rest| format!("ws://{rest}"))
            })
            .unwrap_or_else(|| base.to_owned());
        format!("{ws}/workspaces/{id}/terminal?rows={rows}&cols={cols}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_keep_their_slashes_and_encode_the_rest() {
        assert_eq!(file_path("a/b c.md"), "a/b%20c.md");
        assert_eq!(file_path("skills/x?y#z"), "skills/x%3Fy%23z");
        assert_eq!(root_query(Some("/workspace")), "?root=%2Fworkspace");
        assert_eq!(root_query(None), "");
    }

    #[test]
    fn terminal_urls_follow_the_scheme() {
        let id = WorkspaceId::new_v4();
        let c = Client::new("http://127.0.0.1:8080").expect("client");
        assert_eq!(
            c.terminal_url(id, 24, 80),
            format!("ws://127.0.0.1:8080/workspaces/{id}/terminal?rows=24&cols=80")
        );
        let c = Client::new("https://berth.example/").expect("client");
        assert!(
            c.terminal_url(id, 1, 2)
                .starts_with("wss://berth.example/workspaces/")
        );
    }
}
