"""Compare the engine's six simple tenses against the mlconjug3 reference.

Usage:  python3 compare.py OUT [engine.tsv [lexicon-from.tsv]]
        (run by scripts/check-conjugations; the lexicon set is taken from the
        known flags of lexicon-from.tsv, default the same file, so that runs
        before and after lexicon additions compare the same verbs)
Inputs: OUT/ref.tsv (extract.py), OUT/engine.tsv (examples/conjugation_table:
        infinitive, known, tense, person, form).
Output: summary on stdout; OUT/diffs.tsv (every remaining difference with the
        verb's class: verb, known, tense, person, ref, engine).
A reference form that differs from the engine only by a pre-2010 accent on a
monosyllable (rió/rio, fié/fie, guió/guio, huí/hui, fiáis/fiais) counts as
agreement (the reference is outdated). Empty reference cells (defective
verbs: weather verbs etc.) are left out of the denominator."""
import sys, collections, unicodedata

TENSES = ['present_indicative', 'preterite_indicative', 'imperfect_indicative',
          'present_subjunctive', 'imperfect_subjunctive_ra', 'imperfect_subjunctive_se']
STRIP = str.maketrans('áéíóú', 'aeiou')
VOWELS = set('aeiouáéíóúü')


def nuclei(word):
    """Orthographic syllable nuclei under RAE 2010: any vowel run is one
    nucleus (diphthong/triphthong) unless it holds two open vowels; the u of
    gu/qu before e/i is silent; a final y after a vowel is a vowel."""
    w = word
    for a, b in (('que', 'qe'), ('qui', 'qi'), ('gue', 'ge'), ('gui', 'gi')):
        w = w.replace(a, b)
    n, run = 0, ''
    for c in w + '#':
        if c in VOWELS:
            run += c
            continue
        if run:
            opens = sum(ch in 'aeoáéó' for ch in run)
            n += max(1, opens)
        run = ''
    return n


def old_monosyllable_accent(ref, eng):
    """ref is eng plus one pre-2010 accent on a monosyllable (rió → rio)."""
    if ref.translate(STRIP) != eng or ref == eng:
        return False
    accents = [i for i, c in enumerate(ref) if c in 'áéíóú']
    if len(accents) != 1 or accents[0] == 0:
        return False
    i = accents[0]
    c, prev = ref[i], ref[i - 1]
    # Accent on the open vowel after a closed one (rió, fié, fiáis) or on the
    # second of two closed vowels (huí): a diphthong under the 2010 rules.
    # A stressed í/ú after an open vowel (leí) is a hiatus and keeps it.
    ok = (c in 'áéó' and prev in 'iu') or (c in 'íú' and prev in 'iu')
    return ok and nuclei(eng) == 1


def load(path, engine):
    d = {}
    known = {}
    for line in open(path, encoding='utf-8'):
        f = line.rstrip('\n').split('\t')
        if engine:
            if f[1] == 'ERR':
                continue
            v, k, t, p, form = f
            known[v] = k == '1'
            d[(v, t, int(p))] = form
        else:
            v, t, p, forms = f
            d[(v, t, int(p))] = [x for x in forms.split('|') if x]
    return d, known


def main():
    out = sys.argv[1]
    ref, _ = load(f'{out}/ref.tsv', False)
    eng, known = load(sys.argv[2] if len(sys.argv) > 2 else f'{out}/engine.tsv', True)
    if len(sys.argv) > 3:
        _, known = load(sys.argv[3], True)
    ref_verbs = sorted({k[0] for k in ref})
    lex = [v for v in ref_verbs if known.get(v)]
    lex_missing = sorted(v for v, k in known.items() if k and v not in set(ref_verbs))
    stats = {name: collections.defaultdict(lambda: [0, 0, 0]) for name in ('lexicon', 'all')}
    diffs = []
    for v in ref_verbs:
        sets = ('lexicon', 'all') if known.get(v) else ('all',)
        for t in TENSES:
            for p in range(6):
                forms = ref[(v, t, p)]
                if not forms:
                    continue
                e = eng.get((v, t, p))
                exact = e in forms
                accent = not exact and e is not None and any(old_monosyllable_accent(r, e) for r in forms)
                for s in sets:
                    st = stats[s][t]
                    st[0] += 1
                    st[1] += exact
                    st[2] += accent
                if not exact and not accent:
                    diffs.append((v, int(bool(known.get(v))), t, p, '|'.join(forms), e or '<none>'))
    print(f'reference verbs compared: {len(ref_verbs)}; in lexicon: {len(lex)}; '
          f'lexicon verbs absent from reference: {len(lex_missing)}')
    for s in ('lexicon', 'all'):
        tot = [0, 0, 0]
        print(f'\n[{s}] tense: forms, exact, +old-accent, agreement')
        for t in TENSES:
            n, x, a = stats[s][t]
            tot = [tot[0] + n, tot[1] + x, tot[2] + a]
            print(f'  {t:26} {n:7} {x:7} {a:5}  {100 * (x + a) / n:6.2f} %')
        n, x, a = tot
        print(f'  {"TOTAL":26} {n:7} {x:7} {a:5}  {100 * (x + a) / n:6.2f} %  (exact only {100 * x / n:.2f} %)')
    with open(f'{out}/diffs.tsv', 'w') as out:
        for d in diffs:
            out.write('\t'.join(map(str, d)) + '\n')
    verbs_with_diffs = collections.Counter(d[0] for d in diffs)
    print(f'\ndifferences: {len(diffs)} forms in {len(verbs_with_diffs)} verbs '
          f'({sum(1 for d in diffs if d[1])} forms in lexicon verbs)')


if __name__ == '__main__':
    main()
