//! Decides, for each article, which rules match, which countries and entities it mentions,
//! and where (the evidence).
//!
//! Every surface form — rule keywords, entity spellings and the gazetteer — is normalized
//! with [`crate::normalize`] and put in one [`PhraseIndex`]. An article is normalized once
//! per field and tokenized once; each whole-word hit is checked (for forms that need it) for
//! a capital letter in the original, then mapped to the terms, entities and countries it
//! stands for. A rule index then yields the few candidate rules that mention
//! any of those; only they are evaluated (the percolator / Lucene Monitor idea), plus the
//! rare rules that can match without any positive hit (`NOT x`, `lang:fr`).
//!
//! A [`Matcher`] is immutable; rule changes build a new one off the hot path and the
//! service swaps it in atomically.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::article::Article;
use crate::engine::StoryHashes;
use crate::gazetteer::{self, FormKind};
use crate::normalize::{self, Normalized};
use crate::phrase::{PhraseError, PhraseIndex};
use crate::rules::{Entity, EntityKind, Field, Query, Rule};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the phrase index: {0}")]
    Phrases(#[from] PhraseError),
}

/// What a pattern stands for.
#[derive(Debug, Clone, Copy)]
enum Target {
    Term(u32),
    Entity {
        idx: u32,
        case: Case,
    },
    Country {
        idx: u16,
        weight: f32,
        case: Case,
        /// A place name that may be the start of a longer name (a city, a capital, an
        /// ambiguous country name, one that is also a given name): see
        /// [`runs_into_a_name`].
        place: bool,
        /// The languages (bits of [`Matcher::languages`]) an ambiguous name counts in; 0
        /// for any. See [`crate::gazetteer::Form::langs`].
        langs: u64,
        /// The country (index) of a region named like this one, or [`NO_SHADOW`]: when
        /// the article gives that country a vote by other names, this mention votes for
        /// neither (Georgia, in a story that names Atlanta). See [`FormKind::Namesake`].
        shadow: u16,
    },
}

/// No region shares the name (see `Target::Country::shadow`).
const NO_SHADOW: u16 = u16::MAX;

/// How a mention of a name must be written in the original text to count. Normalization
/// folds case away, so without this the abbreviation `US` would be the English word "us",
/// `É.-U.` the French "eu" (a eu) and `UN` the article "un".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    /// Any case: demonyms and country names, which French, Spanish or Russian write in
    /// lower case as adjectives or in running text.
    Any,
    /// Its first letter a capital (or not a letter): place and person names.
    Capital,
    /// Every letter a capital: abbreviations and acronyms (US, USA, É.-U., США, CSTO).
    Upper,
}

impl Case {
    /// `Upper` for a name written as an abbreviation (at least two letters, all capitals:
    /// US, A.S, É.-U., США, ΗΠΑ), else `otherwise`. Scripts without case are never
    /// abbreviations by this test.
    pub fn of_name(name: &str, otherwise: Case) -> Case {
        let mut letters = name.chars().filter(|c| c.is_alphabetic());
        let mut n = 0;
        if letters.all(|c| {
            n += 1;
            c.is_uppercase()
        }) && n >= 2
        {
            Case::Upper
        } else {
            otherwise
        }
    }

    /// Whether `surface`, the mention as the article wrote it, satisfies this.
    fn allows(self, surface: &str) -> bool {
        match self {
            Case::Any => true,
            Case::Capital => surface
                .chars()
                .next()
                .is_some_and(|c| c.is_uppercase() || !c.is_alphabetic()),
            Case::Upper => surface
                .chars()
                .all(|c| c.is_uppercase() || !c.is_alphabetic()),
        }
    }
}

/// A compiled query: [`Query`] with strings replaced by indices.
#[derive(Debug, Clone)]
enum CQuery {
    Term {
        id: u32,
        field: Field,
    },
    Near {
        a: u32,
        b: u32,
        distance: u32,
        field: Field,
    },
    Country(u16),
    Entity(u32),
    Lang(String),
    Source(String),
    And(Vec<CQuery>),
    Or(Vec<CQuery>),
    Not(Box<CQuery>),
}

/// One piece of evidence: where a surface form was found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    /// The text as written in the article.
    pub surface: String,
    pub field: &'static str,
    /// Byte offset in the original field.
    pub offset: usize,
    /// What it counted as: `term:<text>`, `entity:<id>` or `country:<code>`.
    pub what: String,
}

/// The result of matching one article.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArticleMatch {
    /// Indices into [`Matcher::rules`].
    #[serde(skip)]
    pub rule_indices: Vec<usize>,
    /// Rule ids, filled by [`Matcher::explain`] only.
    pub rules: Vec<String>,
    pub countries: Vec<String>,
    pub entities: Vec<String>,
    /// Keywords (normalized) found in the article.
    pub terms: Vec<String>,
    pub evidence: Vec<Evidence>,
    /// The article's story hashes, computed here because the normalized text is at hand
    /// (normalizing is the costliest step per article, and this runs on the parallel half
    /// of the pipeline, where the engine's counting is serial). None when the match was
    /// built elsewhere; the engine then computes them.
    #[serde(skip)]
    pub story: Option<StoryHashes>,
}

/// Settings that change how patterns are generated.
#[derive(Debug, Clone)]
pub struct MatcherOptions {
    /// Match a person's surname alone.
    pub surname_only: bool,
    /// Include the built-in gazetteer (tests may turn it off for speed).
    pub gazetteer: bool,
}

impl Default for MatcherOptions {
    fn default() -> Self {
        MatcherOptions {
            surname_only: true,
            gazetteer: true,
        }
    }
}

pub struct Matcher {
    /// Every distinct normalized surface form; pattern index = index into `targets`.
    phrases: PhraseIndex,
    /// Per phrase-index pattern, what it stands for.
    targets: Vec<Vec<Target>>,
    /// Normalized term texts; index = term id.
    terms: Vec<String>,
    entities: Vec<Entity>,
    countries: Vec<String>,
    country_index: HashMap<String, u16>,
    entity_index: HashMap<String, u32>,
    pub rules: Vec<Rule>,
    compiled: Vec<CQuery>,
    by_term: HashMap<u32, Vec<u32>>,
    by_entity: HashMap<u32, Vec<u32>>,
    by_country: HashMap<u16, Vec<u32>>,
    /// Rules that can match with no positive hit.
    always: Vec<u32>,
    /// The gazetteer's languages (ISO 639-1), each a bit of a country target's `langs`.
    languages: HashMap<&'static str, u64>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("rules", &self.rules.len())
            .field("patterns", &self.targets.len())
            .finish()
    }
}

/// Collects patterns, deduplicating identical normalized forms.
#[derive(Default)]
struct PatternSet {
    index: HashMap<String, usize>,
    patterns: Vec<String>,
    targets: Vec<Vec<Target>>,
}

impl PatternSet {
    fn add(&mut self, normalized: String, target: Target) {
        if normalized.is_empty() {
            return;
        }
        let id = *self.index.entry(normalized.clone()).or_insert_with(|| {
            self.patterns.push(normalized);
            self.targets.push(Vec::new());
            self.patterns.len() - 1
        });
        let targets = &mut self.targets[id];
        // One surface form votes once per country. When several sources give the same
        // normalized form (Jordan, Serbian Јордан), the cautious reading wins: if any
        // says it is ambiguous, it is. A region (weight 0) only claims its words, which a
        // form of the same country that votes claims as well: it adds nothing to that
        // form and takes nothing from it (a region named like its country's capital).
        if let Target::Country {
            idx,
            weight,
            case,
            place,
            langs,
            ..
        } = target
        {
            for t in targets.iter_mut() {
                if let Target::Country {
                    idx: i,
                    weight: w,
                    case: c,
                    place: p,
                    langs: l,
                    ..
                } = t
                {
                    if *i == idx {
                        if weight == 0.0 {
                            return;
                        }
                        if *w == 0.0 {
                            *t = target;
                            return;
                        }
                        *w = w.min(weight);
                        *c = (*c).max(case);
                        *p = *p || place;
                        // A form that counts in any language keeps counting in all; two
                        // limited ones count in the languages of either (Serbian Јордан and
                        // English Jordan).
                        *l = if *l == 0 || langs == 0 { 0 } else { *l | langs };
                        return;
                    }
                }
            }
        }
        if let Target::Entity { idx, .. } = target {
            if targets
                .iter()
                .any(|t| matches!(t, Target::Entity { idx: i, .. } if *i == idx))
            {
                return;
            }
        }
        targets.push(target);
    }
}

