//! What a refusal is: the rule a value breaks, and the path of the field at fault.

/// A value that breaks a rule, with the path of the field at fault (`retry.max_attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted path of the field, empty for the value as a whole.
    pub path: String,
    /// What the rule is, as a sentence fragment ("must be between 1 and 100").
    pub message: String,
}

impl Invalid {
    /// A refusal of the value as a whole.
    pub fn new(message: impl Into<String>) -> Invalid {
        Invalid {
            path: String::new(),
            message: message.into(),
        }
    }

    /// A refusal of the field at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same refusal, seen from the value that holds this one in its field `parent`.
    pub fn within(self, parent: &str) -> Invalid {
        let path = match (parent.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => parent.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{parent}{}", self.path),
            (false, false) => format!("{parent}.{}", self.path),
        };
        Invalid { path, ..self }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} {}", self.path, self.message)
        }
    }
}

impl std::error::Error for Invalid {}

/// Checks `value` against the inclusive `range`, naming `field` in the refusal.
pub fn in_range<T>(field: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<T, Invalid>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::at(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest() {
        let e = Invalid::at("max_attempts", "must be between 1 and 100").within("retry");
        assert_eq!(e.path, "retry.max_attempts");
        assert_eq!(
            e.to_string(),
            "retry.max_attempts must be between 1 and 100"
        );
        assert_eq!(Invalid::at("[2]", "x").within("events").path, "events[2]");
        assert_eq!(Invalid::new("bad").within("url").to_string(), "url bad");
        assert!(in_range("n", 5u32, 1..=4).is_err());
        assert_eq!(in_range("n", 4u32, 1..=4), Ok(4));
    }
}
