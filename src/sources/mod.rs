//! Sources: inbound webhooks from platforms that can only be given a URL. [`verify`] holds the
//! signature schemes (checked over the raw bytes, in constant time, before anything is
//! enqueued); [`hooks`] the endpoint. Sources are managed through [`crate::manage`].

pub mod hooks;
pub mod verify;
