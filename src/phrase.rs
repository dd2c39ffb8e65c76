//! Whole-word phrase search over normalized text: tokenize once, look every word up.
//!
//! Every pattern the matcher searches for (rule keywords, entity spellings, the 35,000
//! gazetteer forms) is a phrase in [`crate::normalize`]'s alphabet: words of `[a-z0-9]`
//! joined by single spaces. Article text is in the same alphabet, so "the pattern occurs as
//! whole words" means exactly "a run of consecutive tokens equals the pattern's words".
//!
//! That lets us skip a byte automaton. The text is split into tokens once; each token is
//! looked up once among every word that appears in any pattern (hash tables keyed by
//! the word itself, packed into an integer when it is short); from a token that
//! starts some pattern, a trie keyed by word ids is walked over the following tokens, one
//! probe per word, reporting each pattern that ends on the way. This is the Lucene Monitor
//! / percolator idea applied to the surface forms themselves. The Aho-Corasick DFA it
//! replaces was 37–64 MiB for these pattern sets, walked byte by byte with a cache miss on
//! most transitions, and every hit then had to be checked for word boundaries; the index is
//! a few MiB, costs about one probe per word, and finds only whole words by construction.
//!
//! No crate serves this: aho-corasick and daachorse search bytes, not token sequences, and
//! the fst / trie crates answer questions about one key, not occurrences in a text. The
//! structure is three hash maps and two flat vectors, so it is written here.
//!
//! Results are the same as an overlapping search for every pattern followed by a check that
//! the hit starts and ends on a word boundary; `tests::same_as_brute_force` holds the two
//! side by side.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use crate::normalize::Normalized;

/// Id of a word of some pattern. Words of the text that no pattern contains have none.
type WordId = u32;
const NO_WORD: WordId = WordId::MAX;
/// Node of the word trie. Nodes `0..words` are the one-word prefixes (node id = word id),
/// so a token's word id is already its node; longer prefixes are numbered after them.
type NodeId = u32;
const NO_PATTERN: u32 = u32::MAX;

/// One occurrence: pattern index, byte range in the searched text and the words it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub pattern: usize,
    pub start: usize,
    pub end: usize,
    /// Index of the first word, in [`Normalized::words`].
    pub first_word: usize,
    /// Index of the last word (equal to `first_word` for a one-word pattern).
    pub last_word: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PhraseError {
    #[error("pattern {0:?} is not normalized text (words of [a-z0-9] joined by single spaces)")]
    NotNormalized(String),
    #[error("pattern {0:?} is given twice")]
    Duplicate(String),
}

/// An immutable index of distinct phrases. Pattern indices are positions in the slice
/// given to [`PhraseIndex::new`].
#[derive(Debug, Default)]
pub struct PhraseIndex {
    /// Words of up to 8 bytes (most of a news text's words), packed into the key itself:
    /// a probe compares two integers instead of following a pointer to compare bytes. The
    /// packing is unambiguous because words never contain a zero byte. Fx hashing: keys are
    /// short and the feed cannot choose our table's layout in a way that matters (the
    /// matcher is rebuilt on every rule change), so HashDoS resistance buys nothing here.
    short_words: HashMap<u64, WordId, FxBuildHasher>,
    /// Words of 9 to 16 bytes, packed the same way. Apart from the short ones because
    /// 128-bit arithmetic costs several instructions per operation and a `u128` entry
    /// takes twice the table space (it is 16-byte aligned).
    mid_words: HashMap<u128, WordId, FxBuildHasher>,
    /// The rare longer words.
    long_words: HashMap<Box<[u8]>, WordId, FxBuildHasher>,
    /// Child of a trie node by the next word: key `node << 32 | word`.
    children: HashMap<u64, NodeId, FxBuildHasher>,
    /// Per node, the pattern that ends there, or `NO_PATTERN`.
    node_pattern: Vec<u32>,
    /// Per node, whether any longer pattern continues it (skips the child probe for the
    /// common case of a one-word form).
    node_continues: Vec<bool>,
    patterns: usize,
}

/// How a word is looked up: packed into an integer when it is short enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Short(u64),
    Mid(u128),
    Long,
}

fn pack(word: &[u8]) -> Key {
    if word.len() <= 8 {
        let mut buf = [0u8; 8];
        buf[..word.len()].copy_from_slice(word);
        Key::Short(u64::from_le_bytes(buf))
    } else if word.len() <= 16 {
        let mut buf = [0u8; 16];
        buf[..word.len()].copy_from_slice(word);
        Key::Mid(u128::from_le_bytes(buf))
    } else {
        Key::Long
    }
}

/// `text[s..e]` packed into a `u64` when it is at most eight bytes (`None` otherwise): one
/// 8-byte load and a mask when the text goes on far enough, a copy for the last words.
/// Also the story fingerprint's word hash (`engine::simhash`).
pub(crate) fn pack_short_at(text: &[u8], s: usize, e: usize) -> Option<u64> {
    let len = e - s;
    if len > 8 {
        return None;
    }
    if let Some(chunk) = text.get(s..s + 8) {
        let chunk = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        return Some(chunk & u64::MAX.checked_shr(8 * (8 - len) as u32).unwrap_or(0));
    }
    let mut buf = [0u8; 8];
    buf[..len].copy_from_slice(&text[s..e]);
    Some(u64::from_le_bytes(buf))
}

