//! Engine tests: hand-written tables from grammar references, class by class.

use super::*;

fn conj(v: &str) -> Conjugation {
    match conjugate(v) {
        Ok(c) => c,
        Err(e) => panic!("{v}: {e}"),
    }
}

fn form(v: &str, t: Tense, p: Person) -> String {
    conj(v).form(t, p).to_owned()
}

use Person::*;
use Tense::*;

/// Checks the six simple tenses (space-separated, yo..ellos), participle and
/// gerund written out by hand; the compound tenses follow from the participle.
fn assert_table(v: &str, participle: &str, gerund: &str, rows: [&str; 6]) {
    let c = conj(v);
    assert_eq!(c.participle, participle, "{v} participle");
    assert_eq!(c.gerund, gerund, "{v} gerund");
    for (tense, row) in Tense::ALL.into_iter().zip(rows) {
        let expected: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            c.tenses.tense(tense).as_slice(),
            expected.as_slice(),
            "{v} {}",
            tense.key()
        );
    }
    let perfect = HABER_PRESENT_SUBJUNCTIVE.map(|a| format!("{a} {participle}"));
    let pluperfect = HABER_IMPERFECT_RA.map(|a| format!("{a} {participle}"));
    assert_eq!(c.tenses.tense(PresentPerfectSubjunctive), &perfect, "{v}");
    assert_eq!(c.tenses.tense(PluperfectSubjunctive), &pluperfect, "{v}");
    assert_eq!(
        c.pluperfect_subjunctive_se(),
        HABER_IMPERFECT_SE.map(|a| format!("{a} {participle}")),
        "{v}"
    );
}

#[test]
fn hablar_is_the_regular_ar_model() {
    assert_table(
        "hablar",
        "hablado",
        "hablando",
        [
            "hablo hablas habla hablamos habláis hablan",
            "hablé hablaste habló hablamos hablasteis hablaron",
            "hablaba hablabas hablaba hablábamos hablabais hablaban",
            "hable hables hable hablemos habléis hablen",
            "hablara hablaras hablara habláramos hablarais hablaran",
            "hablase hablases hablase hablásemos hablaseis hablasen",
        ],
    );
    assert!(conj("hablar").regular);
}

#[test]
fn comer_is_the_regular_er_model() {
    assert_table(
        "comer",
        "comido",
        "comiendo",
        [
            "como comes come comemos coméis comen",
            "comí comiste comió comimos comisteis comieron",
            "comía comías comía comíamos comíais comían",
            "coma comas coma comamos comáis coman",
            "comiera comieras comiera comiéramos comierais comieran",
            "comiese comieses comiese comiésemos comieseis comiesen",
        ],
    );
}

#[test]
fn vivir_is_the_regular_ir_model() {
    assert_table(
        "vivir",
        "vivido",
        "viviendo",
        [
            "vivo vives vive vivimos vivís viven",
            "viví viviste vivió vivimos vivisteis vivieron",
            "vivía vivías vivía vivíamos vivíais vivían",
            "viva vivas viva vivamos viváis vivan",
            "viviera vivieras viviera viviéramos vivierais vivieran",
            "viviese vivieses viviese viviésemos vivieseis viviesen",
        ],
    );
}

#[test]
fn tener_has_a_g_stem_a_diphthong_and_a_strong_preterite() {
    assert_table(
        "tener",
        "tenido",
        "teniendo",
        [
            "tengo tienes tiene tenemos tenéis tienen",
            "tuve tuviste tuvo tuvimos tuvisteis tuvieron",
            "tenía tenías tenía teníamos teníais tenían",
            "tenga tengas tenga tengamos tengáis tengan",
            "tuviera tuvieras tuviera tuviéramos tuvierais tuvieran",
            "tuviese tuvieses tuviese tuviésemos tuvieseis tuviesen",
        ],
    );
    assert!(!conj("tener").regular);
}

#[test]
fn ser_is_suppletive() {
    assert_table(
        "ser",
        "sido",
        "siendo",
        [
            "soy eres es somos sois son",
            "fui fuiste fue fuimos fuisteis fueron",
            "era eras era éramos erais eran",
            "sea seas sea seamos seáis sean",
            "fuera fueras fuera fuéramos fuerais fueran",
            "fuese fueses fuese fuésemos fueseis fuesen",
        ],
    );
}