impl Matcher {
    pub fn new(
        rules: Vec<Rule>,
        entities: Vec<Entity>,
        opts: &MatcherOptions,
    ) -> Result<Matcher, BuildError> {
        let mut set = PatternSet::default();
        let mut terms: Vec<String> = Vec::new();
        let mut term_index: HashMap<String, u32> = HashMap::new();
        let mut term_id = |text: &str, set: &mut PatternSet| -> u32 {
            let norm = normalize::normalize_str(text);
            if let Some(id) = term_index.get(&norm) {
                return *id;
            }
            let id = terms.len() as u32;
            terms.push(norm.clone());
            term_index.insert(norm, id);
            for v in normalize::variants(text) {
                set.add(v, Target::Term(id));
            }
            id
        };

        let entity_index: HashMap<String, u32> = entities
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i as u32))
            .collect();
        for (i, e) in entities.iter().enumerate() {
            for (form, case) in entity_forms(e, opts.surname_only) {
                set.add(
                    form,
                    Target::Entity {
                        idx: i as u32,
                        case,
                    },
                );
            }
        }

        let mut countries: Vec<String> = gazetteer::country_codes().iter().cloned().collect();
        countries.sort();
        let country_index: HashMap<String, u16> = countries
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u16))
            .collect();
        // At most 64 languages have a bit of their own (the gazetteer has about 40); any
        // beyond would share the last, counting in one another's articles.
        let mut languages: HashMap<&'static str, u64> = HashMap::new();
        if opts.gazetteer {
            for f in gazetteer::forms() {
                for l in f.languages() {
                    let next = 1u64 << languages.len().min(63);
                    languages.entry(l).or_insert(next);
                }
            }
            // Demonyms are listed as each language writes them: French, Spanish or Russian
            // in lower case, English and German with a capital. A form only ever listed
            // with a capital needs one ("nail polish" is not Polish); one also listed in
            // lower case (German Russe, French russe) does not.
            let lower_demonyms: HashSet<String> = gazetteer::forms()
                .iter()
                .filter(|f| f.kind == FormKind::Demonym)
                .filter(|f| !f.text.starts_with(char::is_uppercase))
                .map(|f| normalize::normalize_str(f.text))
                .collect();
            // Regions named as another country, by normalized name: applied once every
            // form is in (below).
            let mut namesakes: Vec<(String, u16)> = Vec::new();
            for f in gazetteer::forms() {
                let Some(&idx) = country_index.get(f.code_str()) else {
                    continue;
                };
                if f.kind == FormKind::Namesake {
                    namesakes.extend(normalize::variants(f.text).into_iter().map(|v| (v, idx)));
                    continue;
                }
                let capital_only = f.kind == FormKind::Demonym
                    && f.text.starts_with(char::is_uppercase)
                    && !lower_demonyms.contains(&normalize::normalize_str(f.text));
                let case = Case::of_name(
                    f.text,
                    if f.needs_capital() || capital_only {
                        Case::Capital
                    } else {
                        Case::Any
                    },
                );
                let target = Target::Country {
                    idx,
                    weight: f.kind.weight(),
                    case,
                    place: f.kind.starts_names(),
                    langs: f.languages().map(|l| languages[l]).fold(0, |m, b| m | b),
                    shadow: NO_SHADOW,
                };
                if case == Case::Upper {
                    // An abbreviation is matched as written, letter by letter: `É.-U.` is
                    // "e u", not also "eu", which in capitals is the European Union. It
                    // takes no declensions either.
                    set.add(normalize::normalize_str(f.text), target);
                    continue;
                }
                for v in normalize::variants(f.text) {
                    set.add(v, target);
                }
                if f.kind.is_country_name() {
                    for form in declensions(f.text) {
                        set.add(normalize::normalize_str(&form), target);
                    }
                }
            }
            for (name, home) in namesakes {
                let Some(&id) = set.index.get(&name) else {
                    continue;
                };
                for t in &mut set.targets[id] {
                    if let Target::Country { idx, shadow, .. } = t {
                        if *idx != home {
                            *shadow = home;
                        }
                    }
                }
            }
        }

        let mut compiled = Vec::with_capacity(rules.len());
        for r in &rules {
            compiled.push(compile(
                &r.query,
                &mut |t| term_id(t, &mut set),
                &entity_index,
                &country_index,
            ));
        }
        let mut by_term: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut by_entity: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut by_country: HashMap<u16, Vec<u32>> = HashMap::new();
        let mut always = Vec::new();
        for (i, (r, q)) in rules.iter().zip(&compiled).enumerate() {
            let i = i as u32;
            if r.query.matches_without_hits() {
                always.push(i);
            }
            let mut push = |q: &CQuery| match q {
                CQuery::Term { id, .. } => by_term.entry(*id).or_default().push(i),
                CQuery::Near { a, b, .. } => {
                    by_term.entry(*a).or_default().push(i);
                    by_term.entry(*b).or_default().push(i);
                }
                CQuery::Entity(e) => by_entity.entry(*e).or_default().push(i),
                CQuery::Country(c) => by_country.entry(*c).or_default().push(i),
                _ => {}
            };
            visit(q, &mut push);
        }
        for v in by_term.values_mut().chain(by_entity.values_mut()) {
            v.dedup();
        }
        for v in by_country.values_mut() {
            v.dedup();
        }
        let phrases = PhraseIndex::new(&set.patterns)?;
        Ok(Matcher {
            phrases,
            targets: set.targets,
            terms,
            entities,
            countries,
            country_index,
            entity_index,
            rules,
            compiled,
            by_term,
            by_entity,
            by_country,
            always,
            languages,
        })
    }

    /// Size of the phrase index, for logs and benchmarks.
    pub fn describe(&self) -> String {
        format!(
            "{} patterns, phrase index of {} KiB",
            self.phrases.patterns(),
            self.phrases.memory_usage() / 1024
        )
    }

    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// Matches one article.
    pub fn match_article(&self, a: &Article) -> ArticleMatch {
        self.match_inner(a, false)
    }

    /// Like [`Matcher::match_article`], with the evidence of every hit (for `vigie match`).
    pub fn explain(&self, a: &Article) -> ArticleMatch {
        self.match_inner(a, true)
    }

    fn match_inner(&self, a: &Article, explain: bool) -> ArticleMatch {
        let title = normalize::normalize(&a.title);
        let body = normalize::normalize(&a.body);
        let mut hits = Hits::default();
        let language = a
            .language
            .as_deref()
            .and_then(crate::article::language_code);
        let language = language.as_deref();
        // Whether a capitalized word after a place marks a name (Jordan Bardella): not in
        // German, which capitalizes every noun, nor in a title in Title Case.
        let capitals_mark_names = language != Some("de");
        let title_names = capitals_mark_names && !title_case(&a.title);
        // The article's language as a bit of `langs`: none when it is unknown, or not one
        // the gazetteer knows, and then every name counts as before.
        let lang = language.and_then(|l| self.languages.get(l).copied());
        let (title_scan, body_scan) = (
            Scan {
                field: FIELD_TITLE,
                capitals_mark_names: title_names,
                lang,
            },
            Scan {
                field: FIELD_BODY,
                capitals_mark_names,
                lang,
            },
        );
        self.scan(&a.title, &title, title_scan, &mut hits);
        self.scan(&a.body, &body, body_scan, &mut hits);
        hits.forget_surnames();

        for e in &a.entities {
            if let Some(&i) = self.entity_index.get(e) {
                hits.entities.push(i);
            }
        }
        for c in &a.countries {
            if let Some(&i) = self.country_index.get(c) {
                hits.votes.push((i, 1.0, NO_SHADOW));
            }
        }
        // Votes by names no region shares first; then a name a region shares (Georgia)
        // counts only if the region's country (the United States) has none of its own:
        // with one, the article is placed there, and the name is most likely the region's.
        let mut country_score: HashMap<u16, f32> = HashMap::new();
        for &(c, w, _) in hits.votes.iter().filter(|v| v.2 == NO_SHADOW) {
            *country_score.entry(c).or_default() += w;
        }
        let placed = |c: u16, scores: &HashMap<u16, f32>| scores.get(&c).is_some_and(|s| *s > 0.0);
        let shadowed: Vec<(u16, f32)> = hits
            .votes
            .iter()
            .filter(|v| v.2 != NO_SHADOW && !placed(v.2, &country_score))
            .map(|v| (v.0, v.1))
            .collect();
        hits.evidence.retain(|(t, ..)| match t {
            Target::Country { shadow, .. } => {
                *shadow == NO_SHADOW || !placed(*shadow, &country_score)
            }
            _ => true,
        });
        for (c, w) in shadowed {
            *country_score.entry(c).or_default() += w;
        }
        let mut countries: Vec<u16> = country_score
            .iter()
            .filter(|(_, s)| **s >= 1.0)
            .map(|(c, _)| *c)
            .collect();
        countries.sort_unstable();
        hits.entities.sort_unstable();
        hits.entities.dedup();

        // Candidate rules from the index.
        let mut candidates: Vec<u32> = self.always.clone();
        for t in hits.term_ids() {
            if let Some(rs) = self.by_term.get(&t) {
                candidates.extend(rs);
            }
        }
        for e in &hits.entities {
            if let Some(rs) = self.by_entity.get(e) {
                candidates.extend(rs);
            }
        }
        for c in &countries {
            if let Some(rs) = self.by_country.get(c) {
                candidates.extend(rs);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();

        let ctx = EvalCtx {
            hits: &hits,
            countries: &countries,
            article: a,
            language,
        };
        let rule_indices: Vec<usize> = candidates
            .into_iter()
            .filter(|&r| ctx.eval(&self.compiled[r as usize]))
            .map(|r| r as usize)
            .collect();

        let mut terms: Vec<String> = hits
            .term_ids()
            .map(|t| self.terms[t as usize].clone())
            .collect();
        terms.sort();
        terms.dedup();
        let evidence = hits
            .evidence
            .iter()
            .filter(|_| explain)
            .map(|(what, field, start, end)| {
                let (orig, norm) = if *field == FIELD_TITLE {
                    (&a.title, &title)
                } else {
                    (&a.body, &body)
                };
                let (s, e) = norm.original_range(orig, *start as usize, *end as usize);
                let what = match what {
                    Target::Term(t) => format!("term:{}", self.terms[*t as usize]),
                    Target::Entity { idx, .. } => {
                        format!("entity:{}", self.entities[*idx as usize].id)
                    }
                    Target::Country { idx, .. } => {
                        format!("country:{}", self.countries[*idx as usize])
                    }
                };
                Evidence {
                    surface: orig[s..e].to_string(),
                    field: FIELD_NAMES[*field as usize],
                    offset: s,
                    what,
                }
            })
            .collect();
        ArticleMatch {
            story: Some(StoryHashes::of_normalized(&title, &body)),
            // Ids are for people (`vigie match`); the pipeline works with indices.
            rules: if explain {
                rule_indices
                    .iter()
                    .map(|&i| self.rules[i].id.clone())
                    .collect()
            } else {
                Vec::new()
            },
            rule_indices,
            countries: countries
                .iter()
                .map(|&c| self.countries[c as usize].clone())
                .collect(),
            entities: hits
                .entities
                .iter()
                .map(|&e| self.entities[e as usize].id.clone())
                .collect(),
            terms,
            evidence,
        }
    }

    /// Finds the field's mentions. With `capitals_mark_names`, a place name that runs into
    /// a capitalized word (Jordan Bardella, Paris Hilton, Georgia Tech, New York Times) is
    /// taken as part of that name and does not vote for a country. A place name inside a
    /// longer one does not vote either: the words are one name, and only the longest
    /// counts (Sudan in South Sudan, Guinea in Equatorial Guinea, Samoa and American in
    /// American Samoa, Mexico in New Mexico).
    fn scan(&self, original: &str, norm: &Normalized, how: Scan, hits: &mut Hits) {
        let Scan {
            field,
            capitals_mark_names,
            lang,
        } = how;
        // The field's place names as written well enough to be names (their case checked):
        // (first word, last word, the vote, or none for a name that is part of a longer one).
        let mut places: Vec<(u32, u32, Option<Vote>)> = Vec::new();
        self.phrases.find(norm, |hit| {
            let (s, e) = (hit.first_word as u32, hit.last_word as u32);
            // The mention's range in the original, found once per hit and only for the
            // names whose case or following word matters.
            let span = std::cell::OnceCell::new();
            let range = || {
                *span.get_or_init(|| norm.original_range(original, hit.first_word, hit.last_word))
            };
            // The mention as written, for names that must be capitalized or in capitals.
            let surface = || {
                let (a, b) = range();
                original.get(a..b).unwrap_or("")
            };
            for t in &self.targets[hit.pattern] {
                match *t {
                    Target::Term(id) => hits.terms.push((id, field, s, e)),
                    Target::Entity { idx, case } => {
                        if case != Case::Any && !case.allows(surface()) {
                            continue;
                        }
                        hits.entities.push(idx);
                    }
                    Target::Country {
                        idx,
                        weight,
                        case,
                        place,
                        langs,
                        ..
                    } => {
                        if case != Case::Any && !case.allows(surface()) {
                            continue;
                        }
                        // An ambiguous name in an article of a language that does not name
                        // the country so is the word or name it is there.
                        if langs != 0 && lang.is_some_and(|b| langs & b == 0) {
                            continue;
                        }
                        // The original is read only when the word before, as normalized,
                        // is a "New": most country mentions are not.
                        let new_before = hit.first_word > 0 && {
                            let (a, b) =
                                (norm.words[hit.first_word - 1], norm.words[hit.first_word]);
                            let word = norm.text.get(a as usize..b as usize - 1).unwrap_or("");
                            NEW_WORDS.iter().any(|n| n.eq_ignore_ascii_case(word))
                        };
                        let in_a_name = (place
                            && capitals_mark_names
                            && runs_into_a_name(original.get(range().1..).unwrap_or("")))
                            || (new_before && after_new(original.get(..range().0).unwrap_or("")));
                        let surname = !in_a_name
                            && weight > 0.0
                            && after_a_given_name(
                                original,
                                norm,
                                hit.first_word,
                                || range().0,
                                capitals_mark_names,
                            );
                        let form = hit.pattern as u32;
                        if surname && !hits.surnames.contains(&form) {
                            hits.surnames.push(form);
                        }
                        // A region claims its words but votes for nothing (weight 0).
                        let votes = !in_a_name && !surname && weight > 0.0;
                        places.push((s, e, votes.then_some((*t, idx, weight, form))));
                        // Evidence once the longest names are known, below.
                        continue;
                    }
                }
                if hits.evidence.len() < MAX_EVIDENCE {
                    hits.evidence.push((*t, field, s, e));
                }
            }
        });
        for_each_longest(&places, |&(s, e, vote)| {
            if let Some((t, idx, weight, form)) = vote {
                let shadow = match t {
                    Target::Country { shadow, .. } => shadow,
                    _ => NO_SHADOW,
                };
                hits.place_votes.push((form, hits.votes.len(), field, s, e));
                hits.votes.push((idx, weight, shadow));
                if hits.evidence.len() < MAX_EVIDENCE {
                    hits.evidence.push((t, field, s, e));
                }
            }
        });
    }
}

/// A place name's vote: its target (for the evidence), country, weight and the phrase
/// (pattern) that wrote it.
type Vote = (Target, u16, f32, u32);

/// How one field of an article is scanned.
#[derive(Clone, Copy)]
struct Scan {
    field: u8,
    /// Whether a capitalized word right after a place name makes it part of a longer name.
    capitals_mark_names: bool,
    /// The article's language, as a bit of the country targets' `langs`; none if unknown.
    lang: Option<u64>,
}

/// Calls `f` with each of `spans` (first word, last word, payload) that no other span
/// covers with more words, in order. `spans` come in the order [`PhraseIndex::find`]
/// reports hits: by first word, then by length. One pass, no allocation: a span is inside
/// a longer one that starts earlier when an earlier start reaches as far, and inside one
/// with the same start when that start has a longer span (reported after it).
fn for_each_longest<T>(spans: &[(u32, u32, T)], mut f: impl FnMut(&(u32, u32, T))) {
    // The furthest last word of the spans with an earlier first word.
    let mut reach: Option<u32> = None;
    let mut i = 0;
    while i < spans.len() {
        let first = spans[i].0;
        let group = &spans[i..];
        let n = group.iter().take_while(|x| x.0 == first).count();
        let group = &group[..n];
        let longest = group.iter().map(|x| x.1).max().unwrap_or(first);
        if reach.is_none_or(|r| r < longest) {
            group.iter().filter(|x| x.1 == longest).for_each(&mut f);
        }
        reach = Some(reach.map_or(longest, |r| r.max(longest)));
        i += n;
    }
}

/// Whether `rest`, the text right after a place name, goes on with a capitalized word in
/// the same phrase (one space, no punctuation): the place is then part of a longer name
/// (Jordan Bardella, Paris Hilton, New York Times). Days and months, which English
/// capitalizes (in Moscow Tuesday), do not count.
fn runs_into_a_name(rest: &str) -> bool {
    const CALENDAR: &[&str] = &[
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let Some(next) = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('\u{a0}'))
    else {
        return false;
    };
    if !next.chars().next().is_some_and(char::is_uppercase) {
        return false;
    }
    let word = next
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    !CALENDAR.contains(&word)
}

/// Whether the word before the mention starting at original offset `start()` (word
/// `first_word` of `norm`) is a capitalized given name joined to it by one space or a
/// hyphen: the place is then a person's surname (Tom Holland, Jack London, George
/// Washington) or part of a compound given name (Marie-France). A name that is mostly an
/// ordinary word (Will, Hope, Grant) counts only inside a sentence and where capitals mark
/// names (not in a Title Case headline): "Will Jordan…" opens a question. The list is
/// [`gazetteer::given_name`]'s.
fn after_a_given_name(
    original: &str,
    norm: &Normalized,
    first_word: usize,
    start: impl FnOnce() -> usize,
    capitals_mark_names: bool,
) -> bool {
    let Some(prev) = first_word.checked_sub(1) else {
        return false;
    };
    // Most words before a place are not capitalized ("in", "de", "the"): skipped before
    // any lookup. (A non-ASCII first letter goes on to the lookup and the full check.)
    let first_byte = norm
        .origins
        .get(prev)
        .and_then(|o| original.as_bytes().get(o.0 as usize));
    if first_byte.is_none_or(|c| c.is_ascii() && !c.is_ascii_uppercase()) {
        return false;
    }
    let (a, b) = (norm.words[prev] as usize, norm.words[first_word] as usize);
    let Some(kind) = norm.text.get(a..b - 1).and_then(gazetteer::given_name) else {
        return false;
    };
    // Only after a given name, as normalized, is the original read: few mentions follow one.
    let (name_start, name_end) = norm.original_range(original, prev, prev);
    let Some(gap) = original.get(name_end..start()) else {
        return false;
    };
    let hyphen = gap == "-";
    if !(hyphen || gap == " " || gap == "\u{a0}") {
        return false;
    }
    let name = original.get(name_start..name_end).unwrap_or("");
    let mut letters = name.chars();
    if !letters.next().is_some_and(char::is_uppercase) || letters.any(char::is_uppercase) {
        return false;
    }
    match kind {
        gazetteer::GivenName::Name => true,
        gazetteer::GivenName::AlsoAWord => {
            hyphen
                || (capitals_mark_names
                    && !opens_a_sentence(original.get(..name_start).unwrap_or("")))
        }
    }
}

/// Whether a word after `before` opens a sentence, a quotation or a paragraph.
fn opens_a_sentence(before: &str) -> bool {
    let trimmed = before.trim_end();
    if before[trimmed.len()..].contains('\n') {
        return true;
    }
    trimmed.chars().next_back().is_none_or(|c| {
        matches!(
            c,
            '.' | '!' | '?' | '…' | ':' | ';' | '«' | '»' | '"' | '“' | '”' | '(' | '[' | '—' | '–'
        )
    })
}

/// "New" in the languages vigie reads, as it starts a place name.
const NEW_WORDS: &[&str] = &[
    "New", "Nouveau", "Nouvelle", "Nuevo", "Nueva", "Nuovo", "Nuova", "Novo", "Nova", "Neu",
    "Nieuw",
];

/// Whether `before`, the text right before a place name, ends with "New" or its
/// translation, capitalized, then a space or a hyphen: the place is then part of a longer
/// name (New Mexico, Nouveau-Mexique, Nuevo México, New Jersey). The gazetteer holds some
/// such names as regions, in the languages ISO 3166-2 is translated into; this rule covers
/// the others. The countries named so (New Zealand, Nouvelle-Calédonie, Papua New Guinea)
/// are forms of their own and win as the longer name.
fn after_new(before: &str) -> bool {
    let Some(rest) = before.strip_suffix([' ', '-', '\u{a0}']) else {
        return false;
    };
    // The word before the separator, whole: "Renew Mexico" is not "New Mexico".
    let word_start = rest
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric())
        .last()
        .map_or(rest.len(), |(i, _)| i);
    NEW_WORDS.contains(&&rest[word_start..])
}

