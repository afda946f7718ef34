//! The limits an orchestration's custom status and stream events keep to.

/// How the size of the custom status is measured against its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusMeasure {
    /// Bytes of UTF-16 (two bytes per code unit), as Durable Functions
    /// measures it (the default).
    #[default]
    Utf16,
    /// Bytes of UTF-8.
    Utf8,
}

impl StatusMeasure {
    pub(super) fn measure(self, text: &str) -> usize {
        match self {
            Self::Utf16 => text.encode_utf16().count() * 2,
            Self::Utf8 => text.len(),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Utf16 => "UTF-16",
            Self::Utf8 => "UTF-8",
        }
    }
}

/// Size limits enforced on orchestration code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The custom status cap in bytes (default 16 KiB).
    pub custom_status_max_bytes: usize,
    /// How the custom status is measured (default UTF-16).
    pub custom_status_measure: StatusMeasure,
    /// The cap on one stream event's serialized JSON payload in bytes
    /// (default 64 KiB).
    pub stream_event_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            custom_status_max_bytes: 16 * 1024,
            custom_status_measure: StatusMeasure::Utf16,
            stream_event_max_bytes: 64 * 1024,
        }
    }
}