#[test]
fn ir_is_suppletive_and_shares_the_preterite_of_ser() {
    assert_table(
        "ir",
        "ido",
        "yendo",
        [
            "voy vas va vamos vais van",
            "fui fuiste fue fuimos fuisteis fueron",
            "iba ibas iba íbamos ibais iban",
            "vaya vayas vaya vayamos vayáis vayan",
            "fuera fueras fuera fuéramos fuerais fueran",
            "fuese fueses fuese fuésemos fueseis fuesen",
        ],
    );
}

#[test]
fn pedir_raises_e_to_i_wherever_the_ending_is_not_stressed_i() {
    assert_table(
        "pedir",
        "pedido",
        "pidiendo",
        [
            "pido pides pide pedimos pedís piden",
            "pedí pediste pidió pedimos pedisteis pidieron",
            "pedía pedías pedía pedíamos pedíais pedían",
            "pida pidas pida pidamos pidáis pidan",
            "pidiera pidieras pidiera pidiéramos pidierais pidieran",
            "pidiese pidieses pidiese pidiésemos pidieseis pidiesen",
        ],
    );
}

#[test]
fn dormir_diphthongizes_when_stressed_and_raises_o_to_u() {
    assert_table(
        "dormir",
        "dormido",
        "durmiendo",
        [
            "duermo duermes duerme dormimos dormís duermen",
            "dormí dormiste durmió dormimos dormisteis durmieron",
            "dormía dormías dormía dormíamos dormíais dormían",
            "duerma duermas duerma durmamos durmáis duerman",
            "durmiera durmieras durmiera durmiéramos durmierais durmieran",
            "durmiese durmieses durmiese durmiésemos durmieseis durmiesen",
        ],
    );
}

#[test]
fn conducir_takes_zc_and_a_j_preterite() {
    assert_table(
        "conducir",
        "conducido",
        "conduciendo",
        [
            "conduzco conduces conduce conducimos conducís conducen",
            "conduje condujiste condujo condujimos condujisteis condujeron",
            "conducía conducías conducía conducíamos conducíais conducían",
            "conduzca conduzcas conduzca conduzcamos conduzcáis conduzcan",
            "condujera condujeras condujera condujéramos condujerais condujeran",
            "condujese condujeses condujese condujésemos condujeseis condujesen",
        ],
    );
}

#[test]
fn reir_follows_pedir_with_the_2010_monosyllables_rio_and_riais() {
    assert_table(
        "reír",
        "reído",
        "riendo",
        [
            "río ríes ríe reímos reís ríen",
            "reí reíste rio reímos reísteis rieron",
            "reía reías reía reíamos reíais reían",
            "ría rías ría riamos riais rían",
            "riera rieras riera riéramos rierais rieran",
            "riese rieses riese riésemos rieseis riesen",
        ],
    );
    // The compound is not a monosyllable: sonrió, sonriáis keep the accent.
    assert_eq!(form("sonreír", PreteriteIndicative, El), "sonrió");
    assert_eq!(form("sonreír", PresentSubjunctive, Vosotros), "sonriáis");
    assert_eq!(form("freír", PreteriteIndicative, El), "frio");
    assert_eq!(conj("freír").participle, "frito");
}

#[test]
fn construir_inserts_y_before_a_e_o_and_huir_drops_monosyllable_accents() {
    assert_table(
        "construir",
        "construido",
        "construyendo",
        [
            "construyo construyes construye construimos construís construyen",
            "construí construiste construyó construimos construisteis construyeron",
            "construía construías construía construíamos construíais construían",
            "construya construyas construya construyamos construyáis construyan",
            "construyera construyeras construyera construyéramos construyerais construyeran",
            "construyese construyeses construyese construyésemos construyeseis construyesen",
        ],
    );
    assert_eq!(form("huir", PresentIndicative, Vosotros), "huis");
    assert_eq!(form("huir", PreteriteIndicative, Yo), "hui");
    assert_eq!(form("huir", PreteriteIndicative, El), "huyó");
    assert_eq!(form("argüir", PresentIndicative, Yo), "arguyo");
    assert_eq!(form("argüir", PresentIndicative, Nosotros), "argüimos");
}