/// Whether a title is in Title Case (most of its longer words capitalized), where a
/// capital after a place name says nothing.
fn title_case(title: &str) -> bool {
    let (mut words, mut capitalized) = (0, 0);
    for w in title.split_whitespace() {
        let mut letters = w.chars().filter(|c| c.is_alphabetic());
        let Some(first) = letters.next() else {
            continue;
        };
        if letters.count() < 3 {
            continue;
        }
        words += 1;
        capitalized += usize::from(first.is_uppercase());
    }
    words >= 3 && capitalized * 10 >= words * 6
}

const FIELD_TITLE: u8 = 0;
const FIELD_BODY: u8 = 1;
const FIELD_NAMES: [&str; 2] = ["title", "body"];
/// Evidence kept per article: enough to explain, bounded against keyword-stuffed input.
const MAX_EVIDENCE: usize = 64;

#[derive(Default)]
struct Hits {
    /// (term, field, first word, last word): word indices in the field's normalized text.
    terms: Vec<(u32, u8, u32, u32)>,
    entities: Vec<u32>,
    /// (country, weight, the country whose region shares the name, or [`NO_SHADOW`]).
    votes: Vec<(u16, f32, u16)>,
    /// (what, field, first word, last word).
    evidence: Vec<(Target, u8, u32, u32)>,
    /// Place names (patterns) read as a surname somewhere in the article: right after a
    /// given name ("Tom Holland").
    surnames: Vec<u32>,
    /// The votes cast by place names in the text: (pattern, index in `votes`, field,
    /// first word, last word), so those of a surname can be taken back.
    place_votes: Vec<(u32, usize, u8, u32, u32)>,
}

