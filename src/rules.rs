//! Watch rules (`DIR/rules/*.toml`) and named entities (`DIR/entities/*.toml`).
//!
//! A rule matches an article when its *positive shorthands* match (any keyword, any
//! country, any entity — they are alternatives), its `query` matches, and its filters hold
//! (`languages`, `sources`, none of `exclude`). Shorthands and query can be used alone or
//! together; together, both must match. Every rule compiles to one [`Query`] tree, which is
//! what the matcher evaluates.
//!
//! Query syntax (case of operators matters, as in Meltwater/Brandwatch):
//!
//! ```text
//! query   := or
//! or      := and ("OR" and)*
//! and     := unary (["AND"] unary)*          -- juxtaposition means AND
//! unary   := "NOT" unary | "-" unary | primary
//! primary := "(" query ")" | term ["NEAR/" n term]
//! term    := [field ":"] (word | "quoted phrase")
//! field   := title | body | country | entity | lang | source
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::ConfigError;
use crate::detect::DetectorOverrides;

/// Where in an article a text term must be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Any,
    Title,
    Body,
}

/// A compiled boolean query over one article.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Query {
    /// A word or phrase, as written by the user (normalized by the matcher).
    Text {
        text: String,
        field: Field,
    },
    /// Two terms within `distance` words of each other, either order.
    Near {
        a: String,
        b: String,
        distance: u32,
        field: Field,
    },
    Country(String),
    Entity(String),
    Lang(String),
    Source(String),
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
}