#[test]
fn the_tricky_subjunctives_of_the_issue_are_right() {
    let cases = [
        ("ser", PresentSubjunctive, Yo, "sea"),
        ("ir", PresentSubjunctive, Yo, "vaya"),
        ("haber", PresentSubjunctive, El, "haya"),
        ("saber", PresentSubjunctive, Yo, "sepa"),
        ("caber", PresentSubjunctive, Yo, "quepa"),
        ("dar", PresentSubjunctive, El, "dé"),
        ("dar", PresentSubjunctive, Tu, "des"),
        ("estar", PresentSubjunctive, El, "esté"),
        ("pensar", PresentSubjunctive, Yo, "piense"),
        ("sentir", PresentSubjunctive, Nosotros, "sintamos"),
        ("dormir", PresentSubjunctive, Nosotros, "durmamos"),
        ("pedir", PresentSubjunctive, Nosotros, "pidamos"),
        ("jugar", PresentSubjunctive, Yo, "juegue"),
        ("buscar", PresentSubjunctive, Yo, "busque"),
        ("llegar", PresentSubjunctive, Yo, "llegue"),
        ("empezar", PresentSubjunctive, Yo, "empiece"),
        ("coger", PresentSubjunctive, Yo, "coja"),
        ("dirigir", PresentSubjunctive, Yo, "dirija"),
        ("distinguir", PresentSubjunctive, Yo, "distinga"),
        ("delinquir", PresentSubjunctive, Yo, "delinca"),
        ("averiguar", PresentSubjunctive, Yo, "averigüe"),
        ("construir", PresentSubjunctive, Yo, "construya"),
        ("conocer", PresentSubjunctive, Yo, "conozca"),
        ("conducir", PresentSubjunctive, Yo, "conduzca"),
        ("oír", PresentSubjunctive, Yo, "oiga"),
        ("caer", PresentSubjunctive, Yo, "caiga"),
        ("valer", PresentSubjunctive, Yo, "valga"),
        ("tener", ImperfectSubjunctiveRa, Yo, "tuviera"),
        ("tener", ImperfectSubjunctiveSe, Yo, "tuviese"),
        ("ser", ImperfectSubjunctiveRa, Yo, "fuera"),
        ("ir", ImperfectSubjunctiveSe, Yo, "fuese"),
        ("hacer", ImperfectSubjunctiveRa, Yo, "hiciera"),
        ("decir", ImperfectSubjunctiveRa, Yo, "dijera"),
        ("traer", ImperfectSubjunctiveRa, Yo, "trajera"),
        ("conducir", ImperfectSubjunctiveRa, Yo, "condujera"),
        ("oír", ImperfectSubjunctiveRa, Yo, "oyera"),
        ("leer", ImperfectSubjunctiveRa, Yo, "leyera"),
        ("caber", ImperfectSubjunctiveRa, Yo, "cupiera"),
        ("reír", ImperfectSubjunctiveRa, Yo, "riera"),
        ("enviar", PresentSubjunctive, Yo, "envíe"),
        ("actuar", PresentSubjunctive, Yo, "actúe"),
        ("reunir", PresentSubjunctive, Yo, "reúna"),
        ("prohibir", PresentSubjunctive, Yo, "prohíba"),
        ("tener", PresentSubjunctive, Vosotros, "tengáis"),
        ("poder", PresentSubjunctive, Nosotros, "podamos"),
        ("querer", PresentSubjunctive, Yo, "quiera"),
        ("adquirir", PresentSubjunctive, Yo, "adquiera"),
        ("adquirir", PresentSubjunctive, Nosotros, "adquiramos"),
        ("seguir", PresentSubjunctive, Yo, "siga"),
        ("elegir", PresentSubjunctive, Yo, "elija"),
        ("vencer", PresentSubjunctive, Yo, "venza"),
        ("cocer", PresentSubjunctive, Yo, "cueza"),
        ("mecer", PresentSubjunctive, Yo, "meza"),
        ("oler", PresentSubjunctive, Yo, "huela"),
        ("errar", PresentSubjunctive, Yo, "yerre"),
        ("avergonzar", PresentSubjunctive, Yo, "avergüence"),
        ("teñir", PresentSubjunctive, Yo, "tiña"),
    ];
    for (verb, tense, person, expected) in cases {
        assert_eq!(
            form(verb, tense, person),
            expected,
            "{verb} {} {}",
            tense.key(),
            person.key()
        );
    }
}