impl Hits {
    /// A place name read as a surname anywhere in the article ("Tom Holland") is that
    /// person wherever the article writes it alone, before or after ("Holland said…",
    /// a headline "Holland joins…"), as a reader takes it: those votes and their evidence
    /// are taken back. The cost: "Jack London… moved to London" loses the city, where
    /// nothing else in the article names Britain.
    fn forget_surnames(&mut self) {
        if self.surnames.is_empty() {
            return;
        }
        let dropped: Vec<&(u32, usize, u8, u32, u32)> = (self.place_votes.iter())
            .filter(|v| self.surnames.contains(&v.0))
            .collect();
        if dropped.is_empty() {
            return;
        }
        let mut gone = vec![false; self.votes.len()];
        for d in &dropped {
            gone[d.1] = true;
        }
        let mut gone = gone.into_iter();
        self.votes.retain(|_| !gone.next().unwrap_or(false));
        self.evidence.retain(|(t, field, s, e)| {
            !matches!(t, Target::Country { .. })
                || !dropped.iter().any(|d| (d.2, d.3, d.4) == (*field, *s, *e))
        });
    }

    fn term_ids(&self) -> impl Iterator<Item = u32> + '_ {
        let mut seen: Vec<u32> = self.terms.iter().map(|t| t.0).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter()
    }
}

struct EvalCtx<'a> {
    hits: &'a Hits,
    countries: &'a [u16],
    article: &'a Article,
    /// The article's language as [`crate::article::language_code`] reads it, as rules'
    /// languages are read.
    language: Option<&'a str>,
}

fn field_ok(want: Field, got: u8) -> bool {
    match want {
        Field::Any => true,
        Field::Title => got == FIELD_TITLE,
        Field::Body => got == FIELD_BODY,
    }
}

impl EvalCtx<'_> {
    fn eval(&self, q: &CQuery) -> bool {
        match q {
            CQuery::Term { id, field } => self
                .hits
                .terms
                .iter()
                .any(|(t, f, _, _)| t == id && field_ok(*field, *f)),
            CQuery::Near {
                a,
                b,
                distance,
                field,
            } => self.near(*a, *b, *distance, *field),
            CQuery::Country(c) => self.countries.binary_search(c).is_ok(),
            CQuery::Entity(e) => self.hits.entities.binary_search(e).is_ok(),
            CQuery::Lang(l) => self.language == Some(l.as_str()),
            CQuery::Source(s) => self.article.source.as_deref().is_some_and(|src| {
                let src = src.to_ascii_lowercase();
                src == *s || src.ends_with(&format!(".{s}"))
            }),
            CQuery::And(qs) => qs.iter().all(|q| self.eval(q)),
            CQuery::Or(qs) => qs.iter().any(|q| self.eval(q)),
            CQuery::Not(q) => !self.eval(q),
        }
    }

    fn near(&self, a: u32, b: u32, distance: u32, field: Field) -> bool {
        for &(_, fa, wa, wae) in self
            .hits
            .terms
            .iter()
            .filter(|t| t.0 == a && field_ok(field, t.1))
        {
            for &(_, _, wb, wbe) in self.hits.terms.iter().filter(|t| t.0 == b && t.1 == fa) {
                // Words strictly between the two terms.
                let gap = if wb > wae {
                    wb - wae - 1
                } else {
                    wa.saturating_sub(wbe + 1)
                };
                if gap <= distance {
                    return true;
                }
            }
        }
        false
    }
}

fn visit<'a>(q: &'a CQuery, f: &mut impl FnMut(&'a CQuery)) {
    match q {
        CQuery::And(qs) | CQuery::Or(qs) => qs.iter().for_each(|q| visit(q, f)),
        // Negated leaves do not make a rule a candidate.
        CQuery::Not(_) => {}
        leaf => f(leaf),
    }
}

fn compile(
    q: &Query,
    term: &mut impl FnMut(&str) -> u32,
    entities: &HashMap<String, u32>,
    countries: &HashMap<String, u16>,
) -> CQuery {
    match q {
        Query::Text { text, field } => CQuery::Term {
            id: term(text),
            field: *field,
        },
        Query::Near {
            a,
            b,
            distance,
            field,
        } => CQuery::Near {
            a: term(a),
            b: term(b),
            distance: *distance,
            field: *field,
        },
        // Rules are validated against known entities and countries before they get here;
        // an unknown one can only come from a race with a reload and simply never matches.
        Query::Country(c) => countries
            .get(c)
            .map_or(CQuery::Or(vec![]), |&i| CQuery::Country(i)),
        Query::Entity(e) => entities
            .get(e)
            .map_or(CQuery::Or(vec![]), |&i| CQuery::Entity(i)),
        Query::Lang(l) => CQuery::Lang(l.clone()),
        Query::Source(s) => CQuery::Source(s.clone()),
        Query::And(qs) => CQuery::And(
            qs.iter()
                .map(|q| compile(q, term, entities, countries))
                .collect(),
        ),
        Query::Or(qs) => CQuery::Or(
            qs.iter()
                .map(|q| compile(q, term, entities, countries))
                .collect(),
        ),
        Query::Not(q) => CQuery::Not(Box::new(compile(q, term, entities, countries))),
    }
}

/// Normalized surface forms of an entity, each with whether it needs a capital letter.
///
/// Full names and multi-word aliases match as written. Single words — aliases, and for
/// people the surname — match only capitalized (so "poutine" the dish is not Putin), and
/// get their usual spelling variants: transliteration families and Russian case endings.
/// An acronym (an alias in capitals: CSTO, UN) matches only in capitals and as it is.
pub fn entity_forms(e: &Entity, surname_only: bool) -> Vec<(String, Case)> {
    let mut out: Vec<(String, Case)> = Vec::new();
    let blocked: Vec<String> = e.not.iter().map(|n| normalize::normalize_str(n)).collect();
    let add = |form: String, case: Case, out: &mut Vec<(String, Case)>| {
        if form.len() >= 2 && !blocked.contains(&form) && !out.iter().any(|(f, _)| *f == form) {
            out.push((form, case));
        }
    };
    // (form, whether it comes from an abbreviation such as CSTO or UN).
    let mut singles: Vec<(String, bool)> = Vec::new();
    for name in std::iter::once(&e.name).chain(&e.aliases) {
        let acronym = Case::of_name(name, Case::Any) == Case::Upper;
        for v in normalize::variants(name) {
            if v.contains(' ') {
                let case = if acronym { Case::Upper } else { Case::Any };
                add(v.clone(), case, &mut out);
                // Family variants of the last word of a multi-word name (Kassym-Jomart Tokayev → tokaev).
                if let Some((head, last)) = v.rsplit_once(' ') {
                    for lv in spelling_family(last) {
                        add(format!("{head} {lv}"), case, &mut out);
                    }
                }
            } else {
                singles.push((v, acronym));
            }
        }
    }
    if e.kind == EntityKind::Person && surname_only {
        if let Some(last) = normalize::normalize_str(&e.name).rsplit(' ').next() {
            singles.push((last.to_string(), false));
        }
    }
    for (s, acronym) in singles {
        if acronym {
            // An acronym has no spelling family or case endings: it is written as it is.
            add(s, Case::Upper, &mut out);
            continue;
        }
        for v in spelling_family(&s) {
            add(v.clone(), Case::Capital, &mut out);
            if e.kind == EntityKind::Person {
                for ending in russian_case_endings(&v) {
                    add(ending, Case::Capital, &mut out);
                }
            }
        }
    }
    out
}

