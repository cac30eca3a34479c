//! Sources: inbound webhooks from platforms that can only be given a URL (issue 4, in
//! progress). So far: [`verify`], the signature schemes, checked over the raw bytes in
//! constant time before anything is enqueued.

pub mod verify;