#[test]
fn preterites_follow_the_2010_accent_rules() {
    let cases = [
        ("dar", Yo, "di"),
        ("dar", El, "dio"),
        ("ver", Yo, "vi"),
        ("ver", El, "vio"),
        ("ser", El, "fue"),
        ("ir", Yo, "fui"),
        ("fiar", Yo, "fie"),
        ("fiar", El, "fio"),
        ("liar", Yo, "lie"),
        ("liar", El, "lio"),
        ("criar", Yo, "crie"),
        ("guiar", El, "guio"),
        ("reír", El, "rio"),
        ("reír", Yo, "reí"),
        ("enviar", Yo, "envié"),
        ("leer", El, "leyó"),
        ("creer", El, "creyó"),
        ("caer", El, "cayó"),
        ("oír", El, "oyó"),
        ("construir", El, "construyó"),
        ("sentir", El, "sintió"),
        ("dormir", Ellos, "durmieron"),
        ("pedir", El, "pidió"),
        ("teñir", El, "tiñó"),
        ("bullir", El, "bulló"),
        ("gruñir", Ellos, "gruñeron"),
        ("buscar", Yo, "busqué"),
        ("llegar", Yo, "llegué"),
        ("empezar", Yo, "empecé"),
        ("averiguar", Yo, "averigüé"),
        ("hacer", El, "hizo"),
        ("mantener", Yo, "mantuve"),
        ("retener", Yo, "retuve"),
        ("convenir", Yo, "convine"),
        ("proponer", Yo, "propuse"),
        ("satisfacer", El, "satisfizo"),
        ("bendecir", El, "bendijo"),
        ("predecir", El, "predijo"),
        ("prever", Yo, "preví"),
        ("prever", El, "previó"),
        ("andar", Yo, "anduve"),
        ("traducir", Ellos, "tradujeron"),
    ];
    for (verb, person, expected) in cases {
        assert_eq!(
            form(verb, PreteriteIndicative, person),
            expected,
            "{verb} {}",
            person.key()
        );
    }
}

#[test]
fn gerunds_carry_the_ir_raising_and_the_y() {
    for (verb, expected) in [
        ("sentir", "sintiendo"),
        ("dormir", "durmiendo"),
        ("pedir", "pidiendo"),
        ("leer", "leyendo"),
        ("oír", "oyendo"),
        ("ir", "yendo"),
        ("teñir", "tiñendo"),
        ("poder", "pudiendo"),
        ("venir", "viniendo"),
        ("decir", "diciendo"),
        ("traer", "trayendo"),
        ("reír", "riendo"),
    ] {
        assert_eq!(conj(verb).gerund, expected);
    }
}

#[test]
fn irregular_participles_cover_families_and_compounds() {
    for (verb, expected) in [
        ("escribir", "escrito"),
        ("describir", "descrito"),
        ("romper", "roto"),
        ("volver", "vuelto"),
        ("devolver", "devuelto"),
        ("envolver", "envuelto"),
        ("resolver", "resuelto"),
        ("disolver", "disuelto"),
        ("absolver", "absuelto"),
        ("poner", "puesto"),
        ("proponer", "propuesto"),
        ("decir", "dicho"),
        ("predecir", "predicho"),
        ("contradecir", "contradicho"),
        ("bendecir", "bendecido"),
        ("maldecir", "maldecido"),
        ("hacer", "hecho"),
        ("deshacer", "deshecho"),
        ("satisfacer", "satisfecho"),
        ("abrir", "abierto"),
        ("cubrir", "cubierto"),
        ("descubrir", "descubierto"),
        ("morir", "muerto"),
        ("ver", "visto"),
        ("prever", "previsto"),
        ("imprimir", "impreso"),
        ("freír", "frito"),
        ("proveer", "provisto"),
        ("leer", "leído"),
        ("construir", "construido"),
        ("corromper", "corrompido"),
    ] {
        assert_eq!(conj(verb).participle, expected, "{verb}");
    }
    let imprimir = conj("imprimir");
    assert_eq!(imprimir.participle_alt.as_deref(), Some("imprimido"));
    assert!(
        imprimir
            .accepted(PresentPerfectSubjunctive, Yo)
            .contains(&"haya imprimido".to_owned())
    );
}