/// [`pack`] of `text[s..e]`, with one 8- or 16-byte load and a mask when the text goes
/// on far enough (it does for all but its last words): no variable-length copy per word.
fn pack_at(text: &[u8], s: usize, e: usize) -> Key {
    let len = e - s;
    if let Some(k) = pack_short_at(text, s, e) {
        return Key::Short(k);
    }
    if len <= 16 {
        if let Some(chunk) = text.get(s..s + 16) {
            let chunk = u128::from_le_bytes(chunk.try_into().expect("sixteen bytes"));
            let mask = u128::MAX.checked_shr(8 * (16 - len) as u32).unwrap_or(0);
            return Key::Mid(chunk & mask);
        }
    }
    pack(&text[s..e])
}

impl PhraseIndex {
    /// Builds the index. Every pattern must be non-empty normalized text, and distinct.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PhraseIndex, PhraseError> {
        let mut idx = PhraseIndex {
            patterns: patterns.len(),
            ..Default::default()
        };
        // First every word gets its id, so that one-word nodes can share the ids.
        let mut words = 0u32;
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if !is_normalized(pattern) {
                return Err(PhraseError::NotNormalized(pattern.to_string()));
            }
            for w in pattern.split(' ') {
                if idx.word(w.as_bytes()) == NO_WORD {
                    match pack(w.as_bytes()) {
                        Key::Short(k) => idx.short_words.insert(k, words),
                        Key::Mid(k) => idx.mid_words.insert(k, words),
                        Key::Long => idx.long_words.insert(w.as_bytes().into(), words),
                    };
                    words += 1;
                }
            }
        }
        idx.node_pattern = vec![NO_PATTERN; words as usize];
        idx.node_continues = vec![false; words as usize];
        for (p, pattern) in patterns.iter().enumerate() {
            let pattern = pattern.as_ref();
            let ws: Vec<WordId> = pattern.split(' ').map(|w| idx.word(w.as_bytes())).collect();
            let mut node = ws[0];
            for &w in &ws[1..] {
                idx.node_continues[node as usize] = true;
                let next = idx.node_pattern.len() as NodeId;
                node = *idx
                    .children
                    .entry(u64::from(node) << 32 | u64::from(w))
                    .or_insert(next);
                if node == next {
                    idx.node_pattern.push(NO_PATTERN);
                    idx.node_continues.push(false);
                }
            }
            let slot = &mut idx.node_pattern[node as usize];
            if *slot != NO_PATTERN {
                return Err(PhraseError::Duplicate(pattern.to_string()));
            }
            *slot = p as u32;
        }
        Ok(idx)
    }

    fn word(&self, w: &[u8]) -> WordId {
        self.word_at(w, 0, w.len())
    }

    /// The id of the word `text[s..e]`, or [`NO_WORD`]: the one lookup both the build and
    /// [`PhraseIndex::find`] use, so they cannot disagree on what a word is.
    fn word_at(&self, text: &[u8], s: usize, e: usize) -> WordId {
        let found = match pack_at(text, s, e) {
            Key::Short(k) => self.short_words.get(&k),
            Key::Mid(k) => self.mid_words.get(&k),
            Key::Long => self.long_words.get(&text[s..e]),
        };
        found.copied().unwrap_or(NO_WORD)
    }

    pub fn patterns(&self) -> usize {
        self.patterns
    }

    /// Approximate heap size in bytes, for logs and benchmarks.
    pub fn memory_usage(&self) -> usize {
        let long: usize = self.long_words.keys().map(|k| k.len() + 24).sum();
        long + self.short_words.capacity() * 13
            + self.mid_words.capacity() * 21
            + self.children.capacity() * 13
            + self.node_pattern.len() * 5
    }

    /// Calls `f` for every whole-word occurrence of every pattern in `norm`, in order of
    /// start, then of length.
    pub fn find(&self, norm: &Normalized, mut f: impl FnMut(Hit)) {
        if self.patterns == 0 || norm.words.is_empty() {
            return;
        }
        // (word id, start, end) per word: each word is looked up once, so a phrase walks the
        // trie by ids, not bytes.
        let text = norm.text.as_bytes();
        let tokens: Vec<(WordId, u32, u32)> = norm
            .word_ranges()
            .map(|(s, e)| (self.word_at(text, s, e), s as u32, e as u32))
            .collect();
        for (i, &(id, s, _)) in tokens.iter().enumerate() {
            if id == NO_WORD {
                continue;
            }
            let mut node = id;
            let mut last = i;
            loop {
                let p = self.node_pattern[node as usize];
                if p != NO_PATTERN {
                    f(Hit {
                        pattern: p as usize,
                        start: s as usize,
                        end: tokens[last].2 as usize,
                        first_word: i,
                        last_word: last,
                    });
                }
                if !self.node_continues[node as usize] {
                    break;
                }
                let Some(&(next, _, _)) = tokens.get(last + 1) else {
                    break;
                };
                if next == NO_WORD {
                    break;
                }
                match self
                    .children
                    .get(&(u64::from(node) << 32 | u64::from(next)))
                {
                    Some(&child) => {
                        node = child;
                        last += 1;
                    }
                    None => break,
                }
            }
        }
    }
}

