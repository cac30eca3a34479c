//! The pages, and the routes of both faces.
//!
//! The tenant pages (`overview`, `targets` with their `routing` sections, `catalogue`,
//! `events`, `dead_letters`, `sources`, `monitors`) are one router, nested at `/console/tenants/{id}` and at `/portal`; a
//! [`Ctx`] tells them which tenant they show, where their links go and which face they
//! are on. The console's own pages are `home` (what needs looking at, and find by id),
//! `tenants` (the list and the operator's actions on one tenant) and `system`; `signin`
//! serves both faces' sign-in and sign-out.

pub mod catalogue;
pub mod ctx;
pub mod dead_letters;
pub mod events;
pub mod home;
pub mod monitors;
pub mod overview;
pub mod routes;
pub mod routing;
pub mod signin;
pub mod sources;
pub mod system;
pub mod targets;
pub mod tenants;