#[test]
fn compounds_are_conjugated_like_their_base_with_accents_fixed() {
    let cases = [
        ("prever", PresentIndicative, Tu, "prevés"),
        ("prever", PresentIndicative, El, "prevé"),
        ("prever", PresentIndicative, Vosotros, "prevéis"),
        ("prever", PresentIndicative, Ellos, "prevén"),
        ("contener", PresentIndicative, Yo, "contengo"),
        ("detener", PresentSubjunctive, Yo, "detenga"),
        (
            "mantener",
            ImperfectSubjunctiveRa,
            Nosotros,
            "mantuviéramos",
        ),
        ("convenir", PresentIndicative, El, "conviene"),
        ("prevenir", PresentSubjunctive, Yo, "prevenga"),
        ("suponer", ImperfectSubjunctiveRa, Yo, "supusiera"),
        ("componer", PresentIndicative, Yo, "compongo"),
        ("deshacer", PresentSubjunctive, Yo, "deshaga"),
        ("satisfacer", PresentSubjunctive, Yo, "satisfaga"),
        ("bendecir", PresentSubjunctive, Yo, "bendiga"),
        ("contradecir", PresentIndicative, Yo, "contradigo"),
        ("atraer", PresentSubjunctive, Yo, "atraiga"),
        ("distraer", ImperfectSubjunctiveRa, Yo, "distrajera"),
        ("sobresalir", PresentIndicative, Yo, "sobresalgo"),
        ("entrever", PreteriteIndicative, El, "entrevió"),
        ("desoír", PresentIndicative, Yo, "desoigo"),
        ("equivaler", PresentSubjunctive, Yo, "equivalga"),
    ];
    for (verb, tense, person, expected) in cases {
        assert_eq!(
            form(verb, tense, person),
            expected,
            "{verb} {} {}",
            tense.key(),
            person.key()
        );
    }
}

#[test]
fn unknown_well_formed_verbs_are_conjugated_by_rule() {
    let c = conj("bloguear");
    assert!(!c.known);
    assert_eq!(c.english, None);
    assert_eq!(c.form(PresentSubjunctive, Yo), "bloguee");
    assert_eq!(c.form(PreteriteIndicative, Yo), "blogueé");
    // Orthographically forced changes apply to unknown verbs too.
    assert_eq!(form("tuitear", PresentIndicative, Yo), "tuiteo");
    assert_eq!(form("hackear", PreteriteIndicative, Yo), "hackeé");
    assert_eq!(form("googlear", PresentSubjunctive, Nosotros), "googleemos");
    assert_eq!(form("escanear", PresentIndicative, Yo), "escaneo");
    assert_eq!(form("chequear", PresentSubjunctive, Yo), "chequee");
    assert_eq!(form("zapear", PresentSubjunctive, Yo), "zapee");
    assert_eq!(form("textear", PreteriteIndicative, El), "texteó");
    assert_eq!(form("wasapear", PresentSubjunctive, Yo), "wasapee");
    assert_eq!(form("frunzar", PresentSubjunctive, Yo), "frunce");
    assert_eq!(form("esplicar", PresentSubjunctive, Yo), "esplique");
    assert_eq!(form("reconstruir", PresentSubjunctive, Yo), "reconstruya");
    assert_eq!(form("desagradecer", PresentSubjunctive, Yo), "desagradezca");
}

#[test]
fn unknown_prefixed_verbs_inherit_the_class_of_the_known_base() {
    let c = conj("reencontrar");
    assert!(!c.known);
    assert_eq!(c.form(PresentIndicative, Yo), "reencuentro");
    assert_eq!(
        form("desconsentir", PresentSubjunctive, Nosotros),
        "desconsintamos"
    );
}

#[test]
fn tras_and_circun_compounds_inherit_the_stem_change_of_their_base() {
    assert_eq!(form("trasvolar", PresentIndicative, Yo), "trasvuelo");
    assert_eq!(form("trastrocar", PresentSubjunctive, El), "trastrueque");
    assert_eq!(form("trasfregar", PresentIndicative, Ellos), "trasfriegan");
    assert_eq!(form("circunvolar", PresentIndicative, Tu), "circunvuelas");
    assert_eq!(form("traspasar", PresentIndicative, Yo), "traspaso");
}

#[test]
fn known_verbs_have_a_gloss() {
    let c = conj("Tener");
    assert!(c.known);
    assert_eq!(c.infinitive, "tener");
    assert_eq!(c.english, Some("to have"));
    assert!(!c.regular);
    assert!(
        conj("buscar").regular,
        "spelling changes do not make a verb irregular"
    );
}

