//! The two faces: the operator console and the tenant portal.

/// Which face a request is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ui {
    Console,
    Portal,
}

impl Ui {
    /// The path every page of this face is under.
    pub fn root(self) -> &'static str {
        match self {
            Ui::Console => "/console",
            Ui::Portal => "/portal",
        }
    }
}
