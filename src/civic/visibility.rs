//! Who may read a question, by its moderation status.
//!
//! - `visible`: everyone.
//! - `hidden` (flagged, awaiting a moderator) and `removed`: moderators and
//!   admins only; everyone else is told it does not exist (404), so a hidden
//!   question cannot be read around the moderation.
//! - `merged`: moderators and admins read it; everyone else is pointed at the
//!   question it was merged into (a permanent redirect), where its votes and
//!   answers went.

use uuid::Uuid;

/// What a reader gets for a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Serve it.
    Shown,
    /// Point the reader at this question instead.
    MergedInto(Uuid),
    /// Answer as if it did not exist.
    NotFound,
}

/// The visibility of a question in `status` (merged into `merged_into`) for a
/// reader who is (`moderator`) or is not a moderator or admin.
pub fn for_reader(status: &str, merged_into: Option<Uuid>, moderator: bool) -> Visibility {
    if moderator {
        return Visibility::Shown;
    }
    match (status, merged_into) {
        ("visible", _) => Visibility::Shown,
        ("merged", Some(target)) => Visibility::MergedInto(target),
        _ => Visibility::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residents_read_only_visible_questions_and_are_pointed_past_merged_ones() {
        let target = Uuid::now_v7();
        assert_eq!(for_reader("visible", None, false), Visibility::Shown);
        assert_eq!(for_reader("hidden", None, false), Visibility::NotFound);
        assert_eq!(for_reader("removed", None, false), Visibility::NotFound);
        assert_eq!(
            for_reader("merged", Some(target), false),
            Visibility::MergedInto(target)
        );
        // A merged row without a target is inconsistent: not shown.
        assert_eq!(for_reader("merged", None, false), Visibility::NotFound);
    }

    #[test]
    fn moderators_read_every_status() {
        for status in ["visible", "hidden", "removed", "merged"] {
            assert_eq!(
                for_reader(status, Some(Uuid::now_v7()), true),
                Visibility::Shown
            );
        }
    }
}