impl Query {
    /// Calls `f` on every leaf.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Query)) {
        match self {
            Query::And(qs) | Query::Or(qs) => qs.iter().for_each(|q| q.visit(f)),
            Query::Not(q) => q.visit(f),
            leaf => f(leaf),
        }
    }

    /// Whether the query can match an article that contains none of its positive leaves
    /// (e.g. `NOT x`, `lang:fr`). Such rules must be evaluated for every article.
    pub fn matches_without_hits(&self) -> bool {
        match self {
            Query::Text { .. } | Query::Near { .. } | Query::Country(_) | Query::Entity(_) => false,
            Query::Lang(_) | Query::Source(_) => true,
            Query::Not(_) => true,
            Query::And(qs) => qs.iter().all(|q| q.matches_without_hits()),
            Query::Or(qs) => qs.iter().any(|q| q.matches_without_hits()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    id: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    entities: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    languages: Vec<Spanned<String>>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    query: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    spike: Option<DetectorOverrides>,
    #[serde(default)]
    templates: Option<crate::sink::render::Templates>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleDef>>,
}

/// A validated watch rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// Stable identity; the key of all per-rule state (counts, baseline, alerts).
    pub id: String,
    pub name: String,
    pub query: Query,
    /// Channels to notify; empty means `[alerts] default_notify`.
    pub notify: Vec<String>,
    /// Per-rule detector settings over the service defaults.
    pub spike: DetectorOverrides,
    /// Alert text overrides for this rule.
    pub templates: crate::sink::render::Templates,
    /// Where the rule was defined, for messages.
    pub file: PathBuf,
    pub line: usize,
    /// A hash of the definition, so reloads can tell changed rules from unchanged ones.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Person,
    Org,
    Place,
    #[default]
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityDef {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    kind: EntityKind,
    #[serde(default)]
    aliases: Vec<String>,
    /// Variants to never generate or match (e.g. a homonym).
    #[serde(default)]
    not: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitiesFile {
    #[serde(default)]
    entity: Vec<EntityDef>,
}

/// A named entity: a person, organisation or place with its spellings.
#[derive(Debug, Clone, Serialize)]
pub struct Entity {
    pub id: String,
    pub name: String,
    pub kind: EntityKind,
    pub aliases: Vec<String>,
    pub not: Vec<String>,
}

/// All rules and entities of a config directory, validated together.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub entities: Vec<Entity>,
}

impl RuleSet {
    /// Loads `dir/rules/*.toml` and `dir/entities/*.toml`. Returns every error found, each
    /// naming its file and line, so `vigie check` can report them all at once.
    pub fn load(dir: &Path, known_channels: &[String]) -> Result<RuleSet, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut entities = Vec::new();
        let mut entity_ids: HashMap<String, PathBuf> = HashMap::new();
        for file in toml_files(&dir.join("entities"), &mut errors) {
            let Some(text) = read(&file, &mut errors) else {
                continue;
            };
            match toml::from_str::<EntitiesFile>(&text) {
                Err(e) => errors.push(ConfigError::from_toml(&file, &text, &e)),
                Ok(parsed) => {
                    for def in parsed.entity {
                        let id = def.id.get_ref().trim().to_string();
                        if !valid_id(&id) {
                            errors.push(ConfigError::at_offset(
                                &file,
                                &text,
                                def.id.span().start,
                                format!(
                                    "invalid entity id `{id}`: use letters, digits, `-` and `_`"
                                ),
                            ));
                            continue;
                        }
                        if let Some(prev) = entity_ids.insert(id.clone(), file.clone()) {
                            errors.push(ConfigError::at_offset(
                                &file,
                                &text,
                                def.id.span().start,
                                format!("entity `{id}` is already defined in {}", prev.display()),
                            ));
                            continue;
                        }
                        entities.push(Entity {
                            id,
                            name: def.name,
                            kind: def.kind,
                            aliases: def.aliases,
                            not: def.not,
                        });
                    }
                }
            }
        }
        let mut rules = Vec::new();
        let mut rule_ids: HashMap<String, PathBuf> = HashMap::new();
        for file in toml_files(&dir.join("rules"), &mut errors) {
            let Some(text) = read(&file, &mut errors) else {
                continue;
            };
            let parsed = match toml::from_str::<RulesFile>(&text) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(ConfigError::from_toml(&file, &text, &e));
                    continue;
                }
            };
            // Rule lines, counted incrementally: spans come in file order, and a line count
            // from the top for every rule made loading 10,000 rules quadratic (2.6 s).
            let (mut counted_to, mut line) = (0usize, 1usize);
            for spanned in parsed.rule {
                let span = spanned.span();
                if span.start >= counted_to {
                    line += text.as_bytes()[counted_to..span.start]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count();
                } else {
                    line = crate::config::line_col(&text, span.start).0;
                }
                counted_to = span.start;
                let def = spanned.into_inner();
                let enabled = def.enabled;
                let at = (span.start, line);
                match compile_rule(&file, &text, at, def, &entity_ids, known_channels) {
                    Ok(_) if !enabled => {} // validated, then left out
                    Ok(rule) => {
                        if let Some(prev) = rule_ids.insert(rule.id.clone(), file.clone()) {
                            errors.push(ConfigError {
                                file: Some(file.clone()),
                                line: Some(rule.line),
                                column: None,
                                message: format!(
                                    "rule `{}` is already defined in {}",
                                    rule.id,
                                    prev.display()
                                ),
                            });
                        } else {
                            rules.push(rule);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            Ok(RuleSet { rules, entities })
        } else {
            Err(errors)
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn toml_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(ConfigError::in_file(dir, format!("cannot list: {e}")));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn read(file: &Path, errors: &mut Vec<ConfigError>) -> Option<String> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            errors.push(ConfigError::in_file(file, format!("cannot read: {e}")));
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            // Point at the first bad byte, as for any other error in the file (found by
            // the rule_file fuzz target: the error used to name the file only).
            let good = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let prefix = String::from_utf8_lossy(&bytes[..good]);
            errors.push(ConfigError::at_offset(
                file,
                &prefix,
                good,
                format!("not valid UTF-8 (byte 0x{:02x})", bytes[good]),
            ));
            None
        }
    }
}

/// `at`: the byte offset where the rule starts and its line.
fn compile_rule(
    file: &Path,
    text: &str,
    (at, line): (usize, usize),
    def: RuleDef,
    entity_ids: &HashMap<String, PathBuf>,
    known_channels: &[String],
) -> Result<Rule, ConfigError> {
    let err_at = |offset: usize, m: String| ConfigError::at_offset(file, text, offset, m);
    let id = def.id.get_ref().trim().to_string();
    if !valid_id(&id) {
        return Err(err_at(
            def.id.span().start,
            format!("invalid rule id `{id}`: use letters, digits, `-`, `_` and `.`"),
        ));
    }
    let mut positive = Vec::new();
    for k in &def.keywords {
        if crate::normalize::normalize_str(k).is_empty() {
            return Err(err_at(
                at,
                format!("rule `{id}`: keyword {k:?} has no letters or digits"),
            ));
        }
        positive.push(Query::Text {
            text: k.clone(),
            field: Field::Any,
        });
    }
    for c in &def.countries {
        let code = c.get_ref().trim().to_ascii_uppercase();
        if !crate::gazetteer::is_country_code(&code) {
            return Err(err_at(
                c.span().start,
                format!(
                    "rule `{id}`: unknown country code `{}` (ISO 3166-1 alpha-2 expected)",
                    c.get_ref()
                ),
            ));
        }
        positive.push(Query::Country(code));
    }
    for e in &def.entities {
        if !entity_ids.contains_key(e.get_ref()) {
            return Err(err_at(
                e.span().start,
                format!(
                    "rule `{id}`: unknown entity `{}`{}",
                    e.get_ref(),
                    suggest(e.get_ref(), entity_ids.keys())
                ),
            ));
        }
        positive.push(Query::Entity(e.get_ref().clone()));
    }
    let mut all = Vec::new();
    if !positive.is_empty() {
        all.push(if positive.len() == 1 {
            positive.pop().unwrap()
        } else {
            Query::Or(positive)
        });
    }
    if let Some(q) = &def.query {
        // +1 skips the opening quote of the TOML string.
        let base = q.span().start + 1;
        let parsed = parse_query(q.get_ref()).map_err(|e| {
            err_at(
                base + e.offset,
                format!("rule `{id}`: query: {}", e.message),
            )
        })?;
        let mut bad_entity = None;
        let mut bad_country = None;
        parsed.visit(&mut |leaf| match leaf {
            Query::Entity(e) if !entity_ids.contains_key(e) => bad_entity = Some(e.clone()),
            Query::Country(c) if !crate::gazetteer::is_country_code(c) => {
                bad_country = Some(c.clone())
            }
            _ => {}
        });
        if let Some(e) = bad_entity {
            return Err(err_at(
                base,
                format!(
                    "rule `{id}`: query names unknown entity `{e}`{}",
                    suggest(&e, entity_ids.keys())
                ),
            ));
        }
        if let Some(c) = bad_country {
            return Err(err_at(
                base,
                format!("rule `{id}`: query names unknown country code `{c}`"),
            ));
        }
        all.push(parsed);
    }
    if all.is_empty() {
        return Err(err_at(
            at,
            format!("rule `{id}` matches nothing: give keywords, countries, entities or a query"),
        ));
    }
    if !def.languages.is_empty() {
        let mut langs = Vec::with_capacity(def.languages.len());
        for l in &def.languages {
            let Some(code) = crate::article::language_code(l.get_ref()) else {
                return Err(err_at(
                    l.span().start,
                    format!(
                        "rule `{id}`: `{}` is not a language code (ISO 639-1 expected, e.g. `fr`)",
                        l.get_ref()
                    ),
                ));
            };
            langs.push(Query::Lang(code.into_owned()));
        }
        all.push(Query::Or(langs));
    }
    if !def.sources.is_empty() {
        all.push(Query::Or(
            def.sources
                .iter()
                .map(|s| Query::Source(s.trim().to_ascii_lowercase()))
                .collect(),
        ));
    }
    if !def.exclude.is_empty() {
        let ex = def
            .exclude
            .iter()
            .map(|k| Query::Text {
                text: k.clone(),
                field: Field::Any,
            })
            .collect();
        all.push(Query::Not(Box::new(Query::Or(ex))));
    }
    for n in &def.notify {
        if !known_channels.iter().any(|c| c == n.get_ref()) {
            return Err(err_at(
                n.span().start,
                format!(
                    "rule `{id}`: unknown channel `{}`{}",
                    n.get_ref(),
                    suggest(n.get_ref(), known_channels.iter())
                ),
            ));
        }
    }
    let query = if all.len() == 1 {
        all.pop().unwrap()
    } else {
        Query::And(all)
    };
    let spike = def.spike.clone().unwrap_or_default();
    let templates = def.templates.clone().unwrap_or_default();
    templates
        .validate()
        .map_err(|e| err_at(at, format!("rule `{id}`: {e}")))?;
    // What the rule means, not where it sits in its file: moving or reformatting a rule, or
    // editing its neighbours, must not reset its counts and baseline.
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{query:?}|{spike:?}").hash(&mut h);
        h.finish()
    };
    Ok(Rule {
        name: def.name.clone().unwrap_or_else(|| id.clone()),
        id,
        query,
        notify: def.notify.iter().map(|n| n.get_ref().clone()).collect(),
        spike,
        templates,
        file: file.to_path_buf(),
        line,
        fingerprint,
    })
}

fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a String>) -> String {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// A query syntax error at a byte offset of the query string.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    pub offset: usize,
    pub message: String,
}

/// Longest query accepted, and deepest nesting: bounds parse time and evaluation stack.
const MAX_QUERY_LEN: usize = 64 * 1024;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Near(u32),
    Word(String),
    Phrase(String),
    Field(String),
}