#[test]
fn invalid_infinitives_are_rejected() {
    for bad in [
        "",
        "  ",
        "hello",
        "123",
        "comer!",
        "xyzar",
        "ar",
        "er",
        "co mer",
        "cantár",
        "thír",
        "café",
        "hablo",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaar",
        "amar1",
        "<script>",
    ] {
        assert!(conjugate(bad).is_err(), "{bad:?} accepted");
    }
    for good in [
        "ir",
        "ser",
        "ver",
        "dar",
        "oír",
        "reír",
        " HABLAR ",
        "Pingüinear",
        "bloguear",
    ] {
        assert!(conjugate(good).is_ok(), "{good:?} rejected");
    }
}

#[test]
fn every_lexicon_verb_conjugates_with_no_empty_form() {
    let entries = lexicon::entries();
    assert!(entries.len() >= 300, "{} verbs", entries.len());
    for e in entries {
        assert!(
            validate_infinitive(e.infinitive).is_ok(),
            "{}",
            e.infinitive
        );
        let c = conj(e.infinitive);
        assert!(c.known);
        assert!(!e.english.is_empty(), "{}", e.infinitive);
        assert!(!c.participle.is_empty() && !c.gerund.is_empty());
        for t in Tense::ALL {
            for p in Person::ALL {
                let f = c.form(t, p);
                assert!(!f.is_empty(), "{} {} {}", e.infinitive, t.key(), p.key());
                assert!(
                    f.chars().all(|ch| ch == ' ' || ch.is_alphabetic()),
                    "{} {f:?}",
                    e.infinitive
                );
            }
        }
    }
}

#[test]
fn lexicon_is_sorted_and_free_of_duplicates() {
    let entries = lexicon::entries();
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].infinitive < w[1].infinitive)
    );
    assert!(lexicon::lookup("hablar").is_some());
    assert!(lexicon::lookup("bloguear").is_none());
}

#[test]
fn serialization_uses_the_contract_keys() {
    let json = serde_json::to_value(conj("tener")).unwrap_or_default();
    assert_eq!(json["infinitive"], "tener");
    assert_eq!(json["english"], "to have");
    assert_eq!(json["participle"], "tenido");
    assert_eq!(json["tenses"]["present_subjunctive"]["vosotros"], "tengáis");
    assert_eq!(
        json["tenses"]["pluperfect_subjunctive_ra"]["el"],
        "hubiera tenido"
    );
    assert_eq!(json["tenses"].as_object().map(|o| o.len()), Some(8));
    assert_eq!(
        Tense::from_key("pluperfect_subjunctive"),
        Some(PluperfectSubjunctive)
    );
    for t in Tense::ALL {
        assert_eq!(serde_json::to_value(t).unwrap_or_default(), t.key());
        assert_eq!(Tense::from_key(t.key()), Some(t));
    }
    for p in Person::ALL {
        assert_eq!(serde_json::to_value(p).unwrap_or_default(), p.key());
    }
}

#[test]
fn accepted_answers_include_both_imperfect_subjunctives() {
    let c = conj("hablar");
    let a = c.accepted(ImperfectSubjunctiveRa, Yo);
    assert_eq!(a, vec!["hablara".to_owned(), "hablase".to_owned()]);
    let p = c.accepted(PluperfectSubjunctive, Nosotros);
    assert!(p.contains(&"hubiésemos hablado".to_owned()));
}

#[test]
fn lexicon_irregular_marks_agree_with_derivation() {
    let data_lines = include_str!("verbs.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        data_lines,
        lexicon::entries().len(),
        "duplicate lines in verbs.txt"
    );
    let mismatched: Vec<&str> = lexicon::entries()
        .iter()
        .filter(|e| (e.class == "irr") != irregular::find(e.infinitive).is_some())
        .map(|e| e.infinitive)
        .collect();
    assert!(mismatched.is_empty(), "{mismatched:?}");
}

#[test]
fn unknown_verbs_take_the_stem_change_their_ending_nearly_always_has() {
    assert_eq!(form("reinvertir", PreteriteIndicative, El), "reinvirtió");
    assert_eq!(form("proseguir", PresentSubjunctive, Yo), "prosiga");
    assert_eq!(form("desteñir", PresentIndicative, Yo), "destiño");
    assert_eq!(form("insinuar", PresentIndicative, Yo), "insinúo");
    assert_eq!(form("oblicuar", PresentIndicative, Yo), "oblicúo");
    assert_eq!(
        form("cinematografiar", PresentIndicative, Yo),
        "cinematografío"
    );
    assert_eq!(form("agredir", PresentIndicative, Yo), "agredo");
}

