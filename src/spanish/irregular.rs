//! Irregular verbs, written out once, and their compounds found by derivation.
//!
//! Only the simple tenses that are irregular are listed; everything else
//! (imperfect of *tener*, preterite of *caer*…) comes from the rules. A
//! compound (*contener*, *prever*, *satisfacer*) is its base with the prefix in
//! front, re-accented where the prefix turns a monosyllable into an oxytone.

/// One irregular base verb. `None` means "by rule".
pub(crate) struct Irregular {
    pub base: &'static str,
    /// Which prefixed infinitives are compounds of this base.
    pub prefixes: Prefixes,
    pub present: Option<[&'static str; 6]>,
    pub preterite: Option<[&'static str; 6]>,
    pub imperfect: Option<[&'static str; 6]>,
    pub subjunctive: Option<[&'static str; 6]>,
    pub participle: Option<&'static str>,
    pub gerund: Option<&'static str>,
}

/// Which prefixed forms of a base are its compounds.
#[derive(Clone, Copy)]
pub(crate) enum Prefixes {
    /// A closed list: *ver* must not capture *llover*, nor *dar* capture *nadar*,
    /// nor *andar* capture *mandar*.
    Only(&'static [&'static str]),
    /// Any prefix: no Spanish verb ends in -tener, -poner, -decir… without
    /// being a compound (*manutener*, *antedecir* included).
    Any,
}

const NONE: Irregular = Irregular {
    base: "",
    prefixes: Prefixes::Only(&[]),
    present: None,
    preterite: None,
    imperfect: None,
    subjunctive: None,
    participle: None,
    gerund: None,
};

const STRONG_TUV: [&str; 6] = [
    "tuve",
    "tuviste",
    "tuvo",
    "tuvimos",
    "tuvisteis",
    "tuvieron",
];
const FUI: [&str; 6] = ["fui", "fuiste", "fue", "fuimos", "fuisteis", "fueron"];

/// *satisfacer* keeps the old *f* of *facer*: satisfago, satisfice, satisfecho.
const HACER_PRESENT: [&str; 6] = ["hago", "haces", "hace", "hacemos", "hacéis", "hacen"];
const HACER_PRETERITE: [&str; 6] = [
    "hice",
    "hiciste",
    "hizo",
    "hicimos",
    "hicisteis",
    "hicieron",
];
const HACER_SUBJ: [&str; 6] = ["haga", "hagas", "haga", "hagamos", "hagáis", "hagan"];

pub(crate) static IRREGULARS: &[Irregular] = &[
    Irregular {
        base: "ser",
        present: Some(["soy", "eres", "es", "somos", "sois", "son"]),
        preterite: Some(FUI),
        imperfect: Some(["era", "eras", "era", "éramos", "erais", "eran"]),
        subjunctive: Some(["sea", "seas", "sea", "seamos", "seáis", "sean"]),
        ..NONE
    },
    Irregular {
        base: "ir",
        present: Some(["voy", "vas", "va", "vamos", "vais", "van"]),
        preterite: Some(FUI),
        imperfect: Some(["iba", "ibas", "iba", "íbamos", "ibais", "iban"]),
        subjunctive: Some(["vaya", "vayas", "vaya", "vayamos", "vayáis", "vayan"]),
        gerund: Some("yendo"),
        ..NONE
    },
    Irregular {
        base: "haber",
        present: Some(["he", "has", "ha", "hemos", "habéis", "han"]),
        preterite: Some([
            "hube",
            "hubiste",
            "hubo",
            "hubimos",
            "hubisteis",
            "hubieron",
        ]),
        subjunctive: Some(["haya", "hayas", "haya", "hayamos", "hayáis", "hayan"]),
        ..NONE
    },
    Irregular {
        base: "estar",
        present: Some(["estoy", "estás", "está", "estamos", "estáis", "están"]),
        preterite: Some([
            "estuve",
            "estuviste",
            "estuvo",
            "estuvimos",
            "estuvisteis",
            "estuvieron",
        ]),
        subjunctive: Some(["esté", "estés", "esté", "estemos", "estéis", "estén"]),
        ..NONE
    },
    Irregular {
        base: "dar",
        present: Some(["doy", "das", "da", "damos", "dais", "dan"]),
        preterite: Some(["di", "diste", "dio", "dimos", "disteis", "dieron"]),
        subjunctive: Some(["dé", "des", "dé", "demos", "deis", "den"]),
        ..NONE
    },
    Irregular {
        base: "saber",
        prefixes: Prefixes::Any,
        present: Some(["sé", "sabes", "sabe", "sabemos", "sabéis", "saben"]),
        preterite: Some([
            "supe",
            "supiste",
            "supo",
            "supimos",
            "supisteis",
            "supieron",
        ]),
        subjunctive: Some(["sepa", "sepas", "sepa", "sepamos", "sepáis", "sepan"]),
        ..NONE
    },
    Irregular {
        base: "caber",
        present: Some(["quepo", "cabes", "cabe", "cabemos", "cabéis", "caben"]),
        preterite: Some([
            "cupe",
            "cupiste",
            "cupo",
            "cupimos",
            "cupisteis",
            "cupieron",
        ]),
        subjunctive: Some(["quepa", "quepas", "quepa", "quepamos", "quepáis", "quepan"]),
        ..NONE
    },
    Irregular {
        base: "tener",
        prefixes: Prefixes::Any,
        present: Some(["tengo", "tienes", "tiene", "tenemos", "tenéis", "tienen"]),
        preterite: Some(STRONG_TUV),
        subjunctive: Some(["tenga", "tengas", "tenga", "tengamos", "tengáis", "tengan"]),
        ..NONE
    },
    Irregular {
        base: "venir",
        prefixes: Prefixes::Any,
        present: Some(["vengo", "vienes", "viene", "venimos", "venís", "vienen"]),
        preterite: Some([
            "vine",
            "viniste",
            "vino",
            "vinimos",
            "vinisteis",
            "vinieron",
        ]),
        subjunctive: Some(["venga", "vengas", "venga", "vengamos", "vengáis", "vengan"]),
        gerund: Some("viniendo"),
        ..NONE
    },
    Irregular {
        base: "poner",
        prefixes: Prefixes::Any,
        present: Some(["pongo", "pones", "pone", "ponemos", "ponéis", "ponen"]),
        preterite: Some([
            "puse",
            "pusiste",
            "puso",
            "pusimos",
            "pusisteis",
            "pusieron",
        ]),
        subjunctive: Some(["ponga", "pongas", "ponga", "pongamos", "pongáis", "pongan"]),
        participle: Some("puesto"),
        ..NONE
    },
    Irregular {
        base: "salir",
        prefixes: Prefixes::Any,
        present: Some(["salgo", "sales", "sale", "salimos", "salís", "salen"]),
        subjunctive: Some(["salga", "salgas", "salga", "salgamos", "salgáis", "salgan"]),
        ..NONE
    },
    Irregular {
        base: "valer",
        prefixes: Prefixes::Any,
        present: Some(["valgo", "vales", "vale", "valemos", "valéis", "valen"]),
        subjunctive: Some(["valga", "valgas", "valga", "valgamos", "valgáis", "valgan"]),
        ..NONE
    },
    Irregular {
        base: "hacer",
        prefixes: Prefixes::Any,
        present: Some(HACER_PRESENT),
        preterite: Some(HACER_PRETERITE),
        subjunctive: Some(HACER_SUBJ),
        participle: Some("hecho"),
        ..NONE
    },
    Irregular {
        base: "facer",
        prefixes: Prefixes::Any,
        present: Some(["fago", "faces", "face", "facemos", "facéis", "facen"]),
        preterite: Some([
            "fice",
            "ficiste",
            "fizo",
            "ficimos",
            "ficisteis",
            "ficieron",
        ]),
        subjunctive: Some(["faga", "fagas", "faga", "fagamos", "fagáis", "fagan"]),
        participle: Some("fecho"),
        ..NONE
    },
    Irregular {
        base: "decir",
        // ben- and mal- are handled by the caller: their participle is regular.
        prefixes: Prefixes::Any,
        present: Some(["digo", "dices", "dice", "decimos", "decís", "dicen"]),
        preterite: Some(["dije", "dijiste", "dijo", "dijimos", "dijisteis", "dijeron"]),
        subjunctive: Some(["diga", "digas", "diga", "digamos", "digáis", "digan"]),
        participle: Some("dicho"),
        gerund: Some("diciendo"),
        ..NONE
    },
    Irregular {
        base: "traer",
        prefixes: Prefixes::Any,
        present: Some(["traigo", "traes", "trae", "traemos", "traéis", "traen"]),
        preterite: Some([
            "traje",
            "trajiste",
            "trajo",
            "trajimos",
            "trajisteis",
            "trajeron",
        ]),
        subjunctive: Some([
            "traiga",
            "traigas",
            "traiga",
            "traigamos",
            "traigáis",
            "traigan",
        ]),
        ..NONE
    },
    Irregular {
        base: "oír",
        prefixes: Prefixes::Any,
        present: Some(["oigo", "oyes", "oye", "oímos", "oís", "oyen"]),
        subjunctive: Some(["oiga", "oigas", "oiga", "oigamos", "oigáis", "oigan"]),
        ..NONE
    },
    Irregular {
        base: "ver",
        prefixes: Prefixes::Only(&["ante", "entre", "pre", "re", "tras"]),
        present: Some(["veo", "ves", "ve", "vemos", "veis", "ven"]),
        preterite: Some(["vi", "viste", "vio", "vimos", "visteis", "vieron"]),
        imperfect: Some(["veía", "veías", "veía", "veíamos", "veíais", "veían"]),
        subjunctive: Some(["vea", "veas", "vea", "veamos", "veáis", "vean"]),
        participle: Some("visto"),
        ..NONE
    },
    Irregular {
        base: "caer",
        prefixes: Prefixes::Any,
        present: Some(["caigo", "caes", "cae", "caemos", "caéis", "caen"]),
        subjunctive: Some(["caiga", "caigas", "caiga", "caigamos", "caigáis", "caigan"]),
        ..NONE
    },
    Irregular {
        // Not a compound of caer, but conjugated like it; RAE also accepts
        // rayo/raya, and its preterite (rayó) follows the rules.
        base: "raer",
        present: Some(["raigo", "raes", "rae", "raemos", "raéis", "raen"]),
        subjunctive: Some(["raiga", "raigas", "raiga", "raigamos", "raigáis", "raigan"]),
        ..NONE
    },
    Irregular {
        base: "querer",
        prefixes: Prefixes::Any,
        present: Some([
            "quiero", "quieres", "quiere", "queremos", "queréis", "quieren",
        ]),
        preterite: Some([
            "quise",
            "quisiste",
            "quiso",
            "quisimos",
            "quisisteis",
            "quisieron",
        ]),
        subjunctive: Some([
            "quiera", "quieras", "quiera", "queramos", "queráis", "quieran",
        ]),
        ..NONE
    },
    Irregular {
        base: "poder",
        present: Some(["puedo", "puedes", "puede", "podemos", "podéis", "pueden"]),
        preterite: Some([
            "pude",
            "pudiste",
            "pudo",
            "pudimos",
            "pudisteis",
            "pudieron",
        ]),
        subjunctive: Some(["pueda", "puedas", "pueda", "podamos", "podáis", "puedan"]),
        gerund: Some("pudiendo"),
        ..NONE
    },
    Irregular {
        base: "andar",
        prefixes: Prefixes::Only(&["des"]),
        preterite: Some([
            "anduve",
            "anduviste",
            "anduvo",
            "anduvimos",
            "anduvisteis",
            "anduvieron",
        ]),
        ..NONE
    },
    Irregular {
        base: "asir",
        prefixes: Prefixes::Only(&["des"]),
        present: Some(["asgo", "ases", "ase", "asimos", "asís", "asen"]),
        subjunctive: Some(["asga", "asgas", "asga", "asgamos", "asgáis", "asgan"]),
        ..NONE
    },
    Irregular {
        // RAE accepts irgo/yergo; the y- forms are listed first by the DPD.
        base: "erguir",
        present: Some([
            "yergo", "yergues", "yergue", "erguimos", "erguís", "yerguen",
        ]),
        preterite: Some([
            "erguí",
            "erguiste",
            "irguió",
            "erguimos",
            "erguisteis",
            "irguieron",
        ]),
        subjunctive: Some(["yerga", "yergas", "yerga", "irgamos", "irgáis", "yergan"]),
        gerund: Some("irguiendo"),
        ..NONE
    },
];

/// Finds the irregular base of `infinitive`, directly or as prefix + base.
pub(crate) fn find(infinitive: &str) -> Option<(&str, &'static Irregular)> {
    IRREGULARS.iter().find_map(|irr| {
        let prefix = infinitive.strip_suffix(irr.base)?;
        let compound = match irr.prefixes {
            Prefixes::Any => true,
            Prefixes::Only(list) => list.contains(&prefix),
        };
        (prefix.is_empty() || compound).then_some((prefix, irr))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_finds_compounds_but_not_lookalikes() {
        assert_eq!(
            find("contener").map(|(p, i)| (p, i.base)),
            Some(("con", "tener"))
        );
        assert_eq!(
            find("prever").map(|(p, i)| (p, i.base)),
            Some(("pre", "ver"))
        );
        assert_eq!(
            find("satisfacer").map(|(p, i)| (p, i.base)),
            Some(("satis", "facer"))
        );
        assert!(find("llover").is_none());
        assert!(find("nadar").is_none());
        assert!(find("servir").is_none());
        assert!(find("sentir").is_none());
    }
}
