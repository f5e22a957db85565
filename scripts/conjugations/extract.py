"""Extract six tenses for every Spanish verb of mlconjug3's table into
OUT/ref.tsv (OUT: the first argument): infinitive<TAB>tense<TAB>person<TAB>forms ('|'-joined;
empty = defective/missing). Pronominal infinitives (-se) are stored without
-se. Templates whose JSON is garbled (defective verbs, misaligned persons)
are written to garbled.txt and skipped; the other infinitives go to ref_verbs.txt."""
import collections, json, os, sys
import mlconjug3
OUT = sys.argv[1]
D = os.path.join(os.path.dirname(mlconjug3.__file__), 'data', 'conjug_manager')
verbs = json.load(open(f'{D}/verbs-es.json'))
conj = json.load(open(f'{D}/conjugation-es.json'))
TENSES = {
    'present_indicative': ('Indicativo', 'Indicativo presente'),
    'preterite_indicative': ('Indicativo', 'Indicativo pretérito perfecto simple'),
    'imperfect_indicative': ('Indicativo', 'Indicativo pretérito imperfecto'),
    'present_subjunctive': ('Subjuntivo', 'Subjuntivo presente'),
    'imperfect_subjunctive_ra': ('Subjuntivo', 'Subjuntivo pretérito imperfecto (1)'),
    'imperfect_subjunctive_se': ('Subjuntivo', 'Subjuntivo pretérito imperfecto (2)'),
}
garbled = []
rows = {}
for inf, info in sorted(verbs.items()):
    root, tpl = info['root'], conj[info['template']]
    if 'Indicativo presente' not in tpl.get('Indicativo', {}):
        garbled.append(inf)
        continue
    bare = inf[:-2] if inf.endswith('se') else inf
    for key, (mood, tense) in TENSES.items():
        cells = collections.defaultdict(list)
        for p, end in tpl[mood][tense]:
            if end is not None and end != '-' and end != '':
                f = root + end
                if f not in cells[p]:
                    cells[p].append(f)
        for p in range(6):
            # A verb listed both bare and pronominal keeps the bare entry.
            if bare != inf and bare in verbs:
                continue
            rows[(bare, key, p)] = cells[p]
with open(f'{OUT}/ref.tsv', 'w') as out:
    for (inf, key, p), forms in rows.items():
        out.write(f"{inf}\t{key}\t{p}\t{'|'.join(forms)}\n")
open(f'{OUT}/ref_verbs.txt', 'w').write('\n'.join(sorted({k[0] for k in rows})) + '\n')
open(f'{OUT}/garbled.txt', 'w').write('\n'.join(garbled) + '\n')
print(len(rows) // 36, 'verbs;', len(garbled), 'garbled skipped')