fn tokenize(q: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let mut out = Vec::new();
    let bytes = q.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match c {
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b'-' if i + 1 < bytes.len()
                && !bytes[i + 1].is_ascii_whitespace()
                && out.last().is_none_or(|(_, t)| !matches!(t, Tok::Field(_))) =>
            {
                out.push((start, Tok::Not));
                i += 1;
            }
            b'"' => {
                let end = q[i + 1..].find('"').ok_or(QueryError {
                    offset: start,
                    message: "unclosed quote".into(),
                })?;
                out.push((start, Tok::Phrase(q[i + 1..i + 1 + end].to_string())));
                i += end + 2;
            }
            _ => {
                let mut j = i;
                while j < bytes.len()
                    && !bytes[j].is_ascii_whitespace()
                    && !matches!(bytes[j], b'(' | b')' | b'"')
                {
                    if bytes[j] == b':' {
                        break;
                    }
                    j += 1;
                }
                let word = &q[i..j];
                if j < bytes.len() && bytes[j] == b':' {
                    out.push((start, Tok::Field(word.to_ascii_lowercase())));
                    i = j + 1;
                    continue;
                }
                i = j;
                let tok = match word {
                    "AND" => Tok::And,
                    "OR" => Tok::Or,
                    "NOT" => Tok::Not,
                    w if w.starts_with("NEAR/") => {
                        let n = w[5..].parse::<u32>().map_err(|_| QueryError {
                            offset: start,
                            message: format!("`{w}`: NEAR needs a distance, like NEAR/5"),
                        })?;
                        if n == 0 || n > 1000 {
                            return Err(QueryError {
                                offset: start,
                                message: "NEAR distance must be between 1 and 1000".into(),
                            });
                        }
                        Tok::Near(n)
                    }
                    w => Tok::Word(w.to_string()),
                };
                out.push((start, tok));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(o, _)| *o)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, QueryError> {
        Err(QueryError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn or(&mut self, depth: usize) -> Result<Query, QueryError> {
        if depth > MAX_DEPTH {
            return self.err(format!("query nested deeper than {MAX_DEPTH} levels"));
        }
        let mut parts = vec![self.and(depth)?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Query, QueryError> {
        let mut parts = vec![self.unary(depth)?];
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    parts.push(self.unary(depth)?);
                }
                Some(Tok::Or) | Some(Tok::RParen) | None => break,
                Some(_) => parts.push(self.unary(depth)?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap()
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Query, QueryError> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            if depth > MAX_DEPTH {
                return self.err("too many NOTs in a row");
            }
            return Ok(Query::Not(Box::new(self.unary(depth + 1)?)));
        }
        self.primary(depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Query, QueryError> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let q = self.or(depth + 1)?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err("expected `)`");
                }
                self.pos += 1;
                Ok(q)
            }
            Some(Tok::RParen) => self.err("unexpected `)`"),
            Some(Tok::And) | Some(Tok::Or) => self.err("operator without a left-hand term"),
            Some(Tok::Near(_)) => self.err("NEAR without a left-hand term"),
            None => self.err("query ends where a term was expected"),
            Some(_) => {
                let (field, text, at) = self.term()?;
                if let Some(Tok::Near(n)) = self.peek().cloned() {
                    self.pos += 1;
                    let (field2, text2, at2) = self.term()?;
                    // An unprefixed right side searches the same field as the left.
                    let field2 = field2.or_else(|| field.clone());
                    let (Some(f1), Some(f2)) = (text_field(&field), text_field(&field2)) else {
                        return Err(QueryError {
                            offset: at,
                            message: "NEAR works on words and phrases only".into(),
                        });
                    };
                    if f1 != f2 {
                        return Err(QueryError {
                            offset: at2,
                            message: "both sides of NEAR must search the same field".into(),
                        });
                    }
                    return Ok(Query::Near {
                        a: text,
                        b: text2,
                        distance: n,
                        field: f1,
                    });
                }
                leaf(field.as_deref(), text, at)
            }
        }
    }

    /// Reads `[field:] word|phrase`.
    fn term(&mut self) -> Result<(Option<String>, String, usize), QueryError> {
        let at = self.offset();
        let mut field = None;
        if let Some(Tok::Field(f)) = self.peek().cloned() {
            field = Some(f);
            self.pos += 1;
        }
        match self.peek().cloned() {
            Some(Tok::Word(w)) | Some(Tok::Phrase(w)) => {
                self.pos += 1;
                if w.trim().is_empty() {
                    return Err(QueryError {
                        offset: at,
                        message: "empty phrase".into(),
                    });
                }
                Ok((field, w, at))
            }
            _ => self.err("expected a word or a \"phrase\""),
        }
    }
}

fn text_field(field: &Option<String>) -> Option<Field> {
    match field.as_deref() {
        None => Some(Field::Any),
        Some("title") => Some(Field::Title),
        Some("body") | Some("text") => Some(Field::Body),
        _ => None,
    }
}

fn leaf(field: Option<&str>, text: String, at: usize) -> Result<Query, QueryError> {
    let q = match field {
        None => Query::Text {
            text,
            field: Field::Any,
        },
        Some("title") => Query::Text {
            text,
            field: Field::Title,
        },
        Some("body") | Some("text") => Query::Text {
            text,
            field: Field::Body,
        },
        Some("country") => Query::Country(text.trim().to_ascii_uppercase()),
        Some("entity") => Query::Entity(text.trim().to_string()),
        Some("lang") | Some("language") => match crate::article::language_code(&text) {
            Some(code) => Query::Lang(code.into_owned()),
            None => {
                return Err(QueryError {
                    offset: at,
                    message: format!(
                        "`{}` is not a language code (ISO 639-1 expected, e.g. `lang:fr`)",
                        text.trim()
                    ),
                })
            }
        },
        Some("source") => Query::Source(text.trim().to_ascii_lowercase()),
        Some(other) => {
            return Err(QueryError {
                offset: at,
                message: format!(
                    "unknown field `{other}:` (title, body, country, entity, lang, source)"
                ),
            })
        }
    };
    if let Query::Text { text, .. } = &q {
        if crate::normalize::normalize_str(text).is_empty() {
            return Err(QueryError {
                offset: at,
                message: format!("term {text:?} has no letters or digits"),
            });
        }
    }
    Ok(q)
}

/// Parses a boolean query string.
pub fn parse_query(q: &str) -> Result<Query, QueryError> {
    if q.len() > MAX_QUERY_LEN {
        return Err(QueryError {
            offset: 0,
            message: format!("query longer than {MAX_QUERY_LEN} bytes"),
        });
    }
    let toks = tokenize(q)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: q.len(),
    };
    let query = p.or(0)?;
    if p.pos < p.toks.len() {
        return p.err("unexpected text after the end of the query");
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operators_fields_and_near() {
        let q = parse_query(r#"(country:KZ OR entity:tokayev) AND NOT "football""#).unwrap();
        assert_eq!(
            q,
            Query::And(vec![
                Query::Or(vec![
                    Query::Country("KZ".into()),
                    Query::Entity("tokayev".into())
                ]),
                Query::Not(Box::new(Query::Text {
                    text: "football".into(),
                    field: Field::Any
                })),
            ])
        );
        let q = parse_query("title:almaty NEAR/3 protests lang:fr").unwrap();
        assert!(
            matches!(&q, Query::And(v) if matches!(v[0], Query::Near { distance: 3, field: Field::Title, .. })),
            "{q:?}"
        );
    }

    #[test]
    fn query_errors_point_at_the_problem() {
        let e = parse_query("kazakhstan AND (almaty").unwrap_err();
        assert_eq!(e.offset, 22);
        let e = parse_query("foo:bar").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("unknown field"));
        assert!(parse_query("\"unclosed").is_err());
        assert!(parse_query("OR x").is_err());
        let deep = format!("{}x{}", "(".repeat(500), ")".repeat(500));
        assert!(parse_query(&deep).unwrap_err().message.contains("deeper"));
    }

    fn setup(rules: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("rules")).unwrap();
        std::fs::create_dir_all(d.path().join("entities")).unwrap();
        std::fs::write(
            d.path().join("entities/people.toml"),
            "[[entity]]\nid = \"tokayev\"\nname = \"Kassym-Jomart Tokayev\"\nkind = \"person\"\n",
        )
        .unwrap();
        std::fs::write(d.path().join("rules/r.toml"), rules).unwrap();
        d
    }

    #[test]
    fn loads_minimal_rule() {
        let d =
            setup("[[rule]]\nid = \"kazakhstan\"\nname = \"Kazakhstan\"\ncountries = [\"KZ\"]\n");
        let set = RuleSet::load(d.path(), &["log".into()]).unwrap();
        assert_eq!(set.rules[0].query, Query::Country("KZ".into()));
        assert_eq!(set.entities[0].id, "tokayev");
    }

    #[test]
    fn unknown_key_is_located_with_hint() {
        let d = setup("[[rule]]\nid = \"k\"\nkeywrods = [\"a\"]\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert_eq!(errs[0].line, Some(3));
        assert!(errs[0].to_string().contains("r.toml:3"), "{}", errs[0]);
        assert!(
            errs[0].message.contains("did you mean `keywords`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn semantic_errors_are_located() {
        let d = setup("[[rule]]\nid = \"k\"\n\nentities = [\"tokaev\"]\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert_eq!(errs[0].line, Some(4), "{}", errs[0]);
        assert!(
            errs[0].message.contains("did you mean `tokayev`"),
            "{}",
            errs[0]
        );
        let d = setup("[[rule]]\nid = \"k\"\nquery = 'a AND (b'\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert_eq!(
            (errs[0].line, errs[0].column),
            (Some(3), Some(18)),
            "{}",
            errs[0]
        );
        let d = setup("[[rule]]\nid = \"k\"\ncountries = [\"XX\"]\n");
        assert!(RuleSet::load(d.path(), &[]).is_err());
        let d = setup("[[rule]]\nid = \"k\"\n[[rule]]\nid = \"k\"\nkeywords=[\"a\"]\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("matches nothing")));
    }

    #[test]
    fn languages_are_read_as_articles_are_and_a_non_code_is_located() {
        let d = setup(
            "[[rule]]\nid = \"k\"\nkeywords = [\"a\"]\nlanguages = [\"fr-FR\", \"GER\"]\n\
             [[rule]]\nid = \"q\"\nquery = 'a AND lang:fra'\n",
        );
        let set = RuleSet::load(d.path(), &[]).unwrap();
        let langs = |q: &Query| {
            let mut v = vec![];
            q.visit(&mut |l| {
                if let Query::Lang(x) = l {
                    v.push(x.clone())
                }
            });
            v
        };
        assert_eq!(langs(&set.rules[0].query), ["fr", "de"]);
        assert_eq!(langs(&set.rules[1].query), ["fr"]);

        let d =
            setup("[[rule]]\nid = \"k\"\nkeywords = [\"a\"]\nlanguages = [\"fr\", \"french\"]\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert_eq!(errs[0].line, Some(4), "{}", errs[0]);
        assert!(
            errs[0].message.contains("`french` is not a language code"),
            "{}",
            errs[0]
        );
        let d = setup("[[rule]]\nid = \"k\"\nquery = 'a AND lang:english'\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert_eq!(
            (errs[0].line, errs[0].column),
            (Some(3), Some(16)),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let d = setup("[[rule]]\nid = \"k\"\nkeywords = [\"a\"\n");
        let errs = RuleSet::load(d.path(), &[]).unwrap_err();
        assert!(errs[0].line.is_some(), "{}", errs[0]);
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn editing_a_neighbour_keeps_a_rules_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("rules")).unwrap();
        let write = |b: &str| {
            std::fs::write(d.path().join("rules/r.toml"), format!("[[rule]]\nid = \"b\"\nkeywords = [\"{b}\"]\n\n[[rule]]\nid = \"a\"\ncountries = [\"KZ\"]\n")).unwrap()
        };
        write("football");
        let before = RuleSet::load(d.path(), &[]).unwrap();
        write("rugby et handball");
        let after = RuleSet::load(d.path(), &[]).unwrap();
        assert_eq!(before.rules[1].fingerprint, after.rules[1].fingerprint);
        assert_ne!(before.rules[0].fingerprint, after.rules[0].fingerprint);
    }
}
