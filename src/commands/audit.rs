//! `eligd audit subject ID`: the audit subject of a national ID, so an investigator holding
//! the audit key can find the lines about one person (`grep <subject> audit.log*`) although
//! the log never holds the ID itself. The key's `subject_key` goes to standard error: lines
//! carrying another `subject_key` were written under another (rotated) key.

use std::io::Write;

use anyhow::Context;

use crate::audit::AuditKey;
use crate::cli::AuditSubjectArgs;
use crate::national_id::NationalId;

pub fn subject(args: &AuditSubjectArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let key = AuditKey::from_env()?;
    let id = NationalId::parse_typed(&args.national_id).context("not a valid national ID")?;
    writeln!(out, "{}", key.subject(id))?;
    // stderr, so `$(eligd audit subject ID)` is the subject alone.
    crate::logging::notice(&format!(
        "(under the audit key whose subject_key is {})",
        key.id()
    ));
    Ok(())
}