/// Transliteration variants of one normalized word: Tokayev/Tokaev/Tokaiev/Tokajew/Toqaev,
/// Putin/Poutine, Zelensky/Zelenskyy/Zelenskiy/Zelenski. Bounded to a few dozen forms.
pub fn spelling_family(word: &str) -> Vec<String> {
    // Each rule rewrites every occurrence of its left side to each alternative.
    const SWAPS: &[(&str, &[&str])] = &[
        ("aye", &["ae", "aie", "aje"]),
        ("ae", &["aye", "aie"]),
        ("aie", &["aye", "ae"]),
        ("q", &["k"]),
        ("ou", &["u"]),
        ("u", &["ou"]),
        ("kh", &["h", "ch"]),
        ("zh", &["j", "sch"]),
        ("sh", &["ch", "sch"]),
        ("ch", &["tch", "tsch"]),
        ("yu", &["iou", "ju"]),
        ("ya", &["ia", "ja"]),
    ];
    const ENDINGS: &[(&str, &[&str])] = &[
        ("skyy", &["sky", "skiy", "ski", "skij", "skii"]),
        ("sky", &["skyy", "skiy", "ski", "skij", "skii"]),
        ("skiy", &["sky", "skyy", "ski", "skij"]),
        ("ski", &["sky", "skyy", "skiy"]),
        ("ev", &["ew", "iev"]),
        ("ov", &["ow"]),
        ("in", &["ine"]),
    ];
    let mut out = vec![word.to_string()];
    for (from, tos) in ENDINGS {
        if let Some(stem) = word.strip_suffix(from) {
            for to in *tos {
                out.push(format!("{stem}{to}"));
            }
        }
    }
    let base = out.clone();
    for w in base {
        for (from, tos) in SWAPS {
            if w.contains(from) {
                for to in *tos {
                    out.push(w.replace(from, to));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out.truncate(64);
    out
}

/// Case forms of a one-word country name that the gazetteer lists only in the nominative:
/// Russian (России, Казахстана, Украине) and the German genitive (Kasachstans).
fn declensions(name: &str) -> Vec<String> {
    if name.contains(' ') || name.contains('-') {
        return Vec::new();
    }
    let cyrillic = name.chars().any(|c| ('\u{0400}'..='\u{04FF}').contains(&c));
    let last = name.chars().last().unwrap_or(' ');
    let stem: String = name.chars().take(name.chars().count() - 1).collect();
    if cyrillic {
        let endings: &[&str] = match last {
            'я' => {
                return ["и", "ю", "ей"]
                    .iter()
                    .map(|e| format!("{stem}{e}"))
                    .collect()
            }
            'а' => &["ы", "и", "е", "у", "ой"],
            'ь' | 'й' => return Vec::new(),
            _ => {
                return ["а", "у", "е", "ом"]
                    .iter()
                    .map(|e| format!("{name}{e}"))
                    .collect()
            }
        };
        return endings.iter().map(|e| format!("{stem}{e}")).collect();
    }
    if last.is_ascii_alphabetic() && !"aeiousxz".contains(last) {
        return vec![format!("{name}s")];
    }
    Vec::new()
}

/// Russian case forms of a transliterated surname (Tokayev → Tokayeva, Tokayevu, Tokayevym...).
fn russian_case_endings(word: &str) -> Vec<String> {
    if word.ends_with("ev") || word.ends_with("ov") || word.ends_with("in") || word.ends_with("yn")
    {
        ["a", "u", "ym", "om", "e"]
            .iter()
            .map(|e| format!("{word}{e}"))
            .collect()
    } else {
        Vec::new()
    }
}

/// Rules and matchers for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A rule with this id and query.
    pub fn rule(id: &str, q: &str) -> Rule {
        Rule {
            id: id.into(),
            name: id.into(),
            query: crate::rules::parse_query(q).unwrap(),
            notify: vec![],
            spike: Default::default(),
            templates: Default::default(),
            file: "t".into(),
            line: 1,
            fingerprint: 1,
        }
    }

    /// A matcher for these rules, without the gazetteer (fast to build).
    pub fn matcher(rules: Vec<Rule>) -> std::sync::Arc<Matcher> {
        std::sync::Arc::new(
            Matcher::new(
                rules,
                vec![],
                &MatcherOptions {
                    gazetteer: false,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::rule;
    use super::*;
    use chrono::Utc;

    fn art(title: &str, body: &str) -> Article {
        Article {
            id: "x".into(),
            url: None,
            title: title.into(),
            body: body.into(),
            published_at: Utc::now(),
            date_origin: Default::default(),
            source: Some("lemonde.fr".into()),
            language: Some("fr".into()),
            entities: vec![],
            countries: vec![],
            extra: Default::default(),
        }
    }

    /// A matcher of `rules` with the built-in gazetteer and no entities.
    fn with_gazetteer(rules: Vec<Rule>) -> Matcher {
        Matcher::new(rules, vec![], &MatcherOptions::default()).unwrap()
    }

    /// A matcher with the built-in gazetteer and one rule per country, named by its code
    /// in lower case (`sd` is `country:SD`).
    fn with_country_rules(codes: &[&str]) -> Matcher {
        with_gazetteer(
            codes
                .iter()
                .map(|c| rule(c, &format!("country:{}", c.to_uppercase())))
                .collect(),
        )
    }

    /// The rules an article in `lang` matches.
    fn matched(m: &Matcher, title: &str, body: &str, lang: &str) -> Vec<String> {
        let mut a = art(title, body);
        a.language = Some(lang.into());
        m.explain(&a).rules
    }

    #[test]
    fn story_hashes_are_the_engines_own() {
        // The engine computes them itself for a match built elsewhere; both must agree,
        // or an article would start a new story depending on where it was matched.
        let m = super::testing::matcher(vec![rule("kz", "kazakhstan")]);
        let long = "Les manifestations s'étendent à Almaty, au Kazakhstan. ".repeat(400);
        for a in [
            art("Kazakhstan : l'état d'urgence décrété à Almaty", &long),
            art("Almaty", "rien"),
            art("", "Kazakhstan"),
            art("Un titre de quatre mots", ""),
            art("Trois mots seulement", "Kazakhstan"),
        ] {
            let story = m
                .match_article(&a)
                .story
                .expect("the matcher computes them");
            assert_eq!(story.simhash, crate::engine::simhash(&a.title, &a.body));
            assert_eq!(
                story.title,
                crate::engine::title_hash(&a.title),
                "{:?}",
                a.title
            );
        }
    }

    fn people() -> Vec<Entity> {
        vec![
            Entity {
                id: "tokayev".into(),
                name: "Kassym-Jomart Tokayev".into(),
                kind: EntityKind::Person,
                aliases: vec![],
                not: vec![],
            },
            Entity {
                id: "putin".into(),
                name: "Vladimir Putin".into(),
                kind: EntityKind::Person,
                aliases: vec![],
                not: vec![],
            },
            Entity {
                id: "zelensky".into(),
                name: "Volodymyr Zelensky".into(),
                kind: EntityKind::Person,
                aliases: vec![],
                not: vec![],
            },
        ]
    }

    #[test]
    fn keywords_respect_word_boundaries_and_fields() {
        let m = Matcher::new(
            vec![rule("macron", "macron"), rule("t", "title:almaty")],
            vec![],
            &MatcherOptions {
                gazetteer: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            m.explain(&art("Le macronisme", "")).rules,
            Vec::<String>::new()
        );
        assert_eq!(
            m.explain(&art("", "Emmanuel Macron, président")).rules,
            vec!["macron"]
        );
        assert_eq!(m.explain(&art("", "à Almaty")).rules, Vec::<String>::new());
        assert_eq!(m.explain(&art("À Almaty", "")).rules, vec!["t"]);
    }

    #[test]
    fn boolean_and_near() {
        let m = Matcher::new(
            vec![
                rule("a", "(kazakhstan OR almaty) AND NOT football"),
                rule("n", "tokayev NEAR/2 troupes"),
                rule("l", "lang:de"),
            ],
            vec![],
            &MatcherOptions {
                gazetteer: false,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.explain(&art("Kazakhstan", "")).rules, vec!["a"]);
        assert_eq!(
            m.explain(&art("Kazakhstan", "football")).rules,
            Vec::<String>::new()
        );
        assert_eq!(
            m.explain(&art("", "Tokayev demande des troupes")).rules,
            vec!["n"]
        );
        assert_eq!(
            m.explain(&art("", "Tokayev a parlé hier soir, puis les troupes"))
                .rules,
            Vec::<String>::new()
        );
        // `lang:de` reads the article's tag as the rule's own was read.
        for tag in ["de", "de-AT", "DE", "deu"] {
            let mut de = art("x", "");
            de.language = Some(tag.into());
            assert_eq!(m.explain(&de).rules, vec!["l"], "{tag}");
        }
        let mut en = art("x", "");
        en.language = Some("en-DE".into());
        assert_eq!(m.explain(&en).rules, Vec::<String>::new());
    }

    #[test]
    fn entity_spelling_families() {
        let m = Matcher::new(
            vec![rule(
                "e",
                "entity:tokayev OR entity:putin OR entity:zelensky",
            )],
            people(),
            &MatcherOptions {
                gazetteer: false,
                ..Default::default()
            },
        )
        .unwrap();
        for text in [
            "Tokaïev a dit",
            "Tokaev a dit",
            "Токаев заявил",
            "Тоқаев",
            "Kassym-Jomart Tokayev",
            "Tokajew sagte",
            "Vladimir Poutine",
            "Путин",
            "встреча с Токаевым",
            "Zelenskyy",
            "Зеленский",
        ] {
            let r = m.explain(&art(text, ""));
            assert!(!r.entities.is_empty(), "{text} gave no entity");
        }
        for text in ["une poutine au fromage", "zelensky en minuscules"] {
            assert!(
                m.explain(&art(text, "")).entities.is_empty(),
                "{text} matched"
            );
        }
    }

    #[test]
    fn countries_from_gazetteer_with_traps() {
        let m = Matcher::new(
            vec![rule("kz", "country:KZ")],
            vec![],
            &MatcherOptions::default(),
        )
        .unwrap();
        for text in [
            "Almaty",
            "Alma-Ata",
            "Astana",
            "Nur-Sultan",
            "Noursoultan",
            "Нур-Султан",
            "les Kazakhs",
            "le président kazakh",
            "Kazakhstan",
            "Казахстан",
            "kasachische Regierung",
        ] {
            assert_eq!(m.explain(&art("", text)).countries, vec!["KZ"], "{text}");
        }
        for text in [
            "the oral exam",
            "roast the turkey",
            "Michael Jordan scored",
            "une poutine",
            // Country names that are frequent words elsewhere (scripts/gen_gazetteer.py,
            // WORD_ZIPF): Czech "Čada" (Chad), German "Island" (Iceland), Italian "Liberi"
            // (Liberia), Estonian "Läti" (Latvia), Spanish "Gana" (Ghana), "Réunion".
            "una reunión cada semana: el que gana",
            "a small island off the coast",
            "une réunion de travail",
            "sono liberi da tutti i lati",
            "Dominique a dit oui",
        ] {
            assert!(
                m.explain(&art("", text)).countries.is_empty(),
                "{text}: {:?}",
                m.explain(&art("", text)).countries
            );
        }
    }

    /// A name used in place of a country (`data/metonyms.tsv`) is a whole mention of it,
    /// with its capital letter, even before another capitalized word.
    #[test]
    fn names_used_in_place_of_a_country_name_it() {
        let m = with_country_rules(&["ru", "us", "kz", "fr", "gb"]);
        let none: Vec<&str> = vec![];
        for (text, lang, want) in [
            ("Le Kremlin a démenti.", "fr", vec!["ru"]),
            ("The White House Press Secretary spoke.", "en", vec!["us"]),
            ("Selon la Maison-Blanche, rien.", "fr", vec!["us"]),
            ("L'Akorda a publié un décret.", "fr", vec!["kz"]),
            ("Downing Street declined to comment.", "en", vec!["gb"]),
            ("Dans l'Hexagone, les prix montent.", "fr", vec!["fr"]),
            // Written in lower case in the data: the capital is on a later word.
            (
                "Les élections outre-Atlantique inquiètent.",
                "fr",
                vec!["us"],
            ),
            ("Outre-Manche, le gouvernement a cédé.", "fr", vec!["gb"]),
            // A house that is white; a town near Paris.
            (
                "Une maison blanche au bord du lac, un hexagone.",
                "fr",
                none.clone(),
            ),
            ("Il habite au Kremlin-Bicêtre.", "fr", none.clone()),
        ] {
            assert_eq!(matched(&m, "", text, lang), want, "{text}");
        }
    }

    /// A set phrase that holds a country's name (`data/not-places.tsv`) claims its words:
    /// the name inside it votes for nothing, in any case, while the country named on its
    /// own elsewhere in the article still counts.
    #[test]
    fn set_phrases_are_not_places() {
        let m = with_gazetteer(vec![]);
        let in_lang = |lang: &str, text: &str| Article {
            language: Some(lang.into()),
            ..art("", text)
        };
        for (lang, text) in [
            (
                "fr",
                "La Bourse a connu des montagnes russes, les courtiers en file indienne.",
            ),
            (
                "fr",
                "Des choux de Bruxelles, de la crème anglaise, un cochon d'Inde.",
            ),
            (
                "en",
                "Brussels sprouts, Brazil nuts and guinea pigs for the Fighting Irish.",
            ),
            ("en", "A DUTCH OVEN, a Swiss Army knife and french fries."),
            ("es", "Una montaña rusa."),
            (
                "en",
                "Central American migrants crossed the Gulf of Mexico.",
            ),
            ("fr", "Les dirigeants latino-américains se réunissent."),
            ("de", "Ein Deutscher Schäferhund."),
        ] {
            let got = m.explain(&in_lang(lang, text)).countries;
            assert!(got.is_empty(), "{text}: {got:?}");
        }
        for (lang, text, want) in [
            ("fr", "Les Russes aiment les montagnes russes.", "RU"),
            ("fr", "Des montagnes russes à la Bourse de Moscou.", "RU"),
            ("en", "American and Latin American leaders met.", "US"),
            ("en", "Guinea pigs are popular in Conakry.", "GN"),
        ] {
            assert_eq!(
                m.explain(&in_lang(lang, text)).countries,
                vec![want],
                "{text}"
            );
        }
    }

    #[test]
    fn abbreviations_count_only_in_capitals() {
        let mut entities = people();
        entities.push(Entity {
            id: "un".into(),
            name: "United Nations".into(),
            kind: EntityKind::Org,
            aliases: vec!["UN".into(), "ONU".into()],
            not: vec![],
        });
        let m = Matcher::new(
            vec![rule("us", "country:US"), rule("un", "entity:un")],
            entities,
            &MatcherOptions::default(),
        )
        .unwrap();
        // Written as abbreviations, they name the country and the organisation.
        for (text, rule) in [
            ("US troops left", "us"),
            ("les É.-U. et la Chine", "us"),
            ("les E.-U.", "us"),
            ("Les USA", "us"),
            ("визит в США", "us"),
            ("a UN resolution", "un"),
            ("l'ONU a voté", "un"),
        ] {
            assert_eq!(m.explain(&art("", text)).rules, vec![rule], "{text}");
        }
        // In running text the same letters are ordinary words: English "us", "as", "sad",
        // French "eu" (il a eu), "un", "onu" never.
        for text in [
            "Tell us as soon as possible, it was a sad day",
            "Il a eu du mal à le dire",
            "Un jour, un accord",
            "Sam and the others",
            "The EU agreed",
        ] {
            let r = m.explain(&art("", text));
            assert!(r.rules.is_empty(), "{text}: {:?} {:?}", r.rules, r.evidence);
        }
        assert_eq!(Case::of_name("US", Case::Any), Case::Upper);
        assert_eq!(Case::of_name("É.-U.", Case::Any), Case::Upper);
        assert_eq!(Case::of_name("США", Case::Any), Case::Upper);
        assert_eq!(Case::of_name("A", Case::Capital), Case::Capital);
        assert_eq!(Case::of_name("Kazakhstan", Case::Capital), Case::Capital);
        assert_eq!(Case::of_name("北京", Case::Capital), Case::Capital);
    }

    #[test]
    fn an_ambiguous_name_counts_only_in_the_languages_that_name_the_country_so() {
        let m = with_gazetteer(vec![rule("co", "country:CO"), rule("is", "country:IS")]);
        let none: Vec<String> = vec![];
        // Romanian names Colombia "Columbia"; English and French do not, and there it is
        // a university, a city, a river, however often it is named. German, Danish and
        // Swedish name Iceland "Island"; in English it opens sentences.
        let columbia = "Columbia a anunțat. Columbia și Venezuela au discutat.";
        let english = "Students at Columbia set up tents. Columbia said it would act.";
        let island = "Island states met. Island leaders spoke.";
        assert_eq!(matched(&m, "", columbia, "ro"), vec!["co"]);
        assert_eq!(matched(&m, "", english, "en"), none);
        assert_eq!(matched(&m, "", english, "fr"), none);
        assert_eq!(
            matched(&m, "", "Island und Norwegen. Island hat gewählt.", "de"),
            vec!["is"]
        );
        assert_eq!(matched(&m, "", island, "en"), none);
        // The same texts in an article of no known language count as before (two
        // half-votes), and a tag is read however the feed writes it.
        assert_eq!(matched(&m, "", english, ""), vec!["co"]);
        assert_eq!(matched(&m, "", english, "xx"), vec!["co"]);
        for tag in ["ro-RO", "RO", "ron", "ro_RO"] {
            assert_eq!(matched(&m, "", columbia, tag), vec!["co"], "{tag}");
        }
        for tag in ["en-GB", "EN", "eng"] {
            assert_eq!(matched(&m, "", english, tag), none, "{tag}");
        }
        // The unambiguous names still count in any language.
        assert_eq!(matched(&m, "", "La Colombie a voté.", "fr"), vec!["co"]);
        assert_eq!(
            matched(&m, "", "Iceland voted on Sunday.", "de"),
            vec!["is"]
        );
        // Forms that read the same once normalized count in the languages of either.
        assert_eq!(
            matched(&m, "", "Colômbia e Colombia. Colômbia.", "pt"),
            vec!["co"]
        );
    }

    #[test]
    fn demonyms_of_every_country_count_and_the_shared_or_doubtful_ones_do_not() {
        let m = with_country_rules(&[
            "sd", "td", "ml", "bf", "ne", "gb", "ie", "cd", "cg", "do", "fk", "th", "my", "np",
            "kr",
        ]);
        let none: Vec<String> = vec![];
        for (text, lang, want) in [
            // From the world-countries dataset, with plurals, French in either case.
            ("Des réfugiés soudanais arrivent.", "fr", vec!["sd"]),
            ("Les Tchadiens ont voté.", "fr", vec!["td"]),
            ("Chadian troops crossed the border.", "en", vec!["td"]),
            ("Les autorités maliennes ont parlé.", "fr", vec!["ml"]),
            ("La junte burkinabè a parlé.", "fr", vec!["bf"]),
            ("Nigeriens marched in Niamey.", "en", vec!["ne"]),
            // Not a Malaysian town (an alternate name GeoNames gives Alor Setar).
            ("The Thai army said so.", "en", vec!["th"]),
            // English forms the dataset lacks, added beside its own (Nepalese); plurals.
            ("Nepali climbers reached the summit.", "en", vec!["np"]),
            ("South Koreans voted.", "en", vec!["kr"]),
            // The longer name wins: Northern Irish is British.
            ("Northern Irish unionists rejected it.", "en", vec!["gb"]),
            ("Irish farmers rejected it.", "en", vec!["ie"]),
            // The United Kingdom's four countries and their people.
            ("Scottish voters backed it.", "en", vec!["gb"]),
            ("Les indépendantistes écossais ont voté.", "fr", vec!["gb"]),
            ("Le pays de Galles a gagné.", "fr", vec!["gb"]),
        ] {
            assert_eq!(matched(&m, "", text, lang), want, "{text}");
        }
        // Shared by two countries (Congolese), or first something else (the order of
        // Dominicans, someone from Saint-Malo): none.
        for (text, lang) in [
            ("The Congolese army clashed with rebels.", "en"),
            ("Les dominicains du couvent ont prié.", "fr"),
            ("Un armateur malouin a lancé un navire.", "fr"),
        ] {
            assert_eq!(matched(&m, "", text, lang), none, "{text}");
        }
    }

    #[test]
    fn a_city_name_that_is_another_countrys_name_is_that_countrys() {
        // "Benin" is also an alternate name of Benin City, Nigeria; Armenia a city of
        // Colombia. Both names are the countries'.
        let m = with_country_rules(&["bj", "ng", "am", "co"]);
        let benin = "Benin voted on Sunday. Benin's president spoke.";
        assert_eq!(matched(&m, "", benin, "en"), vec!["bj"]);
        let armenia = "Armenia and Azerbaijan met. Armenia said talks went well.";
        assert_eq!(matched(&m, "", armenia, "en"), vec!["am"]);
    }

    #[test]
    fn an_abbreviation_counts_only_in_the_languages_that_write_it_for_the_country() {
        let m = with_gazetteer(vec![rule("us", "country:US"), rule("gb", "country:GB")]);
        let none: Vec<String> = vec![];
        // Dutch writes the United States "VS", Czech the United Kingdom "GB", Portuguese
        // the United States "EUA"; in English they are versus, gigabytes and the FDA's
        // emergency use authorization.
        for (text, lang, want) in [
            ("Ajax VS Feyenoord: the preview.", "en", &none),
            ("De VS en China praten.", "nl", &vec!["us".to_string()]),
            ("It ships with 128 GB of storage.", "en", &none),
            (
                "Premiér jednal s GB a Francií.",
                "cs",
                &vec!["gb".to_string()],
            ),
            ("The FDA granted an EUA on Friday.", "en", &none),
            (
                "O presidente dos EUA falou.",
                "pt-BR",
                &vec!["us".to_string()],
            ),
            // In an article of no known language, every name counts, as before.
            (
                "The FDA granted an EUA on Friday.",
                "",
                &vec!["us".to_string()],
            ),
        ] {
            assert_eq!(&matched(&m, "", text, lang), want, "{text} ({lang})");
        }
        // US, USA and UK are read so in every language (aliases.tsv).
        assert_eq!(
            matched(&m, "", "Der US-Präsident sprach.", "de"),
            vec!["us"]
        );
        assert_eq!(matched(&m, "", "Les USA ont voté.", "fr"), vec!["us"]);
        assert_eq!(matched(&m, "", "Le UK a voté.", "fr"), vec!["gb"]);
    }

    #[test]
    fn a_region_named_as_a_country_takes_the_name_where_its_country_has_votes() {
        let m = with_gazetteer(vec![
            rule("ge", "country:GE"),
            rule("us", "country:US"),
            rule("ec", "country:EC"),
        ]);
        let none: Vec<String> = vec![];
        // Georgia alone is the country (two half-votes).
        let country = "Georgia's parliament passed the law. Georgia's prime minister spoke.";
        assert_eq!(matched(&m, "", country, "en"), vec!["ge"]);
        // With the United States placed by another name (Atlanta, half a vote), Georgia is
        // the state: no vote for the country, none for the state either.
        let state = "Voters in Georgia went to the polls. Georgia's governor said turnout in Atlanta was high.";
        assert_eq!(matched(&m, "", state, "en"), none);
        let r = m.explain(&{
            let mut a = art("", state);
            a.language = Some("en".into());
            a
        });
        assert!(
            r.evidence.iter().all(|e| e.what != "country:GE"),
            "{:?}",
            r.evidence
        );
        // The country keeps the votes of names no region shares (Tbilisi).
        let both = "Georgia's parliament passed the law; the United States condemned it. \
                    Protesters filled Tbilisi.";
        assert_eq!(matched(&m, "", both, "en"), vec!["ge", "us"]);
        // French: Géorgie in a story placed in the United States; Équateur (Ecuador) alone.
        let fr = "En Géorgie, les électeurs d'Atlanta ont voté. La Géorgie est un État clé des États-Unis.";
        assert_eq!(matched(&m, "", fr, "fr"), vec!["us"]);
        let ecuador = "L'Équateur a voté dimanche. En Équateur, le président a perdu.";
        assert_eq!(matched(&m, "", ecuador, "fr"), vec!["ec"]);
    }

    #[test]
    fn names_in_common_use_that_cldr_lacks_count() {
        let m = with_gazetteer(vec![
            rule("cd", "country:CD"),
            rule("gb", "country:GB"),
            rule("us", "country:US"),
            rule("ps", "country:PS"),
            rule("mm", "country:MM"),
            rule("ae", "country:AE"),
        ]);
        for (text, lang, want) in [
            ("Des combats dans l'est de la RDC.", "fr", "cd"),
            ("La République démocratique du Congo a voté.", "fr", "cd"),
            ("Fighting in eastern DRC went on.", "en", "cd"),
            ("Britain's economy shrank.", "en", "gb"),
            ("La Grande-Bretagne a voté.", "fr", "gb"),
            ("The U.S. Senate voted.", "en", "us"),
            ("Strikes on Gaza went on overnight.", "en", "ps"),
            ("Des colons en Cisjordanie.", "fr", "ps"),
            ("Burma's generals met.", "en", "mm"),
            ("The UAE voted.", "en", "ae"),
        ] {
            assert_eq!(matched(&m, "", text, lang), vec![want], "{text}");
        }
        // Abbreviations count only in capitals: "drc" in lower case is no country. German
        // "VAE" (the Emirates) is left out: in French it is a diploma by experience.
        assert_eq!(
            matched(&m, "", "the drc value was set", "en"),
            Vec::<String>::new()
        );
        assert_eq!(
            matched(&m, "", "La VAE permet d'obtenir un diplôme.", "fr"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_place_that_runs_into_a_capitalized_word_is_part_of_a_name() {
        let m = with_gazetteer(vec![
            rule("jo", "country:JO"),
            rule("fr", "country:FR"),
            rule("kz", "country:KZ"),
        ]);
        let rules = |title: &str, body: &str, lang: &str| matched(&m, title, body, lang);
        // People, papers and brands named after places.
        for body in [
            "Jordan Bardella a dit hier. Jordan Bardella a ajouté que le RN gagnerait.",
            "Paris Hilton est arrivée.",
            "Le Paris Saint-Germain a gagné.",
        ] {
            assert!(rules("", body, "fr").is_empty(), "{body}");
        }
        // The places themselves: after a comma, before a day or month, at the end, in a
        // Title Case title, in German (whose nouns all take a capital).
        for (title, body, lang, want) in [
            ("", "Amman, capitale de la Jordanie.", "fr", "jo"),
            ("", "Il vit à Paris.", "fr", "fr"),
            ("", "Protests in Almaty Tuesday left two dead.", "en", "kz"),
            ("", "Elections in Almaty March 3 are expected.", "en", "kz"),
            ("Protests Spread Across Almaty Streets", "", "en", "kz"),
            ("", "In Almaty Proteste gegen die Regierung.", "de", "kz"),
        ] {
            assert_eq!(rules(title, body, lang), vec![want], "{title} {body}");
        }
    }

    /// A country name that is also a common given name (kind `g` of the gazetteer) is a
    /// person's first name when a capitalized word follows it, and the country otherwise.
    #[test]
    fn a_country_named_like_a_person_is_a_name_before_a_capitalized_word() {
        let m = with_gazetteer(vec![
            rule("sv", "country:SV"),
            rule("mu", "country:MU"),
            rule("ke", "country:KE"),
        ]);
        let rules = |body: &str, lang: &str| matched(&m, "", body, lang);
        for (body, lang) in [
            (
                "Salvador Allende est mort en 1973. Salvador Dalí peignait.",
                "fr",
            ),
            ("El expresidente Mauricio Macri habló.", "es"),
            ("Kenya Moore and her castmates returned.", "en"),
        ] {
            assert!(
                rules(body, lang).is_empty(),
                "{body}: {:?}",
                rules(body, lang)
            );
        }
        for (body, lang, want) in [
            ("Le Salvador a voté.", "fr", "sv"),
            ("Au Salvador, Nayib Bukele gouverne.", "fr", "sv"),
            ("Protests in Kenya grew.", "en", "ke"),
            ("Kenya, Uganda and Tanzania signed.", "en", "ke"),
        ] {
            assert_eq!(rules(body, lang), vec![want], "{body}");
        }
    }

    #[test]
    fn a_place_after_a_given_name_is_part_of_a_persons_name() {
        let m = with_country_rules(&["nl", "gb", "de", "jo", "fr", "us"]);
        let rules = |body: &str, lang: &str| matched(&m, "", body, lang);
        for (body, lang) in [
            ("L'acteur Tom Holland tourne un film.", "fr"),
            ("A novel by Jack London and a song by Irving Berlin.", "en"),
            ("The encyclopedia Jimmy Wales founded.", "en"),
            ("Michael Jordan won. Michael Jordan won again.", "en"),
            ("Marie-France Garaud a conseillé Pompidou.", "fr"),
            ("Le film avec Denzel et George Washington.", "fr"),
            // A name that is mostly a word counts inside a sentence.
            ("As Will Holland said, the game is over.", "en"),
            // Once read as a surname, the name alone is the same person, after or before.
            (
                "Tom Holland tourne. Holland a dit que le film sortira.",
                "fr",
            ),
            ("Jordan said he was tired. Michael Jordan then left.", "en"),
        ] {
            assert!(
                rules(body, lang).is_empty(),
                "{body}: {:?}",
                rules(body, lang)
            );
        }
        for (body, lang, want) in [
            // Washington is the United States' capital, as London is Britain's.
            ("Washington a annoncé des sanctions.", "fr", "us"),
            ("Talks in Washington and London.", "en", "us"),
            // Not a given name, or not right before the place.
            ("Le président Macron Paris visite.", "fr", "fr"),
            ("Il a vu Tom. Holland est loin.", "fr", "nl"),
            ("Il a vu TOM HOLLAND.", "fr", "nl"),
            // A name that is mostly a word opens a sentence: "Will France…".
            ("Will France join the talks?", "en", "fr"),
            ("Hard times.\nWill France join?", "en", "fr"),
        ] {
            assert!(
                rules(body, lang).contains(&want.to_string()),
                "{body}: {:?}",
                rules(body, lang)
            );
        }
        // The surname of the body takes back the headline's bare mention, not other names
        // of the same country.
        assert!(matched(&m, "Holland joins the cast", "Tom Holland will star.", "en").is_empty());
        assert_eq!(
            matched(&m, "Holland in Amsterdam", "Tom Holland will star.", "en"),
            vec!["nl"]
        );
        assert_eq!(
            matched(&m, "", "Tom Holland spoke. The Netherlands won.", "en"),
            vec!["nl"]
        );
        // Evidence goes with the votes: none left for the surname's bare mentions.
        let explained = m.explain(&art("", "Tom Holland tourne. Holland a dit oui."));
        assert!(explained.countries.is_empty(), "{:?}", explained.countries);
        assert!(
            !(explained.evidence.iter()).any(|e| e.what.starts_with("country:")),
            "{:?}",
            explained.evidence
        );
        // In a Title Case headline a capital says nothing about a name that is also a word.
        assert_eq!(
            matched(&m, "Will France Join The Talks Today?", "", "en"),
            vec!["fr"]
        );
        assert!(matched(&m, "Why Tom Holland Still Matters Today", "", "en").is_empty());
    }

    #[test]
    fn a_place_inside_a_longer_place_name_does_not_vote() {
        let m = with_gazetteer(
            [
                "sd", "ss", "gn", "gq", "ws", "as", "us", "pg", "mx", "je", "nz", "ie", "co", "is",
                "gb", "ca", "tt",
            ]
            .iter()
            .map(|c| rule(c, &format!("country:{}", c.to_uppercase())))
            .collect(),
        );
        let rules = |body: &str, lang: &str| matched(&m, "", body, lang);
        for (body, lang, want) in [
            // Each mention is the longer name only, however often it comes.
            (
                "South Sudan said so. South Sudan is calm.",
                "en",
                vec!["ss"],
            ),
            (
                "Le Soudan du Sud a dit. Le Soudan du Sud est calme.",
                "fr",
                vec!["ss"],
            ),
            (
                "Equatorial Guinea said so. Equatorial Guinea is calm.",
                "en",
                vec!["gq"],
            ),
            (
                "American Samoa said so. American Samoa is calm.",
                "en",
                vec!["as"],
            ),
            (
                "Papua New Guinea said so. Papua New Guinea is calm.",
                "en",
                vec!["pg"],
            ),
            // The shorter name on its own still counts.
            (
                "Sudan and South Sudan met. Sudan agreed.",
                "en",
                vec!["sd", "ss"],
            ),
            // Northern Ireland is one of the United Kingdom's four countries, which name it.
            (
                "Northern Ireland voted. Northern Ireland is calm.",
                "en",
                vec!["gb"],
            ),
            // Regions whose names hold a country's claim their words and vote for nothing.
            (
                "Floods hit New South Wales. Nouvelle-Galles-du-Sud.",
                "en",
                vec![],
            ),
            (
                "La Colombie-Britannique brûle. En Colombie-Britannique, la pluie.",
                "fr",
                vec![],
            ),
            (
                "Rhode Island voted. Rhode Island officials agreed.",
                "en",
                vec![],
            ),
            // The capital of Trinidad and Tobago is not Spain.
            ("Port d'Espagne est calme.", "fr", vec!["tt"]),
            // "New" and its translations start a longer name that is no country's.
            (
                "New Mexico voted. New Mexico lawmakers and New Mexican voters agreed.",
                "en",
                vec![],
            ),
            (
                "Le Nouveau-Mexique a voté. Au Nouveau-Mexique, la loi passe.",
                "fr",
                vec![],
            ),
            (
                "Nuevo México votó. En Nuevo México, la ley pasa.",
                "es",
                vec![],
            ),
            (
                "Residents of New Jersey left. New Jersey is calm.",
                "en",
                vec![],
            ),
            (
                "New Zealand voted. La Nouvelle-Zélande aussi.",
                "en",
                vec!["nz"],
            ),
            (
                "Mexico voted; the new Mexico is calm. Renew Mexico!",
                "en",
                vec!["mx"],
            ),
        ] {
            assert_eq!(rules(body, lang), want, "{body}");
        }
    }

    #[test]
    fn a_region_neither_adds_to_nor_takes_from_a_voting_form_of_its_country() {
        let country = |weight| Target::Country {
            idx: 7,
            weight,
            case: Case::Capital,
            place: true,
            langs: 0,
            shadow: NO_SHADOW,
        };
        let weights = |set: &PatternSet| -> Vec<f32> {
            set.targets[0]
                .iter()
                .map(|t| match t {
                    Target::Country { weight, .. } => *weight,
                    _ => f32::NAN,
                })
                .collect()
        };
        // In either order, the capital's vote stays whole.
        for order in [[1.0, 0.0], [0.0, 1.0]] {
            let mut set = PatternSet::default();
            for w in order {
                set.add("port d espagne".into(), country(w));
            }
            assert_eq!(weights(&set), vec![1.0], "{order:?}");
        }
        // Two forms that vote: the cautious weight wins, as before.
        let mut set = PatternSet::default();
        set.add("jordan".into(), country(1.0));
        set.add("jordan".into(), country(0.5));
        assert_eq!(weights(&set), vec![0.5]);
    }

    #[test]
    fn for_each_longest_keeps_only_spans_no_longer_span_covers() {
        // (first word, last word) in the order the phrase index reports them.
        let spans = vec![
            (0, 0, 'a'), // inside (0, 2)
            (0, 2, 'b'),
            (1, 2, 'c'), // inside (0, 2)
            (2, 2, 'd'), // inside (0, 2)
            (2, 3, 'e'), // overlaps (0, 2) without being inside it
            (5, 5, 'f'),
            (5, 5, 'g'), // a second name with the same words
            (6, 7, 'h'),
            (7, 7, 'i'), // inside (6, 7)
        ];
        let mut kept = Vec::new();
        for_each_longest(&spans, |x| kept.push(x.2));
        assert_eq!(kept, vec!['b', 'e', 'f', 'g', 'h']);
        for_each_longest(&[] as &[(u32, u32, ())], |_| panic!("no spans, no calls"));
    }

    #[test]
    fn city_names_that_are_common_words_are_not_places() {
        let m = with_gazetteer(vec![rule(
            "any",
            "country:KR OR country:BR OR country:AE OR country:IR OR country:CA OR country:JO",
        )]);
        // Sentence-initial capitals of frequent words that GeoNames also lists as city
        // names (scripts/gen_gazetteer.py, WORD_CITIES): Seoul's "Seul", Pará's "Para",
        // Dubai's "Dabei", Rasht's "Rest"; and London, Ontario's Cyrillic "Лондон", which
        // read as "london" made London Canadian; Philadelphia, an old name of Amman, made
        // Philadelphia Jordanian.
        for (lang, text) in [
            ("fr", "Seul le président a parlé."),
            ("es", "Para el gobierno, la ley es clara."),
            ("de", "Dabei geht es um viel Geld."),
            ("en", "Rest of the world: quiet."),
            ("en", "Talks in London ended."),
            ("en", "Talks in Philadelphia ended."),
        ] {
            let mut a = art("", text);
            a.language = Some(lang.into());
            let r = m.explain(&a);
            assert!(r.rules.is_empty(), "{text}: {:?}", r.countries);
        }
        let london = with_gazetteer(vec![rule("gb", "country:GB")]);
        assert_eq!(
            london.explain(&art("", "Talks in London ended.")).rules,
            vec!["gb"]
        );
    }

    #[test]
    fn demonyms_listed_only_with_a_capital_need_one() {
        let m = with_gazetteer(vec![rule("pl", "country:PL"), rule("ru", "country:RU")]);
        let rules = |text: &str| m.explain(&art("", text)).rules;
        assert!(rules("a bottle of nail polish").is_empty());
        assert_eq!(rules("Polish troops arrived"), vec!["pl"]);
        // A demonym before a title is not part of a place's name.
        assert_eq!(rules("Polish Prime Minister Donald Tusk"), vec!["pl"]);
        assert_eq!(rules("Russian President Vladimir Putin"), vec!["ru"]);
        // Listed in lower case too (French russe), so it counts in lower case.
        assert_eq!(rules("le gouvernement russe"), vec!["ru"]);
    }

    #[test]
    fn evidence_quotes_the_original() {
        let m = Matcher::new(
            vec![rule("kz", "country:KZ")],
            people(),
            &MatcherOptions::default(),
        )
        .unwrap();
        let r = m.explain(&art("", "Le président Tokaïev à Almaty"));
        assert!(
            r.evidence
                .iter()
                .any(|e| e.surface == "Tokaïev" && e.what == "entity:tokayev"),
            "{:?}",
            r.evidence
        );
        assert!(r
            .evidence
            .iter()
            .any(|e| e.surface == "Almaty" && e.what == "country:KZ"));
    }

    #[test]
    fn countries_and_entities_in_five_languages() {
        let m = Matcher::new(
            vec![rule("kz", "country:KZ")],
            people(),
            &MatcherOptions::default(),
        )
        .unwrap();
        // (language, text, expected country, expected entity)
        let positives = [
            (
                "fr",
                "Les Kazakhs manifestent à Almaty contre Tokaïev",
                "KZ",
                Some("tokayev"),
            ),
            (
                "en",
                "Kazakh president Tokayev asks Russia for help",
                "KZ",
                Some("tokayev"),
            ),
            (
                "de",
                "Kasachstans Präsident Tokajew bittet Moskau um Hilfe; Proteste in Almaty",
                "KZ",
                Some("tokayev"),
            ),
            (
                "es",
                "Protestas en Kazajistán: el presidente Tokáyev pide ayuda",
                "KZ",
                Some("tokayev"),
            ),
            (
                "ru",
                "Президент Казахстана Токаев обратился к ОДКБ; протесты в Алматы",
                "KZ",
                Some("tokayev"),
            ),
            ("fr", "Poutine reçoit Zelensky", "", Some("putin")),
            ("de", "Selenskyj und Putin", "", Some("putin")),
            ("es", "Zelenski habla con Putin", "", Some("zelensky")),
            ("ru", "Путин и Зеленский", "", Some("zelensky")),
            ("en", "Talks in Ukraine's capital Kyiv", "UA", None),
            ("de", "Regierung in Berlin", "DE", None),
            ("es", "El gobierno de España", "ES", None),
            ("ru", "Правительство России", "RU", None),
        ];
        for (lang, text, country, entity) in positives {
            let r = m.explain(&art("", text));
            if !country.is_empty() {
                assert!(
                    r.countries.iter().any(|c| c == country),
                    "{lang}: {text:?} -> {:?}",
                    r.countries
                );
            }
            if let Some(e) = entity {
                assert!(
                    r.entities.iter().any(|x| x == e),
                    "{lang}: {text:?} -> {:?}",
                    r.entities
                );
            }
        }
        let negatives = [
            ("en", "She passed the oral exam"),
            ("en", "Roast the turkey for three hours"),
            ("en", "Michael Jordan scored forty points"),
            ("fr", "Une poutine au fromage, spécialité du Québec"),
            ("fr", "Le macronisme en question"),
            ("de", "Die Kasse war leer"),
            ("es", "La china de la vajilla"),
        ];
        for (lang, text) in negatives {
            let r = m.explain(&art("", text));
            assert!(
                r.countries.is_empty() && r.entities.is_empty(),
                "{lang}: {text:?} -> {:?} {:?}",
                r.countries,
                r.entities
            );
        }
    }
}
