//! What makes a subordinate verb subjunctive: the trigger categories the
//! practice product drills and names in its feedback.
//!
//! Contexts that keep the indicative (*creo que*, *es cierto que*, habitual
//! *cuando*) are not a category: they are the contrast side of the
//! `mood_choice` exercises, whose `trigger` is then `None`.

use serde::{Deserialize, Serialize};

/// The kind of main clause or conjunction that requires the subjunctive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerCategory {
    /// *querer que*, *desear que*, *esperar que*, *preferir que*.
    Wish,
    /// *alegrarse de que*, *sentir que*, *temer que*, *me molesta que*.
    Emotion,
    /// *es importante / necesario / posible / raro / una lástima que*.
    Impersonal,
    /// *recomendar*, *sugerir*, *pedir*, *aconsejar*, *exigir*, *insistir en que*.
    Recommendation,
    /// *dudar que*, *no creer que*, *negar que*, *no es cierto que*.
    DoubtDenial,
    /// *ojalá (que)*.
    Ojala,
    /// *para que*, *antes de que*, *sin que*, *a menos que*, *cuando* with future reference…
    AdverbialConjunction,
}

impl TriggerCategory {
    pub const ALL: [TriggerCategory; 7] = [
        TriggerCategory::Wish,
        TriggerCategory::Emotion,
        TriggerCategory::Impersonal,
        TriggerCategory::Recommendation,
        TriggerCategory::DoubtDenial,
        TriggerCategory::Ojala,
        TriggerCategory::AdverbialConjunction,
    ];

    /// The wire key (same as serde's).
    pub const fn key(self) -> &'static str {
        match self {
            TriggerCategory::Wish => "wish",
            TriggerCategory::Emotion => "emotion",
            TriggerCategory::Impersonal => "impersonal",
            TriggerCategory::Recommendation => "recommendation",
            TriggerCategory::DoubtDenial => "doubt_denial",
            TriggerCategory::Ojala => "ojala",
            TriggerCategory::AdverbialConjunction => "adverbial_conjunction",
        }
    }

    /// Parses a wire key.
    pub fn from_key(key: &str) -> Option<TriggerCategory> {
        TriggerCategory::ALL.into_iter().find(|c| c.key() == key)
    }

    /// A short English name for learners.
    pub const fn label(self) -> &'static str {
        match self {
            TriggerCategory::Wish => "wishes and desires",
            TriggerCategory::Emotion => "emotions and reactions",
            TriggerCategory::Impersonal => "impersonal expressions",
            TriggerCategory::Recommendation => "recommendations, requests and commands",
            TriggerCategory::DoubtDenial => "doubt and denial",
            TriggerCategory::Ojala => "ojalá (hoping)",
            TriggerCategory::AdverbialConjunction => "adverbial conjunctions",
        }
    }

    /// Why the category calls for the subjunctive, as a verb phrase that
    /// follows the trigger words: "«Espero que» *expresses a wish*".
    pub const fn reason(self) -> &'static str {
        match self {
            TriggerCategory::Wish => "expresses a wish about someone else's action",
            TriggerCategory::Emotion => "expresses an emotional reaction",
            TriggerCategory::Impersonal => {
                "is an impersonal expression of judgement or possibility"
            }
            TriggerCategory::Recommendation => "asks, advises or orders someone to act",
            TriggerCategory::DoubtDenial => "expresses doubt or denial",
            TriggerCategory::Ojala => "expresses a hope",
            TriggerCategory::AdverbialConjunction => {
                "is a conjunction that introduces something not yet real"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_match_serde() {
        for category in TriggerCategory::ALL {
            assert_eq!(TriggerCategory::from_key(category.key()), Some(category));
            let json = serde_json::to_string(&category).expect("serializes");
            assert_eq!(json, format!("\"{}\"", category.key()));
            let back: TriggerCategory = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, category);
        }
        assert_eq!(TriggerCategory::from_key("Wish"), None);
        assert_eq!(TriggerCategory::from_key(""), None);
    }

    #[test]
    fn every_category_has_a_label_and_a_reason() {
        for category in TriggerCategory::ALL {
            assert!(!category.label().is_empty());
            assert!(!category.reason().is_empty());
        }
    }
}