#[test]
fn rehuir_stresses_the_u_before_the_y() {
    assert_eq!(form("rehuir", PresentIndicative, Yo), "rehúyo");
    // re-huís: two syllables, so the oxytone keeps its accent.
    assert_eq!(form("rehuir", PresentIndicative, Vosotros), "rehuís");
    assert_eq!(form("rehuir", PresentSubjunctive, Ellos), "rehúyan");
    assert_eq!(form("rehuir", PreteriteIndicative, El), "rehuyó");
}

#[test]
fn random_well_formed_infinitives_never_panic_or_give_empty_forms() {
    const LETTERS: [&str; 33] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "l", "m", "n", "ñ", "o", "p", "q", "r",
        "s", "t", "u", "v", "y", "z", "gu", "qu", "gü", "ll", "ch", "rr", "í", "ú", "é",
    ];
    const ENDINGS: [&str; 5] = ["ar", "er", "ir", "eír", "oír"];
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    let mut conjugated = 0;
    for _ in 0..20_000 {
        let mut word = String::new();
        for _ in 0..1 + next(6) {
            word.push_str(LETTERS[next(LETTERS.len())]);
        }
        word.push_str(ENDINGS[next(ENDINGS.len())]);
        let Ok(c) = conjugate(&word) else { continue };
        conjugated += 1;
        for t in Tense::ALL {
            for p in Person::ALL {
                assert!(!c.form(t, p).is_empty(), "{word}");
            }
        }
    }
    assert!(conjugated > 5_000, "only {conjugated} accepted");
}

#[test]
fn lexicon_pages_by_prefix_or_gloss_with_a_keyset_cursor() {
    let first = lexicon::page("", None, 3);
    assert_eq!(first.len(), 3);
    let second = lexicon::page("", Some(first[2].infinitive), 3);
    assert!(second[0].infinitive > first[2].infinitive);
    let hab: Vec<&str> = lexicon::page("habl", None, 10)
        .iter()
        .map(|e| e.infinitive)
        .collect();
    assert_eq!(hab, ["hablar"]);
    assert!(
        lexicon::page("to speak", None, 10)
            .iter()
            .any(|e| e.infinitive == "hablar")
    );
    assert_eq!(conj("comer").forms().count(), 48);
}

#[test]
fn unknown_verbs_get_the_written_accent_of_a_stressed_weak_vowel_in_hiatus() {
    assert_eq!(form("ahijar", PresentIndicative, Yo), "ahíjo");
    assert_eq!(form("europeizar", PresentSubjunctive, Yo), "europeíce");
    assert_eq!(form("causar", PresentIndicative, Yo), "causo");
    assert_eq!(form("exhibir", PresentIndicative, Yo), "exhibo");
    assert_eq!(form("antedecir", PresentIndicative, Yo), "antedigo");
    assert_eq!(form("manutener", PresentIndicative, Yo), "manutengo");
    assert_eq!(form("mandar", PresentIndicative, Yo), "mando");
    assert_eq!(form("contestar", PresentIndicative, Yo), "contesto");
}

#[test]
fn podrir_is_conjugated_on_pudr_with_the_participle_podrido() {
    let c = conj("podrir");
    assert_eq!(c.form(PresentIndicative, Yo), "pudro");
    assert_eq!(c.form(ImperfectSubjunctiveRa, Yo), "pudriera");
    assert_eq!(c.participle, "podrido");
    assert_eq!(conj("pudrir").participle, "podrido");
}

#[test]
fn llir_drops_the_i_after_ll_and_prever_and_predecir_subjunctives_follow_their_bases() {
    assert_eq!(form("bullir", PresentSubjunctive, Yo), "bulla");
    assert_eq!(form("bullir", ImperfectSubjunctiveRa, Yo), "bullera");
    assert_eq!(form("bullir", ImperfectSubjunctiveSe, Yo), "bullese");
    assert_eq!(form("prever", PresentSubjunctive, Yo), "prevea");
    assert_eq!(form("predecir", PresentSubjunctive, Yo), "prediga");
}

