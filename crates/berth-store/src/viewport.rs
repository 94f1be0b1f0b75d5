//! The canvas viewport (REFERENCE-2.md §7): one pan/zoom for the whole server.

/// Where the canvas is panned and zoomed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    /// Horizontal pan.
    pub x: f64,
    /// Vertical pan.
    pub y: f64,
    /// Zoom factor (> 0).
    pub zoom: f64,
}

impl Default for Viewport {
    /// The reference's answer when nothing was saved: `{"x":0,"y":0,"zoom":1}`.
    fn default() -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            zoom: 1.0,
        }
    }
}