/// Words of `[a-z0-9]` joined by single spaces, nothing else.
fn is_normalized(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ")
        && s.bytes()
            .all(|b| b == b' ' || b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{normalize, normalize_str};

    /// The definition the index must agree with: every overlapping occurrence of every
    /// pattern whose ends fall on word boundaries.
    fn brute_force(patterns: &[String], text: &str) -> Vec<Hit> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        for (p, pat) in patterns.iter().enumerate() {
            let mut from = 0;
            while let Some(at) = text[from..].find(pat.as_str()) {
                let s = from + at;
                let e = s + pat.len();
                if (s == 0 || bytes[s - 1] == b' ') && (e == bytes.len() || bytes[e] == b' ') {
                    let first_word = bytes[..s].iter().filter(|&&b| b == b' ').count();
                    out.push(Hit {
                        pattern: p,
                        start: s,
                        end: e,
                        first_word,
                        last_word: first_word + pat.matches(' ').count(),
                    });
                }
                from = s + 1;
            }
        }
        out.sort();
        out
    }

    fn search(idx: &PhraseIndex, text: &str) -> Vec<Hit> {
        let mut out = Vec::new();
        let norm = normalize(text);
        assert_eq!(norm.text, text, "test texts are normalized already");
        idx.find(&norm, |h| out.push(h));
        out.sort();
        out
    }

    #[test]
    fn whole_words_overlaps_and_repeats() {
        let long = "abcdefghijklmnopqrstuvwxyz";
        let patterns: Vec<String> = ["nur sultan", "sultan", "nur", "sultanat", "a a", "a", long]
            .map(String::from)
            .to_vec();
        let idx = PhraseIndex::new(&patterns).unwrap();
        let text = "nur sultan sultanat nursultan a a a abcdefghijklmnopqrstuvwxyz";
        let got = search(&idx, text);
        assert_eq!(got, brute_force(&patterns, text));
        // "a a" twice (overlapping), "a" three times, "nur sultan" once, nothing in "nursultan".
        assert_eq!(got.iter().filter(|h| h.pattern == 4).count(), 2);
        assert_eq!(got.iter().filter(|h| h.pattern == 5).count(), 3);
        assert_eq!(got.iter().filter(|h| h.pattern == 0).count(), 1);
        assert_eq!(got.iter().filter(|h| h.pattern == 3).count(), 1);
        assert_eq!(got.iter().filter(|h| h.pattern == 6).count(), 1);
    }

    #[test]
    fn packing_in_place_equals_packing_a_copy() {
        let text = b"a bb abcdefgh abcdefghi abcdefghijklmnop abcdefghijklmnopq x";
        let mut s = 0;
        for w in text.split(|&b| b == b' ') {
            let e = s + w.len();
            assert_eq!(pack_at(text, s, e), pack(w), "{:?}", std::str::from_utf8(w));
            s = e + 1;
        }
    }

    #[test]
    fn refuses_patterns_that_are_not_normalized() {
        for bad in ["", " a", "a ", "a  b", "Almaty", "é"] {
            assert!(PhraseIndex::new(&[bad]).is_err(), "{bad:?}");
        }
        assert!(matches!(
            PhraseIndex::new(&["a b", "a", "a b"]),
            Err(PhraseError::Duplicate(p)) if p == "a b"
        ));
    }

    #[test]
    fn same_as_brute_force() {
        // The real gazetteer's forms and the generator's articles: many multi-word forms,
        // shared first words, numbers, and every language the generator writes.
        let mut patterns: Vec<String> = crate::gazetteer::forms()
            .iter()
            .map(|f| normalize_str(f.text))
            .filter(|p| !p.is_empty())
            .collect();
        patterns.sort();
        patterns.dedup();
        patterns.extend(["de", "de la", "la", "kazakhstan", "le president"].map(String::from));
        patterns.sort();
        patterns.dedup();
        let idx = PhraseIndex::new(&patterns).unwrap();
        let opts = crate::generate::GenerateOptions {
            seed: 7,
            days: 1,
            rate: 20.0,
            ..Default::default()
        };
        let mut articles = Vec::new();
        crate::generate::generate(&opts, &mut |v| articles.push(v)).unwrap();
        let mut checked = 0;
        for v in articles.iter().take(30) {
            let text = normalize_str(&format!("{} {}", v["title"], v["body"]));
            let got = search(&idx, &text);
            assert_eq!(got, brute_force(&patterns, &text));
            checked += got.len();
        }
        assert!(checked > 100, "too few hits to compare: {checked}");
    }
}
