//! What both HTTP APIs share: request bodies read within bounds ([`body`]), the extractors
//! that refuse with the contract's errors ([`extract`]), and the one mapping of failures to
//! those errors and their statuses ([`error`]).

pub mod body;
pub mod error;
pub mod extract;
