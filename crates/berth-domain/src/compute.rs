//! Compute configuration of a workspace (REFERENCE.md §1.8) and its validation (§3.6).
//!
//! Only the remote control-plane backend acts on it, but it is validated the same way in every
//! mode and stored in canonical form (zero fields omitted) so that equal configs compare equal.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// Instance types the control plane can start.
const INSTANCE_TYPES: &[&str] = &[
    "t3.medium",
    "t3.large",
    "t3.xlarge",
    "t3.2xlarge",
    "m6i.large",
    "m6i.xlarge",
    "c6i.xlarge",
];
const DISPLAY_MODES: &[&str] = &["", "none", "desktop-control", "gpu-desktop-control"];
const DISPLAY_PROTOCOLS: &[&str] = &["", "dcv", "novnc"];

/// Treats JSON `null` like an absent field, as Go's decoder does.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// The `compute` object of Create: all fields optional, zero meaning "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Compute {
    /// Cloud instance type; empty for the backend's default.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub instance_type: String,
    /// Disk settings.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub volume: ComputeVolume,
    /// Remote desktop settings.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub display: ComputeDisplay,
}

/// Disk settings of a [`Compute`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ComputeVolume {
    /// Root volume size in GB; 0 for the backend's default, else 30..=500.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub root_gb: i64,
}

/// Remote desktop settings of a [`Compute`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ComputeDisplay {
    /// `""`, `none`, `desktop-control` or `gpu-desktop-control`.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub mode: String,
    /// Width in pixels; 0 for the default, else 800..=3840.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub width: i64,
    /// Height in pixels; 0 for the default, else 600..=2160.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub height: i64,
    /// `""`, `dcv` or `novnc`.
    #[cfg_attr(feature = "schema", schema(nullable))]
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
}

/// Why a [`Compute`] was rejected. The messages are the reference's, verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ComputeError {
    /// `instance_type` is not in the allow-list.
    #[error("unsupported compute.instance_type")]
    InstanceType,
    /// `volume.root_gb` is neither 0 nor within 30..=500.
    #[error("compute.volume.root_gb must be between 30 and 500")]
    RootGb,
    /// `display.mode` is not a known mode.
    #[error("unsupported compute.display.mode")]
    DisplayMode,
    /// `display.protocol` is not a known protocol.
    #[error("unsupported compute.display.protocol")]
    DisplayProtocol,
    /// `display.width` or `display.height` is negative.
    #[error("compute.display width/height must be non-negative")]
    NegativeDimension,
    /// `display.width` is neither 0 nor within 800..=3840.
    #[error("compute.display.width must be between 800 and 3840")]
    Width,
    /// `display.height` is neither 0 nor within 600..=2160.
    #[error("compute.display.height must be between 600 and 2160")]
    Height,
}

impl ComputeVolume {
    fn is_zero(&self) -> bool {
        self.root_gb == 0
    }
}

impl ComputeDisplay {
    fn is_zero(&self) -> bool {
        self.mode.is_empty() && self.width == 0 && self.height == 0 && self.protocol.is_empty()
    }
}

impl Compute {
    /// Checks every field in the order of the §3.6 table; the first failure wins.
    pub fn validate(&self) -> Result<(), ComputeError> {
        if !self.instance_type.is_empty() && !INSTANCE_TYPES.contains(&self.instance_type.as_str())
        {
            return Err(ComputeError::InstanceType);
        }
        let root_gb = self.volume.root_gb;
        if root_gb != 0 && !(30..=500).contains(&root_gb) {
            return Err(ComputeError::RootGb);
        }
        let display = &self.display;
        if !DISPLAY_MODES.contains(&display.mode.as_str()) {
            return Err(ComputeError::DisplayMode);
        }
        if !DISPLAY_PROTOCOLS.contains(&display.protocol.as_str()) {
            return Err(ComputeError::DisplayProtocol);
        }
        if display.width < 0 || display.height < 0 {
            return Err(ComputeError::NegativeDimension);
        }
        if display.width != 0 && !(800..=3840).contains(&display.width) {
            return Err(ComputeError::Width);
        }
        if display.height != 0 && !(600..=2160).contains(&display.height) {
            return Err(ComputeError::Height);
        }
        Ok(())
    }

    /// Whether every field is empty or zero (then nothing is persisted).
    pub fn is_zero(&self) -> bool {
        self.instance_type.is_empty() && self.volume.is_zero() && self.display.is_zero()
    }

    /// The stored form: zero fields omitted, `volume`/`display` omitted when empty; a zero
    /// compute is `{}`.
    pub fn canonical_json(&self) -> Value {
        let mut root = Map::new();
        if !self.instance_type.is_empty() {
            root.insert("instance_type".into(), self.instance_type.clone().into());
        }
        if !self.volume.is_zero() {
            let mut volume = Map::new();
            volume.insert("root_gb".into(), self.volume.root_gb.into());
            root.insert("volume".into(), Value::Object(volume));
        }
        if !self.display.is_zero() {
            let d = &self.display;
            let mut display = Map::new();
            if !d.mode.is_empty() {
                display.insert("mode".into(), d.mode.clone().into());
            }
            if d.width != 0 {
                display.insert("width".into(), d.width.into());
            }
            if d.height != 0 {
                display.insert("height".into(), d.height.into());
            }
            if !d.protocol.is_empty() {
                display.insert("protocol".into(), d.protocol.clone().into());
            }
            root.insert("display".into(), Value::Object(display));
        }
        Value::Object(root)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn display(mode: &str, width: i64, height: i64, protocol: &str) -> Compute {
        Compute {
            display: ComputeDisplay {
                mode: mode.to_owned(),
                width,
                height,
                protocol: protocol.to_owned(),
            },
            ..Compute::default()
        }
    }

    fn msg(c: &Compute) -> String {
        c.validate()
            .map_or_else(|e| e.to_string(), |()| "ok".to_owned())
    }

    #[test]
    fn zero_compute_is_valid_and_empty() {
        let c = Compute::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.is_zero());
        assert_eq!(c.canonical_json(), json!({}));
    }