#[test]
fn perquirir_diphthongizes_its_last_i_not_an_earlier_e() {
    assert_eq!(form("perquirir", PresentIndicative, Yo), "perquiero");
    assert_eq!(form("perquirir", PresentSubjunctive, Ellos), "perquieran");
    assert_eq!(
        form("perquirir", PresentSubjunctive, Nosotros),
        "perquiramos"
    );
    assert_eq!(form("perquirir", PreteriteIndicative, El), "perquirió");
    assert_eq!(form("adquirir", PresentIndicative, Tu), "adquieres");
    assert_eq!(form("divertir", PresentIndicative, Yo), "divierto");
}

#[test]
fn scer_verbs_keep_their_sc_before_a_and_o() {
    assert_eq!(form("evanescer", PresentIndicative, Yo), "evanesco");
    assert_eq!(
        form("fosforescer", PresentSubjunctive, Nosotros),
        "fosforescamos"
    );
    assert_eq!(form("evanescer", PresentIndicative, El), "evanesce");
    assert_eq!(form("crecer", PresentIndicative, Yo), "crezco");
    assert_eq!(form("esparcir", PresentIndicative, Yo), "esparzo");
}

#[test]
fn raer_takes_the_g_of_caer_in_the_present() {
    assert_eq!(form("raer", PresentIndicative, Yo), "raigo");
    assert_eq!(form("raer", PresentIndicative, Tu), "raes");
    assert_eq!(form("raer", PresentSubjunctive, Vosotros), "raigáis");
    assert_eq!(form("raer", PreteriteIndicative, Ellos), "rayeron");
    assert_eq!(form("traer", PresentIndicative, Yo), "traigo");
    assert_eq!(form("abstraer", PreteriteIndicative, Yo), "abstraje");
}

#[test]
fn podrir_compounds_are_conjugated_on_pudr_too() {
    let c = conj("repodrir");
    assert_eq!(c.form(PresentIndicative, Yo), "repudro");
    assert_eq!(c.form(PreteriteIndicative, El), "repudrió");
    assert_eq!(c.participle, "repodrido");
    assert_eq!(conj("repudrir").participle, "repodrido");
}

#[test]
fn trasver_is_a_compound_of_ver() {
    assert_eq!(form("trasver", PresentIndicative, Yo), "trasveo");
    assert_eq!(form("trasver", PresentIndicative, El), "trasvé");
    assert_eq!(form("trasver", PreteriteIndicative, El), "trasvió");
    assert_eq!(form("trasver", ImperfectIndicative, Yo), "trasveía");
    assert_eq!(conj("trasver").participle, "trasvisto");
}

#[test]
fn trofiar_verbs_and_pifiar_keep_the_i_unstressed() {
    assert_eq!(form("atrofiar", PresentIndicative, Yo), "atrofio");
    assert_eq!(
        form("hipertrofiar", PresentSubjunctive, Ellos),
        "hipertrofien"
    );
    assert_eq!(form("pifiar", PresentIndicative, El), "pifia");
    assert_eq!(form("engarfiar", PresentIndicative, Yo), "engarfío");
}

#[test]
fn unknown_orcer_tender_and_cender_verbs_diphthongize() {
    assert_eq!(form("estorcer", PresentIndicative, Yo), "estuerzo");
    assert_eq!(
        form("malentender", PresentIndicative, Ellos),
        "malentienden"
    );
    assert_eq!(form("transcender", PresentSubjunctive, Yo), "transcienda");
    assert_eq!(form("pretender", PresentIndicative, Yo), "pretendo");
}

#[test]
fn verbs_that_only_look_prefixed_keep_a_regular_stem() {
    // en-jugar, de-rogar, dis-pensar… are not compounds of the stem-changing verbs.
    assert_eq!(form("enjugar", PresentIndicative, Yo), "enjugo");
    assert_eq!(form("derogar", PresentSubjunctive, El), "derogue");
    assert_eq!(form("subrogar", PresentIndicative, El), "subroga");
    assert_eq!(form("dispensar", PresentIndicative, Yo), "dispenso");
    assert_eq!(form("destronar", PresentIndicative, Ellos), "destronan");
    assert_eq!(form("encolar", PresentSubjunctive, Yo), "encole");
    // hendir diphthongizes like discernir, without the e>i of sentir.
    assert_eq!(form("hendir", PresentIndicative, Yo), "hiendo");
    assert_eq!(form("hendir", PreteriteIndicative, El), "hendió");
}
