//! User names: what the certificates and the relay accept.

/// The longest user name.
pub const MAX_USER_NAME: usize = 32;

/// Checks that `name` is `[a-z0-9_-]{1,32}`, saying what is wrong if not.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Err(format!("user name {name:?} must be 1 to {MAX_USER_NAME} characters long"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!("user name {name:?} may hold only a-z, 0-9, '_' and '-', not {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["alice", "b", "x_1-y", &"a".repeat(32)] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "Alice", "a b", "../x", "ä", &"a".repeat(33), "a/b", "a\n"] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
    }
}
