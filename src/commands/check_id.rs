//! `eligd check-id`: validate one national ID.

use crate::national_id::NationalId;

/// Prints the verdict; returns whether the ID is valid (the exit code follows it).
pub fn run(input: &str, out: &mut impl std::io::Write) -> std::io::Result<bool> {
    match NationalId::parse_typed(input) {
        Ok(id) => {
            writeln!(out, "valid: {id}")?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "invalid: {e}")?;
            Ok(false)
        }
    }
}
