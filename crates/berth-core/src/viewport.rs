//! `GET/PUT /canvas/viewport` (REFERENCE-2.md §7.4–7.5): one pan/zoom for the whole server.

use berth_store::Viewport;

use crate::service::WorkspaceService;

impl WorkspaceService {
    /// The saved viewport, or `{x: 0, y: 0, zoom: 1}` when none was saved. Unlike the
    /// reference, a database error is an error, not the default.
    pub async fn viewport(&self) -> Result<Viewport, berth_store::Error> {
        Ok(self.store.viewport().await?.unwrap_or_default())
    }

    /// Replaces the viewport. The caller checks the values (finite, `zoom` > 0).
    pub async fn save_viewport(&self, viewport: Viewport) -> Result<(), berth_store::Error> {
        self.store.save_viewport(viewport).await
    }
}
