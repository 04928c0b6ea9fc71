//! The API's rule for the name of a new file or folder, kept once for the emulator and the
//! in-memory double (which must refuse exactly what the service refuses).
//!
//! Subtle cases: the length bound is in bytes, not characters (a 255-character name of
//! accented letters is too long); `.` and `..` are reserved but `...` is an ordinary name;
//! names listed by the server are *not* checked here (the core decides what to do with a
//! listed name it cannot show).

/// Longest name the API accepts, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why the API refuses a name (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name {0:?} is reserved")]
    Reserved(String),
    #[error("name must not contain '/'")]
    Slash,
    #[error("name must not contain NUL")]
    Nul,
    #[error("name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
}

/// Whether the API accepts `name` for a new entry.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_string()));
    }
    if name.contains('/') {
        return Err(NameError::Slash);
    }
    if name.contains('\0') {
        return Err(NameError::Nul);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_api_refuses() {
        assert!(check_name("report.pdf").is_ok());
        assert!(check_name("...").is_ok());
        assert!(check_name("ünïcödé ✓").is_ok());
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(".."), Err(NameError::Reserved("..".into())));
        assert_eq!(check_name("a/b"), Err(NameError::Slash));
        assert_eq!(check_name("a\0b"), Err(NameError::Nul));
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert_eq!(check_name(&"é".repeat(128)), Err(NameError::TooLong));
    }
}