    #[test]
    fn instance_types() {
        for t in INSTANCE_TYPES {
            let c = Compute {
                instance_type: (*t).to_owned(),
                ..Compute::default()
            };
            assert_eq!(c.validate(), Ok(()), "{t}");
        }
        let c = Compute {
            instance_type: "p4d.24xlarge".to_owned(),
            ..Compute::default()
        };
        assert_eq!(msg(&c), "unsupported compute.instance_type");
    }

    #[test]
    fn root_gb_bounds() {
        for (gb, ok) in [
            (0, true),
            (30, true),
            (500, true),
            (29, false),
            (501, false),
            (-1, false),
        ] {
            let c = Compute {
                volume: ComputeVolume { root_gb: gb },
                ..Compute::default()
            };
            let want = if ok {
                "ok"
            } else {
                "compute.volume.root_gb must be between 30 and 500"
            };
            assert_eq!(msg(&c), want, "{gb}");
        }
    }

    #[test]
    fn display_rules() {
        assert_eq!(msg(&display("none", 0, 0, "")), "ok");
        assert_eq!(msg(&display("desktop-control", 1920, 1080, "dcv")), "ok");
        assert_eq!(
            msg(&display("gpu-desktop-control", 800, 600, "novnc")),
            "ok"
        );
        assert_eq!(msg(&display("", 3840, 2160, "")), "ok");
        assert_eq!(
            msg(&display("vnc", 0, 0, "")),
            "unsupported compute.display.mode"
        );
        assert_eq!(
            msg(&display("", 0, 0, "rdp")),
            "unsupported compute.display.protocol"
        );
        assert_eq!(
            msg(&display("", -1, 0, "")),
            "compute.display width/height must be non-negative"
        );
        assert_eq!(
            msg(&display("", 0, -1, "")),
            "compute.display width/height must be non-negative"
        );
        assert_eq!(
            msg(&display("", 799, 0, "")),
            "compute.display.width must be between 800 and 3840"
        );
        assert_eq!(
            msg(&display("", 3841, 0, "")),
            "compute.display.width must be between 800 and 3840"
        );
        assert_eq!(
            msg(&display("", 0, 599, "")),
            "compute.display.height must be between 600 and 2160"
        );
        assert_eq!(
            msg(&display("", 0, 2161, "")),
            "compute.display.height must be between 600 and 2160"
        );
    }

    #[test]
    fn check_order() {
        let c = Compute {
            instance_type: "bogus".to_owned(),
            volume: ComputeVolume { root_gb: 1 },
            display: ComputeDisplay {
                mode: "bogus".to_owned(),
                width: -1,
                height: 1,
                protocol: "bogus".to_owned(),
            },
        };
        assert_eq!(msg(&c), "unsupported compute.instance_type");
        let c = Compute {
            instance_type: String::new(),
            ..c
        };
        assert_eq!(msg(&c), "compute.volume.root_gb must be between 30 and 500");
        let c = Compute {
            volume: ComputeVolume::default(),
            ..c
        };
        assert_eq!(msg(&c), "unsupported compute.display.mode");
        assert_eq!(
            msg(&display("", -5, 1, "bogus")),
            "unsupported compute.display.protocol"
        );
        assert_eq!(
            msg(&display("", 1, -5, "")),
            "compute.display width/height must be non-negative"
        );
        assert_eq!(
            msg(&display("", 1, 1, "")),
            "compute.display.width must be between 800 and 3840"
        );
    }

    #[test]
    fn canonical_json_omits_zero_fields() {
        let c = Compute {
            instance_type: "t3.large".to_owned(),
            volume: ComputeVolume { root_gb: 0 },
            display: ComputeDisplay {
                mode: "desktop-control".to_owned(),
                width: 0,
                height: 900,
                protocol: String::new(),
            },
        };
        assert!(!c.is_zero());
        assert_eq!(
            c.canonical_json(),
            json!({"instance_type": "t3.large", "display": {"mode": "desktop-control", "height": 900}})
        );
        let v = Compute {
            volume: ComputeVolume { root_gb: 40 },
            ..Compute::default()
        };
        assert_eq!(v.canonical_json(), json!({"volume": {"root_gb": 40}}));
        let full = display("none", 1024, 768, "novnc");
        assert_eq!(
            full.canonical_json(),
            json!({"display": {"mode": "none", "width": 1024, "height": 768, "protocol": "novnc"}})
        );
    }

    #[test]
    fn deserializes_partial_and_null_fields() -> Result<(), serde_json::Error> {
        let c: Compute = serde_json::from_value(json!({}))?;
        assert!(c.is_zero());
        let c: Compute = serde_json::from_value(
            json!({"volume": null, "display": {"width": 1280, "mode": null}, "extra": 1}),
        )?;
        assert_eq!(c, display("", 1280, 0, ""));
        let c: Compute = serde_json::from_value(json!({"volume": {"root_gb": 100}}))?;
        assert_eq!(c.volume.root_gb, 100);
        // Canonical JSON reads back to the same value.
        let back: Compute = serde_json::from_value(c.canonical_json())?;
        assert_eq!(back, c);
        Ok(())
    }
}
