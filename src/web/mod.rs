//! The faces for people: the operator console (`/console`, admin listener) and the tenant
//! portal (`/portal`, edge listeners).
//!
//! Pages are rendered on the server from [`maud`] templates, which escape every value they
//! are given: what tenants and senders control (event types, bodies, URLs, header values,
//! names) only ever reaches a page as text. Scripts come from the binary ([`assets`]): htmx
//! for polling and partial updates, uPlot for charts, and a small script of ours for copy
//! buttons, confirmations and charts; the Content-Security-Policy allows nothing else.
//!
//! Every read and change calls the API's own typed operations (`crate::api::<resource>::
//! <operation_id>`, the functions the JSON handlers wrap) and renders the typed views they
//! return; forms decode into the API's specs and patches by the API's rules
//! ([`form::decode`]), so no rule is written twice and no field is read by name. The tenant pages ([`pages`]) are one set, mounted for the
//! operator under `/console/tenants/{id}` and for a tenant under `/portal`, where the tenant
//! comes from the session only: a portal page can only ever name its own tenant's resources,
//! and another tenant's ids are not found.
//!
//! | module | what |
//! | --- | --- |
//! | [`state`], [`face`], [`error`] | the shared state, the two faces, the failures of a page |
//! | [`session`] | server-side sessions in Redis, cookies, CSRF tokens |
//! | [`guard`] | the sign-in checks, who the client is, and the security headers of every answer |
//! | [`throttle`] | failed sign-ins counted per address and per credential (429 past the limit) |
//! | [`href`] | links between pages: path segments and query strings |
//! | [`form`] | form bodies |
//! | [`layout`] | the page shell and small pieces shared by pages |
//! | [`pages`] | the pages |
//! | [`assets`] | the vendored scripts and the stylesheet |

pub mod assets;
pub mod error;
pub mod face;
pub mod form;
pub mod guard;
pub mod href;
pub mod layout;
pub mod pages;
pub mod session;
pub mod state;
pub mod throttle;

pub use error::WebError;
pub use face::Ui;
pub use pages::routes::{console_routes as console, portal_routes as portal};
pub use session::Sessions;
pub use state::{WebSettings, WebState};
pub use throttle::SignInThrottle;
